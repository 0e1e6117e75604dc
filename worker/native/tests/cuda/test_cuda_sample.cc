// Sampling on the device (sample.cu) and the executor's forward_sample: greedy rows equal the CPU's first-maximum
// argmax, temperature rows follow softmax(logits / T) (frequencies over many seeds), the same seeds give the same
// tokens, host rows come back -1 with their logits equal to forward()'s, on the graph (decode) and the direct path.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>

#include "cuda/device_model.cuh"
#include "cuda/executor.cuh"
#include "cuda/kernels.cuh"
#include "cuda_test_util.h"
#include "model_test_util.h"
#include "runtime/sampler.h"
#include "runtime/serving_engine.h"

using namespace ms_cuda_test;

namespace {

uint64_t splitmix(uint64_t &state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

std::vector<int32_t> params_of(const std::vector<int> &modes, const std::vector<float> &temps, const std::vector<uint64_t> &seeds) {
    std::vector<int32_t> p(modes.size() * 4);
    for (size_t r = 0; r < modes.size(); ++r) ms::cuda::sample_row_params(modes[r], temps[r], seeds[r], &p[4 * r]);
    return p;
}

// The kernel's tokens, once with one block per row and once split over chunks (scratch): both must agree.
std::vector<int32_t> sample(const std::vector<float> &logits, int V, const std::vector<int32_t> &params) {
    const int R = int(params.size() / 4);
    DeviceVec<float> dl(logits);
    DeviceVec<int32_t> dp(params);
    DeviceVec<int32_t> ids(R), ids_split(R);
    DeviceVec<float> scratch(ms::cuda::sample_scratch_floats(R));
    ms::cuda::sample_rows(dl.get(), R, V, dp.get(), ids.get(), nullptr, nullptr);
    ms::cuda::sample_rows(dl.get(), R, V, dp.get(), ids_split.get(), scratch.get(), nullptr);
    const auto a = ids.host(), b = ids_split.host();
    EXPECT_EQ(a, b) << "one block per row vs rows split over chunks (" << R << " rows, V " << V << ")";
    return a;
}

int first_max(const float *row, int V) { return int(std::max_element(row, row + V) - row); }

TEST(CudaSample, GreedyRowsAreTheFirstMaximumAndHostRowsAreSkipped) {
    SKIP_WITHOUT_GPU();
    for (int V : {201088, 37, 1}) {
        const int R = 6;
        auto logits = random_floats(size_t(R) * V, 40 + V, -10.f, 10.f);
        if (V > 70000) {
            logits[size_t(1) * V + 5] = 50.f;  // a tie: the lower index wins
            logits[size_t(1) * V + 70000] = 50.f;
            logits[size_t(2) * V + V - 1] = 99.f;  // the last element
        } else if (V > 1) {
            logits[size_t(1) * V + 3] = 50.f;
            logits[size_t(1) * V + V - 2] = 50.f;
            logits[size_t(2) * V + V - 1] = 99.f;
        }
        std::fill(logits.begin() + size_t(4) * V, logits.begin() + size_t(5) * V, -3.f);  // all tied: index 0
        const std::vector<int> modes = {ms::cuda::kSampleGreedy, ms::cuda::kSampleGreedy, ms::cuda::kSampleGreedy, 0,
                                        ms::cuda::kSampleGreedy, ms::cuda::kSampleGreedy};
        const auto got = sample(logits, V, params_of(modes, std::vector<float>(R, 0.f), std::vector<uint64_t>(R, 9)));
        for (int r = 0; r < R; ++r) {
            if (modes[r] == 0)
                EXPECT_EQ(got[r], -1) << "host row " << r << " V " << V;
            else {
                // The CPU sampler's greedy pick (what the host path gives) and the first maximum.
                ms::Sampler cpu;
                ms::Rng rng(1);
                ms::Sample smp;
                cpu.sample(&logits[size_t(r) * V], V, ms::SamplingParams(), rng, smp);
                EXPECT_EQ(got[r], smp.token) << "row " << r << " V " << V;
                EXPECT_EQ(got[r], first_max(&logits[size_t(r) * V], V)) << "row " << r << " V " << V;
            }
        }
    }
}

// Counts of N draws (one row per draw, seeds from one splitmix stream) over a small vocabulary.
std::vector<long> draw_counts(const std::vector<float> &l, float T, int N, uint64_t seed0) {
    const int V = int(l.size());
    std::vector<float> logits(size_t(N) * V);
    for (int r = 0; r < N; ++r) std::copy(l.begin(), l.end(), logits.begin() + size_t(r) * V);
    std::vector<uint64_t> seeds(N);
    uint64_t st = seed0;
    for (auto &s : seeds) s = splitmix(st);
    const auto ids = sample(logits, V, params_of(std::vector<int>(N, ms::cuda::kSampleTemperature), std::vector<float>(N, T), seeds));
    std::vector<long> c(V, 0);
    for (int id : ids) {
        EXPECT_GE(id, 0);
        EXPECT_LT(id, V);
        if (id >= 0 && id < V) ++c[id];
    }
    return c;
}

std::vector<double> softmax(const std::vector<float> &l, double T) {
    double m = -INFINITY, s = 0;
    for (float x : l) m = std::max(m, double(x));
    std::vector<double> p(l.size());
    for (size_t i = 0; i < l.size(); ++i) s += p[i] = std::exp((double(l[i]) - m) / T);
    for (double &x : p) x /= s;
    return p;
}

// Every bin with N p >= 1 within 6 standard deviations of N p (a false alarm per bin: ~1e-8 or less); a bin with
// N p < 1 holds at most 3 draws (Poisson tail <= (N p)^4 / 24).
bool counts_match(const std::vector<long> &c, const std::vector<double> &p, int N, double *worst_z) {
    double worst = 0;
    for (size_t i = 0; i < c.size(); ++i) {
        if (N * p[i] < 1) {
            if (c[i] > 3) worst = std::max(worst, 1e9);
            continue;
        }
        const double sd = std::sqrt(N * p[i] * (1 - p[i]));
        worst = std::max(worst, std::fabs(double(c[i]) - N * p[i]) / sd);
    }
    *worst_z = worst;
    return worst <= 6.0;
}

TEST(CudaSample, TemperatureDrawsFollowTheSoftmax) {
    SKIP_WITHOUT_GPU();
    const std::vector<float> l = {2.0f, 1.5f, 1.4f, 0.3f, -0.5f, 0.0f, 2.2f, -1.0f, 0.9f, -30.f, 1.0f, 0.5f, -2.0f};
    const int N = 200000;
    // T < 1 and T >= 1 take different (equivalent) arithmetic in the kernel: check both.
    for (float T : {0.7f, 1.0f, 1.6f}) {
        const auto c = draw_counts(l, T, N, 77 + uint64_t(T * 10));
        double z = 0;
        EXPECT_TRUE(counts_match(c, softmax(l, T), N, &z)) << "T " << T << ": worst |z| " << z;
        std::printf("[ cuda sample ] T %.1f: worst |z| vs softmax(l / T) %.2f\n", T, z);
        // The same check rejects a sampler at the wrong temperature (power of the test).
        for (double wrong : {T * 0.8, T * 1.25}) {
            double zw = 0;
            EXPECT_FALSE(counts_match(c, softmax(l, wrong), N, &zw)) << "T " << T << " vs " << wrong << ": |z| " << zw;
        }
    }
}

TEST(CudaSample, SameSeedsSameTokensAndTheLimitsOfTemperature) {
    SKIP_WITHOUT_GPU();
    const int V = 201088, R = 8;
    auto logits = random_floats(size_t(R) * V, 55, -2.f, 2.f);
    std::vector<uint64_t> seeds(R);
    uint64_t st = 1234;
    for (auto &s : seeds) s = splitmix(st);
    std::vector<int> modes(R, ms::cuda::kSampleTemperature);
    std::vector<float> temps = {1.f, 1.f, 0.5f, 2.f, 1.f, 1.f, 1e-9f, 1e-30f};  // T·G below half an ulp of the top logits: argmax
    logits[size_t(4) * V + 12345] = 40.f;  // dominant at T = 1: e^-38 for the rest
    const auto a = sample(logits, V, params_of(modes, temps, seeds));
    const auto b = sample(logits, V, params_of(modes, temps, seeds));
    EXPECT_EQ(a, b);
    EXPECT_EQ(a[4], 12345);
    EXPECT_EQ(a[6], first_max(&logits[size_t(6) * V], V));  // near-zero temperature: the argmax
    EXPECT_EQ(a[7], first_max(&logits[size_t(7) * V], V));
    // Rows 0 and 1: a flat-ish distribution over 201k tokens, other seeds give other tokens.
    std::vector<uint64_t> other = seeds;
    for (auto &s : other) s ^= 0x5555;
    const auto c = sample(logits, V, params_of(modes, temps, other));
    EXPECT_NE(a[0], c[0]);
    EXPECT_NE(a[1], c[1]);
    for (int r = 0; r < R; ++r) EXPECT_TRUE(a[r] >= 0 && a[r] < V);
}

// forward_sample over a tiny synthetic model, against forward() on the same step: prefill (direct path) then decode
// steps (CUDA graphs when enabled), with greedy, temperature and host rows mixed.
class CudaForwardSample : public ::testing::TestWithParam<bool> {};

TEST_P(CudaForwardSample, MatchesForwardOnEveryRowKind) {
    SKIP_WITHOUT_GPU();
    ms_test::TempDir tmp;
    const std::string dir = tmp.sub("ckpt");
    ms::write_synthetic_checkpoint(ms::synthetic_spec_from_args({"--preset", "tiny", "--seed", "9"}), dir);
    auto host = ms_test::load_model(dir);
    auto dm = std::shared_ptr<ms::cuda::DeviceModel>(ms::cuda::DeviceModel::upload(*host));
    ms::cuda::ExecutorOptions opt;
    opt.cuda_graphs = GetParam();
    opt.device_sampling = false;  // the switch only gates the engine (can_sample_on_device); forward_sample still works
    ms::cuda::CudaExecutor ex(dm, opt);
    EXPECT_FALSE(ex.can_sample_on_device());
    EXPECT_TRUE(ms::cuda::CudaExecutor(dm, ms::cuda::ExecutorOptions()).can_sample_on_device());
    const int V = ex.vocab_size(), S = 5, bs = 16, n_blocks = 8;
    DeviceKv kv(ex.kv_spec(), n_blocks * S, bs);
    std::vector<std::vector<int32_t>> tables(S), tokens(S);
    std::mt19937 rng(11);
    for (int i = 0; i < S; ++i) {
        for (int b = 0; b < n_blocks; ++b) tables[i].push_back(i * n_blocks + b);
        for (int t = 0; t < 9 + 3 * i; ++t) tokens[i].push_back(int32_t(rng() % uint32_t(V)));
    }
    std::vector<int> pos(S, 0);
    auto make = [&](int n_tokens_each) {
        std::vector<ms::ForwardSeq> f(S);
        for (int i = 0; i < S; ++i) {
            const int n = n_tokens_each > 0 ? n_tokens_each : int(tokens[i].size()) - pos[i];
            f[i].tokens = tokens[i].data() + pos[i];
            f[i].n_tokens = n;
            f[i].start_pos = pos[i];
            f[i].want_logits = true;
            for (int g = 0; g < ms::kNumKvGroups; ++g) f[i].block_table[g] = tables[i].data(), f[i].n_blocks[g] = n_blocks;
        }
        return f;
    };
    uint64_t seed_state = 99;
    for (int step = 0; step < 6; ++step) {
        auto f = make(step == 0 ? 0 : 1);  // step 0: each sequence's prompt; then one token each (decode)
        std::vector<float> ref(size_t(S) * V);
        ex.forward(f.data(), S, kv.kv, ref.data());
        // Row kinds rotate over the steps, so every row position sees every kind (and the graph keeps its shape).
        std::vector<ms::DeviceSampling> rows(S);
        int n_host = 0;
        for (int i = 0; i < S; ++i) {
            const int kind = (i + step) % 3;
            rows[i].mode = kind == 0 ? ms::DeviceSampling::kGreedy : kind == 1 ? ms::DeviceSampling::kTemperature : ms::DeviceSampling::kHost;
            rows[i].temperature = kind == 1 ? 0.9f : 0.f;
            rows[i].seed = splitmix(seed_state);
            n_host += kind == 2;
        }
        std::vector<int32_t> got(S, -7), again(S, -7);
        std::vector<float> hl(size_t(S) * V, NAN), hl2(size_t(S) * V, NAN);
        ex.forward_sample(f.data(), S, kv.kv, rows.data(), got.data(), hl.data());  // rewrites the same K/V
        ex.forward_sample(f.data(), S, kv.kv, rows.data(), again.data(), hl2.data());
        EXPECT_EQ(got, again) << "step " << step;
        int k = 0;
        for (int i = 0; i < S; ++i) {
            const float *want = &ref[size_t(i) * V];
            if (rows[i].mode == ms::DeviceSampling::kHost) {
                EXPECT_EQ(got[i], -1);
                float worst = 0;
                for (int v = 0; v < V; ++v) worst = std::max(worst, std::fabs(hl[size_t(k) * V + v] - want[v]));
                EXPECT_EQ(worst, 0.f) << "host row " << i << " (compacted " << k << ") step " << step;
                ++k;
            } else if (rows[i].mode == ms::DeviceSampling::kGreedy) {
                EXPECT_EQ(got[i], first_max(want, V)) << "greedy row " << i << " step " << step;
            } else {
                EXPECT_TRUE(got[i] >= 0 && got[i] < V) << "temperature row " << i << " step " << step;
            }
        }
        EXPECT_EQ(k, n_host);
        for (int i = 0; i < S; ++i) {
            pos[i] += f[i].n_tokens;
            tokens[i].push_back(got[i] >= 0 ? got[i] : first_max(&ref[size_t(i) * V], V));
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Graphs, CudaForwardSample, ::testing::Values(true, false));


// The serving engine over the CUDA executor, device sampling on and off (the MODELSERVE_CUDA_DEVICE_SAMPLING switch),
// one request per engine so both runs see the same batch shapes (the GPU's logits may depend on them).
struct EngineEvents {
    std::mutex mu;
    std::condition_variable cv;
    std::map<uint64_t, std::vector<ms_event>> events;
    std::map<uint64_t, int> finish;
    static void on(void *user, const ms_event *ev, int n) {
        auto *self = static_cast<EngineEvents *>(user);
        std::lock_guard<std::mutex> lk(self->mu);
        for (int i = 0; i < n; ++i) {
            if (ev[i].token >= 0) self->events[ev[i].id].push_back(ev[i]);
            if (ev[i].finish_reason != MS_FINISH_NONE) self->finish[ev[i].id] = ev[i].finish_reason;
        }
        self->cv.notify_all();
    }
};

std::vector<std::vector<ms_event>> serve(const std::shared_ptr<ms::cuda::DeviceModel> &dm, bool device_sampling,
                                         const std::vector<ms_request> &reqs) {
    ms::cuda::ExecutorOptions opt;
    opt.device_sampling = device_sampling;
    ms::cuda::CudaExecutor ex(dm, opt);
    EXPECT_EQ(ex.can_sample_on_device(), device_sampling);
    ms_engine_params ep;
    ms_engine_params_default(&ep);
    ep.max_context = 512;
    ep.kv_memory_bytes = 64ull << 20;
    ep.kv_dtype_bf16 = 0;
    EngineEvents ev;
    std::vector<uint64_t> ids;
    {
        ms::Engine engine(ex, ep, &EngineEvents::on, &ev);
        for (const ms_request &r : reqs) ids.push_back(engine.submit(r));
        std::unique_lock<std::mutex> lk(ev.mu);
        EXPECT_TRUE(ev.cv.wait_for(lk, std::chrono::seconds(120), [&] { return ev.finish.size() >= reqs.size(); }));
    }
    std::vector<std::vector<ms_event>> out;
    for (uint64_t id : ids) {
        EXPECT_EQ(ev.finish[id], MS_FINISH_LENGTH) << "request " << id;
        out.push_back(ev.events[id]);
    }
    return out;
}

std::vector<int32_t> tokens_of(const std::vector<ms_event> &e) {
    std::vector<int32_t> t;
    for (const ms_event &x : e) t.push_back(x.token);
    return t;
}

TEST(CudaEngineSampling, DeviceAndHostPathsAgreeWhereTheyMust) {
    SKIP_WITHOUT_GPU();
    ms_test::TempDir tmp;
    const std::string dir = tmp.sub("ckpt");
    ms::write_synthetic_checkpoint(ms::synthetic_spec_from_args({"--preset", "tiny", "--seed", "13"}), dir);
    auto host = ms_test::load_model(dir);
    auto dm = std::shared_ptr<ms::cuda::DeviceModel>(ms::cuda::DeviceModel::upload(*host));
    const int V = dm->config().vocab_size, n = 16;
    std::vector<int32_t> prompt(23);
    for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 7919 + 11) % uint32_t(V));
    auto req = [&](float temperature, float top_p, int logprobs, uint64_t seed) {
        ms_request r{};
        r.prompt = prompt.data();
        r.n_prompt = int(prompt.size());
        r.max_tokens = n;
        r.temperature = temperature;
        r.top_p = top_p;
        r.logprobs = logprobs;
        r.has_seed = 1;
        r.seed = seed;
        return r;
    };
    // Greedy (a device row when on): the same tokens either way.
    const auto g_on = serve(dm, true, {req(0.f, 1.f, 0, 1)}), g_off = serve(dm, false, {req(0.f, 1.f, 0, 1)});
    ASSERT_EQ(g_on[0].size(), size_t(n));
    EXPECT_EQ(tokens_of(g_on[0]), tokens_of(g_off[0]));
    for (const ms_event &e : g_on[0]) EXPECT_TRUE(e.logprob == 0.f && e.n_top == 0);
    // Top-p with logprobs (a host row): the same tokens and logprobs either way.
    const auto p_on = serve(dm, true, {req(0.9f, 0.8f, 3, 7)}), p_off = serve(dm, false, {req(0.9f, 0.8f, 3, 7)});
    ASSERT_EQ(p_on[0].size(), p_off[0].size());
    for (size_t t = 0; t < p_on[0].size(); ++t) {
        EXPECT_EQ(p_on[0][t].token, p_off[0][t].token) << "token " << t;
        EXPECT_EQ(p_on[0][t].logprob, p_off[0][t].logprob) << "token " << t;
        EXPECT_EQ(p_on[0][t].n_top, 3);
    }
    // Temperature (a device row): the same seed gives the same tokens; another seed other tokens (T = 1000: close to
    // uniform over the vocabulary, whatever the synthetic model's logits look like).
    const auto t1 = serve(dm, true, {req(1000.f, 1.f, 0, 42)}), t2 = serve(dm, true, {req(1000.f, 1.f, 0, 42)});
    const auto t3 = serve(dm, true, {req(1000.f, 1.f, 0, 43)});
    ASSERT_EQ(t1[0].size(), size_t(n));
    EXPECT_EQ(tokens_of(t1[0]), tokens_of(t2[0]));
    EXPECT_NE(tokens_of(t1[0]), tokens_of(t3[0]));
    for (const ms_event &e : t1[0]) EXPECT_TRUE(e.token >= 0 && e.token < V && e.logprob == 0.f && e.n_top == 0);
    // A mixed batch: every request gets its tokens and the right event fields.
    ms_request pen = req(0.8f, 1.f, 0, 5);
    pen.repetition_penalty = 1.2f;
    const auto mixed = serve(dm, true, {req(0.f, 1.f, 0, 1), req(1.0f, 1.f, 0, 2), req(0.9f, 0.8f, 2, 3), pen,
                                        req(0.7f, 1.f, 0, 4), req(0.f, 1.f, 1, 6)});
    const int want_top[] = {0, 0, 2, 0, 0, 1};
    for (size_t i = 0; i < mixed.size(); ++i) {
        ASSERT_EQ(mixed[i].size(), size_t(n)) << "request " << i;
        for (const ms_event &e : mixed[i]) {
            EXPECT_TRUE(e.token >= 0 && e.token < V);
            EXPECT_EQ(e.n_top, want_top[i]) << "request " << i;
            if (want_top[i] == 0) EXPECT_EQ(e.logprob, 0.f);
        }
    }
}

}  // namespace
