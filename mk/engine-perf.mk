# Engine CPU performance: the per-core SIMD peak probe, the fp32-vs-int8 MXFP4 kernel probe, and the tests of the
# bf16- and q8-activation kernels and the sampler's penalties (all also run by `make test-native`).

##@ Engine performance
.PHONY: bench-simd-peak
bench-simd-peak: native ## One core's multiply-add peak: fp32 FMA vs vdpbf16ps (AVX512-BF16) vs fp16 FMA (AVX512-FP16)
	$(NATIVE_BUILD)/bench_simd_peak

.PHONY: bench-q8-kernel
bench-q8-kernel: native ## One core: MXFP4 expert kernel with fp32 vs int8 (q8) activations, alternating, GMAC/s and ratio per token count
	$(NATIVE_BUILD)/bench_q8_kernel

.PHONY: test-engine-perf
test-engine-perf: native ## GoogleTest cases of the bf16- and q8-activation kernels and models, the transformers vectors and the sampling penalties
	ctest --test-dir $(NATIVE_BUILD) --output-on-failure -j 2 -R 'KernelsBf16Dot|Q8|Reference|RuntimeSamplerPenalties'
