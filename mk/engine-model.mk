# The native engine's model half: synthetic checkpoints, the forward-pass benchmark and the checkpoint fuzzer.
ENGINE_DIR := worker/native
ENGINE_FUZZ_BUILD := $(ENGINE_DIR)/build-fuzz
FUZZ_SECONDS ?= 60
PRESET ?= tiny
SEED ?= 1
CHECKPOINT_DIR ?= $(MODELSERVE_CACHE)/checkpoints/$(PRESET)-seed$(SEED)

##@ Native engine (model)
.PHONY: engine-checkpoint
engine-checkpoint: native ## Write a synthetic gpt-oss checkpoint (PRESET=tiny|tiny-harmony|mid SEED=1 CHECKPOINT_DIR=...)
	mkdir -p $(dir $(CHECKPOINT_DIR))
	$(NATIVE_BUILD)/make_checkpoint --preset $(PRESET) --seed $(SEED) --out $(CHECKPOINT_DIR)

.PHONY: bench-engine-model
bench-engine-model: native ## Time the CPU forward pass (decode batch 1..32, prefill) on the mid preset vs the memory-bandwidth floor
	mkdir -p $(MODELSERVE_CACHE)/checkpoints
	$(NATIVE_BUILD)/bench_forward --preset mid --out $(MODELSERVE_CACHE)/checkpoints/bench-mid

.PHONY: fuzz-engine
fuzz-engine: ## Build the engine's libFuzzer targets with clang (ASan) and fuzz the safetensors header parser for FUZZ_SECONDS
	CC=clang CXX=clang++ cmake -S $(ENGINE_DIR) -B $(ENGINE_FUZZ_BUILD) -G Ninja -DENGINE_FUZZ=ON -DENGINE_TESTS=OFF \
		-DENGINE_ADDON=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(ENGINE_FUZZ_BUILD) -j 2 --target fuzz_safetensors_header
	mkdir -p $(ENGINE_FUZZ_BUILD)/corpus && cp -n $(ENGINE_DIR)/fuzz/corpus/safetensors_header/* $(ENGINE_FUZZ_BUILD)/corpus/
	$(ENGINE_FUZZ_BUILD)/fuzz_safetensors_header -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
		$(ENGINE_FUZZ_BUILD)/corpus
