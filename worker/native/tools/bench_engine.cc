// bench_engine: the serving engine (scheduler, paged KV, sampler, step thread) over the CPU model, measured against
// this machine's memory bandwidth in the same run. Prints decode tokens/s at batch 1, 8 and 32 and prefill tokens/s
// on a generated mid-size gpt-oss checkpoint, each with its bandwidth floor (weight bytes a step must read ÷
// measured read bandwidth), and the runtime's own time per step (step wall time minus the model's forward time).
// It measures the model once per activation mode, in the same run: fp16 (the default where the CPU has
// AVX512-FP16: vfmadd231ph kernels, cpu/matmul_f16dot.h; skipped with a note elsewhere), fp32 (the default elsewhere:
// the AVX-512/AVX2 FMA kernels) and the opt-in int8 expert activations (q8, cpu/matmul_mxfp4_q8.h). With --modes
// q8all, also the int8 dense projections (cpu/matmul_q8_dense.h); with bf16, the opt-in vdpbf16ps kernels
// (cpu/matmul_bf16dot.h; only where the CPU has AVX512-BF16).
// --modes picks the activation modes and their order, --rounds repeats the whole sequence (alternating modes back to
// back on a shared machine), --q8-min-tokens / --f16-min-tokens set the q8 / fp16 step-size thresholds.
//   bench_engine [--preset mid] [--threads N] [--decode-steps 24] [--modes fp16,fp32,q8[,q8all][,bf16]] [--rounds 1]
//                [--q8-min-tokens 0 (auto)] [--f16-min-tokens 0 (default)] [--batches 1,8,32] [--prefill-reps 3 (0 = no prefill)] [--out FILE.md]
//                [--keep DIR]
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "cpu/matmul_bf16dot.h"
#include "cpu/matmul_f16dot.h"
#include "cpu/matmul_mxfp4_q8.h"
#include "cpu/simd.h"
#include "model/model.h"
#include "model/synthetic_checkpoint.h"
#include "runtime/model_executor.h"
#include "runtime/serving_engine.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Read bandwidth with `threads` threads over a buffer far larger than the caches; best of 5 passes.
double read_bandwidth(int threads, size_t bytes) {
    std::vector<uint64_t> buf(bytes / 8);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = i * 0x9e3779b97f4a7c15ULL;
    std::vector<uint64_t> sums(threads);
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = Clock::now();
        std::vector<std::thread> th;
        for (int t = 0; t < threads; ++t) {
            th.emplace_back([&, t] {
                const size_t per = buf.size() / threads, begin = t * per;
                const uint64_t *p = buf.data() + begin;
                uint64_t a = 0, b = 0, c = 0, d = 0;
                for (size_t i = 0; i + 4 <= per; i += 4) {
                    a += p[i];
                    b ^= p[i + 1];
                    c += p[i + 2];
                    d ^= p[i + 3];
                }
                sums[t] = a + b + c + d;
            });
        }
        for (auto &x : th) x.join();
        best = std::max(best, bytes / seconds(t0, Clock::now()));
    }
    volatile uint64_t sink = 0;
    for (uint64_t s : sums) sink = sink + s;
    (void)sink;
    return best;
}

// Times every forward pass of the model under the engine.
class TimedExecutor : public ms::Executor {
  public:
    explicit TimedExecutor(ms::Executor &inner) : inner_(inner) {}
    const ms::KvSpec &kv_spec() const override { return inner_.kv_spec(); }
    size_t kv_block_bytes(int g, int bs, bool bf16) const override { return inner_.kv_block_bytes(g, bs, bf16); }
    int vocab_size() const override { return inner_.vocab_size(); }
    int eos_token_id() const override { return inner_.eos_token_id(); }
    int max_positions() const override { return inner_.max_positions(); }
    void forward(const ms::ForwardSeq *s, int n, ms::KvStorage &kv, float *logits) override {
        const auto t0 = Clock::now();
        inner_.forward(s, n, kv, logits);
        std::lock_guard<std::mutex> lk(mu);
        forward_s.push_back(seconds(t0, Clock::now()));
    }
    std::mutex mu;
    std::vector<double> forward_s;

  private:
    ms::Executor &inner_;
};

// CPU time of the whole process (every thread). On a shared machine wall time swings with the other processes'
// load; CPU time per step counts only the time this process's threads ran, so it is the figure to compare between
// runs when the load moved. It includes the pool's spinning between loops (at most 0.2 ms per gap, see
// cpu/thread_pool.h; the workers sleep after that).
double process_cpu_s() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Per-step arrival times of event batches, and completion tracking.
struct StepLog {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Clock::time_point> times;
    std::vector<double> cpu;  // process CPU time (all threads) at each event batch
    std::vector<int> tokens;
    int finished = 0;
    static void on(void *user, const ms_event *ev, int n) {
        auto *self = static_cast<StepLog *>(user);
        const auto t = Clock::now();
        int toks = 0, fin = 0;
        for (int i = 0; i < n; ++i) {
            toks += ev[i].token >= 0;
            fin += ev[i].finish_reason != MS_FINISH_NONE;
        }
        std::lock_guard<std::mutex> lk(self->mu);
        self->times.push_back(t);
        self->cpu.push_back(process_cpu_s());
        self->tokens.push_back(toks);
        self->finished += fin;
        self->cv.notify_all();
    }
    void wait(int n) {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return finished >= n; });
    }
    void reset() {
        std::lock_guard<std::mutex> lk(mu);
        times.clear();
        cpu.clear();
        tokens.clear();
        finished = 0;
    }
};

std::vector<int32_t> prompt_of(int n, int salt, int vocab) {
    std::vector<int32_t> p(n);
    for (int i = 0; i < n; ++i) p[i] = static_cast<int32_t>((static_cast<int64_t>(i) * 7919 + salt * 104729 + 17) % vocab);
    return p;
}

struct Row {
    std::string what;
    int batch;
    double tok_s, step_ms, forward_ms, floor_tok_s;
    double cpu_ms = 0;  // process CPU ms per step (decode runs), all threads
};

std::string machine_description() {
    std::string model = "unknown CPU";
    std::ifstream f("/proc/cpuinfo");
    for (std::string line; std::getline(f, line);)
        if (line.rfind("model name", 0) == 0) {
            model = line.substr(line.find(':') + 2);
            break;
        }
    return model + ", " + std::to_string(std::thread::hardware_concurrency()) + " cores";
}

}  // namespace

int main(int argc, char **argv) {
    std::string preset = "mid", out_md, keep, command;
    for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
    std::string loadavg;
    std::getline(std::ifstream("/proc/loadavg"), loadavg);
    int threads = 0, decode_steps = 24, rounds = 1, q8_min_tokens = ms::Model::kQ8AutoMinTokens, prefill_reps = 3;
    int f16_min_tokens = 0;  // 0: the model's default
    std::string modes = "fp16,fp32,q8", batches_arg = "1,8,32";
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i], v = argv[i + 1];
        if (a == "--preset") preset = v;
        else if (a == "--threads") threads = std::stoi(v);
        else if (a == "--decode-steps") decode_steps = std::stoi(v);
        else if (a == "--out") out_md = v;
        else if (a == "--keep") keep = v;
        else if (a == "--modes") modes = v;
        else if (a == "--rounds") rounds = std::max(1, std::stoi(v));
        else if (a == "--q8-min-tokens") q8_min_tokens = std::stoi(v);
        else if (a == "--f16-min-tokens") f16_min_tokens = std::stoi(v);
        else if (a == "--prefill-reps") prefill_reps = std::max(0, std::stoi(v));
        else if (a == "--batches") batches_arg = v;
        else {
            std::fprintf(stderr, "bench_engine: unknown option %s\n", a.c_str());
            return 2;
        }
    }
    try {
        const int hw = static_cast<int>(std::thread::hardware_concurrency());
        const int n_threads = threads > 0 ? threads : hw;
        std::printf("measuring read bandwidth (%d threads, 1 GiB)...\n", n_threads);
        const double bw = read_bandwidth(n_threads, size_t(1) << 30);
        std::printf("read bandwidth: %.2f GB/s\n", bw / 1e9);

        std::string dir = keep;
        if (dir.empty()) {
            char tmpl[] = "/tmp/bench_engine_XXXXXX";
            if (!mkdtemp(tmpl)) throw ms::Error(MS_ERR_IO, "cannot create a temporary directory");
            dir = tmpl;
        }
        const std::string ckpt = dir + "/" + preset;
        if (!std::filesystem::exists(ckpt + "/config.json")) {
            std::printf("generating the %s checkpoint in %s...\n", preset.c_str(), ckpt.c_str());
            ms::write_synthetic_checkpoint(ms::synthetic_preset(preset), ckpt);
        }
        ms_model_params mp;
        ms_model_params_default(&mp);
        mp.path = ckpt.c_str();
        mp.backend = "cpu";
        mp.n_threads = n_threads;
        std::unique_ptr<ms::Model> model = ms::Model::load(mp);
        const ms::ModelConfig &c = model->config();
        const double H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, E = c.num_local_experts;
        const double q_out = double(c.num_attention_heads) * c.head_dim, kv_out = double(c.num_key_value_heads) * c.head_dim;
        // Bytes one decode step must read: bf16 attention and router weights of every layer, the MXFP4 blocks and
        // E8M0 scales of the experts the batch routes to, and the bf16 unembedding (one embedding row is noise).
        const double dense = 2.0 * c.num_hidden_layers * (H * q_out + 2 * H * kv_out + q_out * H + E * H);
        const double expert = (2 * I * H + H * I) * (0.5 + 1.0 / 32);
        const double unembed = 2.0 * V * H;
        auto floor_bytes = [&](int batch) {
            // Distinct experts a batch touches per layer with uniform routing: E (1 - (1 - k/E)^batch).
            const double distinct = E * (1 - std::pow(1 - c.num_experts_per_tok / E, batch));
            return dense + unembed + c.num_hidden_layers * distinct * expert;
        };
        std::printf("%s: %d layers, hidden %d, %d experts (%d active), vocab %d, %.1f MB of weights; "
                    "%.1f MB read per batch-1 decode step\n",
                    preset.c_str(), c.num_hidden_layers, c.hidden_size, c.num_local_experts, c.num_experts_per_tok,
                    c.vocab_size, model->weight_bytes() / 1e6, floor_bytes(1) / 1e6);

        // --batches: the decode batch sizes (the first is the "vs batch 1" reference; the targets need 1 and 32).
        std::vector<int> batches;
        for (size_t p = 0; p <= batches_arg.size();) {
            const size_t q = std::min(batches_arg.find(',', p), batches_arg.size());
            const int b = std::stoi(batches_arg.substr(p, q - p));
            if (b < 1 || b > 32) throw ms::Error(MS_ERR_INVALID_ARGUMENT, "--batches: each batch must be in 1..32");
            batches.push_back(b);
            p = q + 1;
        }
        ms::ModelExecutor real(*model);
        TimedExecutor exec(real);
        StepLog log;
        int salt = 0;
        // One full set of runs (decode at batch 1 / 8 / 32, prefill) with the model's current activation type.
        auto measure = [&]() {
            ms_engine_params ep;
            ms_engine_params_default(&ep);
            ep.max_context = 1024;
            ep.max_seqs = 32;
            ep.max_batched_tokens = 2048;
            ep.kv_block_size = 16;
            ep.kv_memory_bytes = 512ull << 20;
            ep.kv_dtype_bf16 = 1;
            ep.enable_prefix_caching = 0;  // every run computes its prompts
            ms::Engine engine(exec, ep, &StepLog::on, &log);

            std::vector<Row> rows;
            for (int batch : batches) {
                // All prompts are admitted in the first step (prefill); every later step decodes `batch` tokens.
                log.reset();
                {
                    std::lock_guard<std::mutex> lk(exec.mu);
                    exec.forward_s.clear();
                }
                const int prompt_len = 32, warm = 2;
                for (int b = 0; b < batch; ++b) {
                    const auto p = prompt_of(prompt_len, ++salt, c.vocab_size);
                    ms_request r{};
                    r.prompt = p.data();
                    r.n_prompt = prompt_len;
                    r.max_tokens = 1 + warm + decode_steps;
                    r.top_p = 1.f;
                    engine.submit(r);
                }
                log.wait(batch);
                std::lock_guard<std::mutex> lk(log.mu);
                std::lock_guard<std::mutex> lk2(exec.mu);
                // Steps 1 + warm .. end are pure decode steps of `batch` tokens.
                const size_t first = 1 + warm, last = log.times.size() - 1;
                if (log.times.size() != exec.forward_s.size() || last <= first)
                    throw ms::Error(MS_ERR_INTERNAL, "unexpected step structure in the decode run");
                int toks = 0;
                double fwd = 0;
                for (size_t s = first + 1; s <= last; ++s) {
                    toks += log.tokens[s];
                    fwd += exec.forward_s[s];
                }
                const double wall = seconds(log.times[first], log.times[last]);
                const int steps = static_cast<int>(last - first);
                rows.push_back({"decode", batch, toks / wall, 1e3 * wall / steps, 1e3 * fwd / steps,
                                batch / (floor_bytes(batch) / bw), 1e3 * (log.cpu[last] - log.cpu[first]) / steps});
            }
            if (prefill_reps > 0) {
                // Prefill: 4 prompts of 256 tokens in one step of 1024 tokens, best of --prefill-reps (3).
                double best_tok_s = 0, best_step = 0, best_fwd = 0;
                for (int rep = 0; rep < prefill_reps; ++rep) {
                    log.reset();
                    {
                        std::lock_guard<std::mutex> lk(exec.mu);
                        exec.forward_s.clear();
                    }
                    const auto t0 = Clock::now();
                    for (int b = 0; b < 4; ++b) {
                        const auto p = prompt_of(256, ++salt, c.vocab_size);
                        ms_request r{};
                        r.prompt = p.data();
                        r.n_prompt = 256;
                        r.max_tokens = 1;
                        r.top_p = 1.f;
                        engine.submit(r);
                    }
                    log.wait(4);
                    const double wall = seconds(t0, Clock::now());
                    std::lock_guard<std::mutex> lk(exec.mu);
                    double fwd = 0;
                    for (double f : exec.forward_s) fwd += f;
                    if (1024 / wall > best_tok_s) {
                        best_tok_s = 1024 / wall;
                        best_step = 1e3 * wall / exec.forward_s.size();
                        best_fwd = 1e3 * fwd / exec.forward_s.size();
                    }
                }
                // A prefill step reads every weight once (all experts, for 1024 tokens) at the least.
                const double all_bytes = dense + unembed + c.num_hidden_layers * E * expert;
                rows.push_back({"prefill", 4, best_tok_s, best_step, best_fwd, 1024 / (all_bytes / bw)});
            }
            return rows;
        };
        struct Run {
            std::string mode, name;
            int round;
            std::vector<Row> rows;
        };
        std::vector<Run> runs;
        const bool bf16 = ms::bf16_dot_supported() && model->simd() == ms::Simd::Avx512;
        const bool f16 = ms::f16_dot_supported() && model->simd() == ms::Simd::Avx512;
        std::vector<std::string> mode_list;
        for (size_t p = 0; p <= modes.size();) {
            const size_t q = std::min(modes.find(',', p), modes.size());
            const std::string m = modes.substr(p, q - p);
            if (m != "fp32" && m != "bf16" && m != "fp16" && m != "q8" && m != "q8all")
                throw ms::Error(MS_ERR_INVALID_ARGUMENT, "--modes: unknown mode " + m);
            if (m == "fp16" && !f16) std::printf("note: no fp16 run (this CPU has no AVX512-FP16, or MS_SIMD capped the SIMD level)\n");
            else if (m != "bf16" || bf16) mode_list.push_back(m);
            p = q + 1;
        }
        for (int round = 1; round <= rounds; ++round)
            for (const std::string &m : mode_list) {
                model->set_bf16_activations(m == "bf16");
                model->set_q8_activations(m == "q8" || m == "q8all", q8_min_tokens, m == "q8all");
                model->set_f16_activations(m == "fp16", f16_min_tokens);
                std::string name = m == "fp32" ? "fp32 activations"
                                   : m == "bf16" ? "bf16 activations (vdpbf16ps)"
                                   : m == "fp16" ? "fp16 activations (vfmadd231ph; attention, experts and unembedding in steps of >= " +
                                                       std::to_string(model->f16_min_tokens()) + " tokens)"
                                                 : std::string(m == "q8all" ? "q8all activations (int8 attention/unembedding in steps of >= " +
                                                                                  std::to_string(std::max(model->q8_min_tokens(), ms::Model::kQ8DenseMinTokens)) +
                                                                                  " tokens, int8 MXFP4 experts"
                                                                            : "q8 activations (int8 MXFP4 experts") +
                                                       " in steps of >= " + std::to_string(model->q8_min_tokens()) +
                                                       " tokens, " + ms::q8_kernel_name(model->simd()) + ")";
                if (rounds > 1) name += ", round " + std::to_string(round);
                std::printf("\n%s...\n", name.c_str());
                runs.push_back({m, name, round, measure()});
            }
        model->set_bf16_activations(false);
        model->set_q8_activations(false);
        model->set_f16_activations(false);

        std::ostringstream md;
        char date[64];
        const std::time_t now = std::time(nullptr);
        std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
        md << "## Engine (runtime + CPU model)\n\n"
           << "Measured " << date << " on " << machine_description() << " (" << model->n_threads()
           << " model threads, SIMD " << ms::simd_name(model->simd()) << "; load average at start "
           << loadavg.substr(0, loadavg.find(' ')) << ": the machine is shared), command `" << command
           << "` (`make bench-engine` runs it from worker/native/build).\n\n"
           << "Checkpoint: generated `" << preset << "` preset (" << c.num_hidden_layers << " layers, hidden "
           << c.hidden_size << ", " << c.num_local_experts << " experts / " << c.num_experts_per_tok << " active, vocab "
           << c.vocab_size << ", MXFP4 experts, bf16 dense), bf16 KV, through the full engine (scheduler, paged KV, "
           << "sampler, step thread). Read bandwidth measured in the same run: **" << std::fixed;
        md.precision(2);
        md << bw / 1e9 << " GB/s** (" << n_threads << " threads summing 1 GiB, best of 5).\n\n"
           << "The bandwidth floor is the token rate at which the weight bytes a step must read (bf16 attention and "
              "router, MXFP4 blocks + scales of the experts the batch routes to, bf16 unembedding) take exactly the "
              "measured bandwidth. Runtime time per step = step wall time minus the model's forward time.\n\n"
           << "Each table is one set of runs with the model's activations in that mode, all measured in this process "
           << "in the order shown, against the same bandwidth figure"
           << (f16 ? ".\n" : " (this CPU has no AVX512-FP16, or MS_SIMD capped the SIMD level: no fp16 run, fp32 is the "
                              "default here).\n");
        for (const Run &run : runs) {
            const std::vector<Row> &rows = run.rows;
            md << "\n### " << run.name << "\n\n"
               << "| run | batch | tokens/s | bandwidth floor tokens/s | of floor | vs batch 1 | ms/step | forward ms/step | runtime ms/step | CPU ms/step | vs batch 1 by CPU time |\n"
               << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
            std::printf("\n%s\n%-8s %5s %10s %12s %9s %10s %9s %11s %11s %10s %9s\n", run.name.c_str(), "run", "batch", "tok/s",
                        "floor tok/s", "of floor", "vs b1", "ms/step", "fwd ms", "runtime ms", "cpu ms", "cpu vs b1");
            const double b1 = rows[0].tok_s;
            // Throughput against the first decode run by CPU time: tokens per CPU second.
            auto cpu_vs = [&](const Row &r) { return r.batch * rows[0].cpu_ms / (rows[0].batch * r.cpu_ms); };
            for (const Row &r : rows) {
                const double vs = r.what == "decode" ? r.tok_s / b1 : 0;
                std::printf("%-8s %5d %10.1f %12.1f %8.0f%% %9.2fx %9.2f %11.2f %11.3f %10.2f %8.2fx\n", r.what.c_str(), r.batch, r.tok_s,
                            r.floor_tok_s, 100 * r.tok_s / r.floor_tok_s, vs, r.step_ms, r.forward_ms, r.step_ms - r.forward_ms,
                            r.cpu_ms, r.what == "decode" ? cpu_vs(r) : 0.0);
                md.precision(1);
                md << "| " << r.what << " | " << r.batch << " | " << r.tok_s << " | " << r.floor_tok_s << " | ";
                md.precision(0);
                md << 100 * r.tok_s / r.floor_tok_s << " % | ";
                md.precision(2);
                if (r.what == "decode") md << vs << "× | "; else md << "– | ";
                md << r.step_ms << " | " << r.forward_ms << " | ";
                md.precision(3);
                md << r.step_ms - r.forward_ms << " | ";
                md.precision(2);
                if (r.what == "decode") md << r.cpu_ms << " | " << cpu_vs(r) << "× |\n";
                else md << "– | – |\n";
            }
            const Row *r32 = nullptr;
            for (const Row &r : rows)
                if (r.what == "decode" && r.batch == 32) r32 = &r;
            if (rows[0].batch == 1 && r32)
                md << "\nTargets on this machine: batch-1 decode ≥ 50 % of its floor (" << (rows[0].tok_s / rows[0].floor_tok_s >= 0.5 ? "met" : "not met")
                   << "); batch-32 throughput ≥ 8× batch 1 (" << (r32->tok_s / b1 >= 8 ? "met" : "not met") << ").\n";
        }
        // Each non-fp32 run against the fp32 run of the same round.
        for (const Run &run : runs) {
            if (run.mode == "fp32") continue;
            const Run *base = nullptr;
            for (const Run &r : runs)
                if (r.mode == "fp32" && r.round == run.round) base = &r;
            if (!base) continue;
            md.precision(2);
            md << "\n" << run.mode << " / fp32 activations" << (rounds > 1 ? ", round " + std::to_string(run.round) : std::string())
               << ": decode";
            std::printf("\n%s / fp32:", run.mode.c_str());
            const size_t n_decode = batches.size();
            for (size_t i = 0; i < n_decode; ++i) {
                md << (i ? "," : "") << " batch " << base->rows[i].batch << " " << run.rows[i].tok_s / base->rows[i].tok_s << "×";
                std::printf(" batch %d %.2fx", base->rows[i].batch, run.rows[i].tok_s / base->rows[i].tok_s);
            }
            if (prefill_reps > 0) {
                md << "; prefill " << run.rows[n_decode].tok_s / base->rows[n_decode].tok_s << "×";
                std::printf(" prefill %.2fx", run.rows[n_decode].tok_s / base->rows[n_decode].tok_s);
            }
            md << ".\n";
            std::printf("\n");
        }
        md << "\nPrefill (4 prompts of 256 tokens in one 1024-token step) is compute-bound: its bandwidth floor (every "
              "weight read once per step) is shown for completeness, not as a target. Kernel speed belongs to the model "
              "half (`make bench-engine-model` times the forward pass alone); the runtime's share of a step is the last "
              "column.\n";
        if (!out_md.empty()) {
            std::ofstream f(out_md);
            f << md.str();
            if (!f) throw ms::Error(MS_ERR_IO, "cannot write " + out_md);
            std::printf("\nwrote %s\n", out_md.c_str());
        }
        if (keep.empty()) std::filesystem::remove_all(dir);
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench_engine: %s\n", e.what());
        return 1;
    }
}
