# Engine CPU performance: the per-core SIMD peak probe and the tests of the bf16-activation kernels and the sampler's
# penalties (all also run by `make test-native`).

##@ Engine performance
.PHONY: bench-simd-peak
bench-simd-peak: native ## One core's multiply-add peak: fp32 FMA vs vdpbf16ps (AVX512-BF16) vs fp16 FMA (AVX512-FP16)
	$(NATIVE_BUILD)/bench_simd_peak

.PHONY: test-engine-perf
test-engine-perf: native ## GoogleTest cases of the bf16-activation kernels, the transformers vectors (fp32 and bf16) and the sampling penalties
	ctest --test-dir $(NATIVE_BUILD) --output-on-failure -j 2 -R 'KernelsBf16Dot|Reference|RuntimeSamplerPenalties'
