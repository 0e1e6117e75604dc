// The synthetic model source (engine.h: ms_model_params.path "synthetic:NAME"): its errors on any build. Loading one
// needs a GPU; that path is tested in tests/cuda/test_cuda_model.cc.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "engine.h"
#include "model/model.h"
#include "runtime/cuda_backend.h"

namespace {

struct LoadResult {
    ms_status status;
    std::string message;
};

LoadResult load(const char *path, const char *backend) {
    ms_model_params p;
    ms_model_params_default(&p);
    p.path = path;
    p.backend = backend;
    ms_model *model = nullptr;
    LoadResult r{ms_model_load(&p, &model), ms_last_error()};
    EXPECT_EQ(model, nullptr);
    ms_model_free(model);
    return r;
}

bool contains(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

TEST(SyntheticModel, UnknownNameIsAnInvalidArgumentListingTheKnownOnes) {
    for (const char *backend : {"cpu", "cuda", "auto"}) {
        const LoadResult r = load("synthetic:gpt-oss-7b", backend);
        EXPECT_EQ(r.status, MS_ERR_INVALID_ARGUMENT) << backend << ": " << r.message;
        EXPECT_TRUE(contains(r.message, "unknown synthetic model \"synthetic:gpt-oss-7b\"")) << r.message;
        EXPECT_TRUE(contains(r.message, "synthetic:gpt-oss-20b")) << r.message;
        EXPECT_TRUE(contains(r.message, "synthetic:gpt-oss-120b")) << r.message;
    }
    const LoadResult empty = load("synthetic:", "cuda");
    EXPECT_EQ(empty.status, MS_ERR_INVALID_ARGUMENT) << empty.message;
}

TEST(SyntheticModel, CpuBackendIsUnsupportedNamingCuda) {
    for (const char *name : {"synthetic:gpt-oss-20b", "synthetic:gpt-oss-120b"}) {
        const LoadResult r = load(name, "cpu");
        EXPECT_EQ(r.status, MS_ERR_UNSUPPORTED) << r.message;
        EXPECT_TRUE(contains(r.message, name)) << r.message;
        EXPECT_TRUE(contains(r.message, "generated on the GPU")) << r.message;
        EXPECT_TRUE(contains(r.message, "backend \"cuda\"")) << r.message;
    }
}

TEST(SyntheticModel, AutoBackendFollowsModelserveDevice) {
    const char *saved = std::getenv("MODELSERVE_DEVICE");
    const std::string keep = saved ? saved : "";
    setenv("MODELSERVE_DEVICE", "cpu", 1);
    const LoadResult r = load("synthetic:gpt-oss-20b", "auto");
    EXPECT_EQ(r.status, MS_ERR_UNSUPPORTED) << r.message;
    EXPECT_TRUE(contains(r.message, "generated on the GPU")) << r.message;
    if (saved) setenv("MODELSERVE_DEVICE", keep.c_str(), 1);
    else unsetenv("MODELSERVE_DEVICE");
}

TEST(SyntheticModel, CudaBackendWithoutCudaInTheBuildIsUnsupported) {
    if (ms::cuda_backend_built()) GTEST_SKIP() << "CUDA build: loading runs on the GPU (tests/cuda/test_cuda_model.cc)";
    const LoadResult r = load("synthetic:gpt-oss-20b", "cuda");
    EXPECT_EQ(r.status, MS_ERR_UNSUPPORTED) << r.message;
    EXPECT_TRUE(contains(r.message, "built without CUDA")) << r.message;
    EXPECT_TRUE(contains(r.message, "-DENGINE_CUDA=ON")) << r.message;
}

TEST(SyntheticModel, PresetConfigsHaveThePublishedShapes) {
    const ms::ModelConfig small = ms::synthetic_model_config("gpt-oss-20b");
    EXPECT_EQ(small.num_hidden_layers, 24);
    EXPECT_EQ(small.num_local_experts, 32);
    const ms::ModelConfig big = ms::synthetic_model_config("gpt-oss-120b");
    EXPECT_EQ(big.num_hidden_layers, 36);
    EXPECT_EQ(big.num_local_experts, 128);
    for (const ms::ModelConfig *c : {&small, &big}) {
        EXPECT_EQ(c->hidden_size, 2880);
        EXPECT_EQ(c->vocab_size, 201088);
        EXPECT_EQ(c->num_experts_per_tok, 4);
        EXPECT_EQ(c->sliding_window, 128);
        EXPECT_EQ(c->quant_method, "mxfp4");
        ASSERT_EQ(c->eos_token_ids.size(), 1u);
        EXPECT_EQ(c->eos_token_ids[0], 200002);
    }
}

}  // namespace
