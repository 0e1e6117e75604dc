# Engine runtime (paged KV cache, scheduler, sampler, step thread, C API, N-API addon, TS binding): extra targets.
NATIVE_ASAN_BUILD := worker/native/build-sanitize

##@ Engine runtime
.PHONY: test-native-asan
test-native-asan: ## GoogleTest suite of the engine under AddressSanitizer + UBSan (separate build dir, addon off)
	cmake -S worker/native -B $(NATIVE_ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGINE_SANITIZE=ON -DENGINE_ADDON=OFF >/dev/null
	cmake --build $(NATIVE_ASAN_BUILD) -j 2 --target engine_tests
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir $(NATIVE_ASAN_BUILD) --output-on-failure -j 2

.PHONY: test-engine-runtime
test-engine-runtime: native ## Only the runtime's GoogleTest cases (block manager, sampler, scheduler, engine, end to end)
	ctest --test-dir $(NATIVE_BUILD) --output-on-failure -j 2 -R '^Runtime'

.PHONY: test-engine-binding
test-engine-binding: native ## Jest test of the TypeScript engine binding over the addon on a generated tiny checkpoint
	$(NODE_JEST) --selectProjects integration --runTestsByPath worker/test/engine-binding.int.test.ts

.PHONY: bench-engine
bench-engine: native ## Engine benchmark: read bandwidth, decode tok/s at batch 1/8/32 and prefill vs their floors (table in .tmp/bench/engine.md)
	mkdir -p $(MODELSERVE_CACHE)/checkpoints/bench-engine
	mkdir -p .tmp/bench
	# The table goes to .tmp: docs/benchmarks/engine.md keeps hand-written history around the tables (copy them in).
	$(NATIVE_BUILD)/bench_engine --keep $(MODELSERVE_CACHE)/checkpoints/bench-engine --out .tmp/bench/engine.md
