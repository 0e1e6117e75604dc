# The worker: OpenAI-compatible HTTP over the native engine (worker/src), its tests and the serving benchmark.
WORKER_CHECKPOINT ?= $(MODELSERVE_CACHE)/checkpoints/tiny-harmony-seed1
WORKER_PORT ?= 8000
# worker/src/gc.ts's WORKER_NODE_FLAGS (worker/test/gc.test.ts keeps them equal): they size V8's heap at start-up.
WORKER_NODE_FLAGS := --min-semi-space-size=16 --max-semi-space-size=16 --no-memory-reducer

##@ Worker
.PHONY: worker-run
worker-run: native ## Serve a generated tiny-harmony checkpoint on WORKER_PORT (OpenAI API at /v1)
	test -f $(WORKER_CHECKPOINT)/config.json || $(NATIVE_BUILD)/make_checkpoint --preset tiny-harmony --seed 1 --out $(WORKER_CHECKPOINT)
	node $(WORKER_NODE_FLAGS) --import tsx worker/src/main.ts --model $(WORKER_CHECKPOINT) --served-model-name tiny-harmony --port $(WORKER_PORT)

.PHONY: test-worker
test-worker: ## Worker unit tests (harmony rendering vs reference vectors, parser, HTTP layer)
	$(NODE_JEST) worker/test --selectProjects unit

.PHONY: test-worker-integration
test-worker-integration: native ## Worker integration tests: real worker processes over the native engine
	$(NODE_JEST) worker/test --selectProjects integration --runInBand

.PHONY: harmony-vectors
harmony-vectors: ## Regenerate harmony test vectors with the reference renderer (pip openai-harmony, offline vocab)
	npx tsx worker/test/harmony/make-o200k-vocab.ts .tmp/tiktoken
	python3 -m pip install --quiet openai-harmony==0.0.8
	TIKTOKEN_ENCODINGS_BASE=$(CURDIR)/.tmp/tiktoken python3 worker/test/harmony/make-vectors.py > worker/test/harmony/vectors.json

.PHONY: bench-serve
bench-serve: native ## HTTP path vs engine-direct on a generated checkpoint: decode tok/s ratio and added TTFT (c=1,32)
	npx tsx hack/bench/compare.ts --concurrency 1,32
