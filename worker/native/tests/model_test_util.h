// Helpers shared by the model/loader tests: temporary directories, synthetic checkpoints, and a naive reference
// forward pass written independently of the optimised kernels (plain loops, dequantised weights, contiguous KV,
// direct softmax with the sink column, YaRN in double precision).
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "cpu/bf16.h"
#include "model/model.h"
#include "model/synthetic_checkpoint.h"

namespace ms_test {

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/ms_model_test_XXXXXX";
        char *p = mkdtemp(tmpl);
        path = p ? p : "/tmp";
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string sub(const std::string &name) const { return path + "/" + name; }
};

// fp32 activations unless asked: the model tests compare against fp32 references at fp32 tolerances; the bf16 and
// fp16 activation paths have their own tests with the tolerance their rounding needs (test_model_reference.cc).
inline std::unique_ptr<ms::Model> load_model(const std::string &dir, int threads = 2, bool bf16_activations = false) {
    ms_model_params p;
    ms_model_params_default(&p);
    p.path = dir.c_str();
    p.n_threads = threads;
    auto m = ms::Model::load(p);
    m->set_bf16_activations(bf16_activations);
    m->set_q8_activations(false);   // whatever MS_ACTIVATIONS says; the q8 tests turn it on themselves
    m->set_f16_activations(false);  // the default where the CPU has AVX512-FP16; the fp16 tests turn it on themselves
    return m;
}

// Naive reference: all-position logits of `tokens` from position 0.
class NaiveGptOss {
  public:
    explicit NaiveGptOss(const ms::Model &m, bool bf16_kv = false) : m_(m), c_(m.config()), bf16_kv_(bf16_kv) {}

    std::vector<float> run(const std::vector<int32_t> &tokens) {
        const int H = c_.hidden_size, hd = c_.head_dim, nh = c_.num_attention_heads, nkv = c_.num_key_value_heads;
        const int T = int(tokens.size()), V = c_.vocab_size, I = c_.intermediate_size, E = c_.num_local_experts;
        std::vector<std::vector<float>> x(T, std::vector<float>(H));
        for (int t = 0; t < T; ++t)
            for (int i = 0; i < H; ++i) x[t][i] = ms::bf16_to_f32(m_.embed()[int64_t(tokens[t]) * H + i]);
        std::vector<double> inv_freq = yarn_inv_freq();
        const double conc = c_.rope_type == "yarn" ? 0.1 * std::log(c_.rope_factor) + 1.0 : 1.0;
        for (int l = 0; l < c_.num_hidden_layers; ++l) {
            const ms::LayerWeights &L = m_.layer(l);
            std::vector<std::vector<float>> q(T), k(T), v(T);
            for (int t = 0; t < T; ++t) {
                std::vector<float> h = norm(x[t], L.attn_norm);
                q[t] = dense(L.q, h);
                k[t] = dense(L.k, h);
                v[t] = dense(L.v, h);
                rope(q[t], nh, t, inv_freq, conc);
                rope(k[t], nkv, t, inv_freq, conc);
                if (bf16_kv_) {  // what a bf16 KV cache stores
                    for (float &e : k[t]) e = ms::bf16_to_f32(ms::f32_to_bf16(e));
                    for (float &e : v[t]) e = ms::bf16_to_f32(ms::f32_to_bf16(e));
                }
            }
            const int G = nh / nkv;
            const bool sliding = c_.is_sliding(l);
            for (int t = 0; t < T; ++t) {
                std::vector<float> attn(size_t(nh) * hd, 0.0f);
                const int first = sliding ? std::max(0, t - c_.sliding_window + 1) : 0;
                for (int hh = 0; hh < nh; ++hh) {
                    const int kh = hh / G;
                    std::vector<double> s;
                    for (int p = first; p <= t; ++p) {
                        double d = 0;
                        for (int i = 0; i < hd; ++i) d += double(q[t][hh * hd + i]) * k[p][kh * hd + i];
                        s.push_back(d / std::sqrt(double(hd)));
                    }
                    double mx = L.sinks[hh];
                    for (double e : s) mx = std::max(mx, e);
                    double den = std::exp(L.sinks[hh] - mx);
                    for (double &e : s) {
                        e = std::exp(e - mx);
                        den += e;
                    }
                    for (int p = first; p <= t; ++p)
                        for (int i = 0; i < hd; ++i) attn[hh * hd + i] += float(s[p - first] / den * v[p][kh * hd + i]);
                }
                std::vector<float> o = dense(L.o, attn);
                for (int i = 0; i < H; ++i) x[t][i] += o[i];
            }
            for (int t = 0; t < T; ++t) {
                std::vector<float> h = norm(x[t], L.mlp_norm);
                std::vector<float> r = dense(L.router, h);
                std::vector<int> order(E);
                for (int e = 0; e < E; ++e) order[e] = e;
                std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return r[a] > r[b]; });
                const int K = c_.num_experts_per_tok;
                double mx = r[order[0]], den = 0;
                for (int j = 0; j < K; ++j) den += std::exp(double(r[order[j]]) - mx);
                std::vector<float> out(H, 0.0f);
                for (int j = 0; j < K; ++j) {
                    const int e = order[j];
                    const double wgt = std::exp(double(r[order[j]]) - mx) / den;
                    std::vector<float> gu = expert(L.gate_up, e, h);
                    std::vector<float> a(I);
                    for (int i = 0; i < I; ++i) {
                        double g = std::min<double>(gu[2 * i], c_.swiglu_limit);
                        double u = std::max<double>(std::min<double>(gu[2 * i + 1], c_.swiglu_limit), -c_.swiglu_limit);
                        a[i] = float(g / (1 + std::exp(-1.702 * g)) * (u + 1));
                    }
                    std::vector<float> d = expert(L.down, e, a);
                    for (int i = 0; i < H; ++i) out[i] += float(wgt * d[i]);
                }
                for (int i = 0; i < H; ++i) x[t][i] += out[i];
            }
        }
        std::vector<float> logits(size_t(T) * V);
        for (int t = 0; t < T; ++t) {
            std::vector<float> h = norm(x[t], std::vector<float>(m_.final_norm(), m_.final_norm() + H));
            std::vector<float> lg = dense(m_.lm_head(), h);
            std::copy(lg.begin(), lg.end(), logits.begin() + int64_t(t) * V);
        }
        return logits;
    }

  private:
    const ms::Model &m_;
    const ms::ModelConfig &c_;
    bool bf16_kv_;

    std::vector<float> norm(const std::vector<float> &x, const std::vector<float> &w) const {
        double ss = 0;
        for (float v : x) ss += double(v) * v;
        double inv = 1.0 / std::sqrt(ss / x.size() + c_.rms_norm_eps);
        std::vector<float> out(x.size());
        for (size_t i = 0; i < x.size(); ++i) out[i] = float(x[i] * inv * w[i]);
        return out;
    }
    static std::vector<float> dense(const ms::DenseWeight &W, const std::vector<float> &x) {
        std::vector<float> y(W.rows);
        for (int r = 0; r < W.rows; ++r) {
            double s = W.bias.empty() ? 0 : W.bias[r];
            for (int k = 0; k < W.cols; ++k) s += double(x[k]) * ms::bf16_to_f32(W.w[int64_t(r) * W.cols + k]);
            y[r] = float(s);
        }
        return y;
    }
    // Element k of row r: byte k/2 of the row's data, low nibble when k is even; block scale 2^(u8 - 127).
    static std::vector<float> expert(const ms::ExpertWeight &W, int e, const std::vector<float> &x) {
        static const float lut[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
        std::vector<float> y(W.rows);
        const uint8_t *blocks = W.expert_blocks(e), *scales = W.expert_scales(e);
        for (int r = 0; r < W.rows; ++r) {
            double s = W.expert_bias(e)[r];
            for (int k = 0; k < W.cols; ++k) {
                uint8_t byte = blocks[int64_t(r) * (W.cols / 2) + k / 2];
                int nib = k % 2 == 0 ? (byte & 15) : (byte >> 4);
                double val = (nib & 8 ? -1.0 : 1.0) * lut[nib & 7] * std::ldexp(1.0, int(scales[int64_t(r) * (W.cols / 32) + k / 32]) - 127);
                s += val * x[k];
            }
            y[r] = float(s);
        }
        return y;
    }
    std::vector<double> yarn_inv_freq() const {
        const int half = c_.head_dim / 2;
        const double d = c_.head_dim, base = c_.rope_theta, f = c_.rope_factor;
        std::vector<double> out(half);
        const double pi = std::acos(-1.0);
        double low = d * std::log(c_.rope_original_max_position_embeddings / (c_.rope_beta_fast * 2 * pi)) / (2 * std::log(base));
        double high = d * std::log(c_.rope_original_max_position_embeddings / (c_.rope_beta_slow * 2 * pi)) / (2 * std::log(base));
        low = std::max(low, 0.0);
        high = std::min(high, d - 1);
        for (int i = 0; i < half; ++i) {
            double extrap = std::pow(base, -2.0 * i / d);
            if (c_.rope_type != "yarn") {
                out[i] = extrap;
                continue;
            }
            double ramp = std::min(1.0, std::max(0.0, (i - low) / (high - low)));
            double mask = 1 - ramp;  // 1 = extrapolation
            out[i] = extrap / f * (1 - mask) + extrap * mask;
        }
        return out;
    }
    void rope(std::vector<float> &v, int heads, int pos, const std::vector<double> &inv, double conc) const {
        const int hd = c_.head_dim, half = hd / 2;
        for (int h = 0; h < heads; ++h)
            for (int i = 0; i < half; ++i) {
                double a = v[h * hd + i], b = v[h * hd + i + half];
                double c = std::cos(pos * inv[i]) * conc, s = std::sin(pos * inv[i]) * conc;
                v[h * hd + i] = float(a * c - b * s);
                v[h * hd + i + half] = float(b * c + a * s);
            }
    }
};

}  // namespace ms_test
