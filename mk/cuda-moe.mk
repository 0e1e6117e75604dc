# CUDA mixture-of-experts kernels (worker/native/src/cuda/moe): stand-alone nvcc build, tests and micro-benchmark.

##@ CUDA MoE kernels
.PHONY: cuda-moe-compile
cuda-moe-compile: ## Compile the CUDA MoE kernels, their tests and bench_cuda_moe with nvcc directly (no GPU needed)
	MOE_CHECK_COMPILE_ONLY=1 JOBS=2 bash hack/gpu/moe-check.sh

.PHONY: gpu-moe-check
gpu-moe-check: ## On the GPU machine: MoE kernel tests vs the CPU engine, then bench_cuda_moe (GB/s vs 3.0 TB/s, prefill)
	@echo "GPU machine only. With the run tool, carrying worker/native/build-moe/googletest (cp -r /usr/src/googletest):"
	@echo "  MOE_BUILD_DIR=build-moe-gpu GTEST_SRC=build-moe/googletest bash hack/gpu/moe-check.sh"
