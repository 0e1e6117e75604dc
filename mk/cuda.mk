# CUDA backend of the native engine: compile everywhere (CI has no GPU), check and benchmark on the GPU machine.
CUDA_BUILD_DIR := worker/native/build-cuda
CUDA_TARGETS := engine_cuda_tests bench_cuda bench_cuda_load bench_cuda_serve

##@ CUDA backend
.PHONY: cuda-compile
cuda-compile: ## Compile the CUDA backend, its tests and benchmark with nvcc (from PyPI wheels if absent); no GPU needed
	@nvcc_path=$$(hack/install-nvcc.sh) && \
	cmake -S worker/native -B $(CUDA_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON -DENGINE_ADDON=OFF \
		-DCMAKE_CUDA_COMPILER="$$nvcc_path" >/dev/null && \
	cmake --build $(CUDA_BUILD_DIR) -j 2 --target $(CUDA_TARGETS)

.PHONY: gpu-check
gpu-check: ## On the GPU machine (run tool): build with cmake+ninja, CUDA kernel tests, whole-model check vs transformers vectors
	@echo "GPU machine only. From this checkout: hack/gpu/prepare.sh, then with the run tool (carry worker/native/build-gpu-deps):"
	@echo "  hack/gpu/check-and-bench.sh --no-bench"

.PHONY: gpu-bench
gpu-bench: ## On the GPU machine: everything gpu-check does plus bench_cuda (20b and 120b shapes) and a results table
	@echo "GPU machine only. From this checkout: hack/gpu/prepare.sh, then with the run tool (carry worker/native/build-gpu-deps):"
	@echo "  hack/gpu/check-and-bench.sh"

.PHONY: gpu-load-bench
gpu-load-bench: ## On the GPU machine: the weight loader's tests and bench_cuda_load (page cache, disk, start to first token)
	@echo "GPU machine only. From this checkout: hack/gpu/prepare.sh, then with the run tool (carry worker/native/build-gpu-deps):"
	@echo "  hack/gpu/load-bench.sh"
