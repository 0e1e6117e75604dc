// The offline serving benchmark behind bench_cuda_serve: N requests of P random prompt tokens and exactly O generated
// tokens each (no stop tokens: the engine stops a request only on its own stop_token_ids or max_tokens, so leaving
// stop_token_ids empty is vLLM's ignore_eos), all submitted at once to the real serving engine (ms::Engine: paged KV
// pool, scheduler, sampler, step thread) over any executor. Records the time of every token event, and checks the
// accounting afterwards: every request finished by length with exactly O tokens, and the engine's counters agree with
// the events. Header-only so that the CPU test suite (tests/test_serve_bench.cc) runs the same code as the CUDA tool.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "engine.h"
#include "runtime/executor.h"
#include "runtime/serving_engine.h"

namespace ms_tools {

// vLLM's published offline throughput on one H100 for gpt-oss-20b (their workload: ShareGPT, not this one).
constexpr double kVllmPublishedTotalTokS = 16500;

struct ServeBenchOptions {
    int requests = 1000;
    int prompt = 1024;  // tokens per prompt, ids uniform over the vocabulary
    int output = 256;   // tokens generated per request, exactly
    uint64_t seed = 1;  // prompts, and each request's sampling seed (seed + request index)
    float temperature = 1.0f;  // vLLM's benchmark_throughput samples at temperature 1, top_p 1; 0 = greedy
    // Engine parameters; the defaults are vLLM's (max_num_seqs 256, chunked prefill budget 8192).
    int max_seqs = 256;
    int max_batched_tokens = 8192;
    int kv_block_size = 16;
    bool kv_bf16 = true;
    bool prefix_caching = true;
    // KV budget in bytes; 0 = the executor's own limit (CUDA: what its memory fraction leaves after the weights), or,
    // for a host executor, exactly max_seqs full-length sequences.
    uint64_t kv_memory_bytes = 0;
    // Stop waiting after this long, cancel what is left and report a partial run; 0 = wait for everything.
    double max_seconds = 0;
};

// Counts and times the executor's steps for the report (forwards everything else).
class TimedExecutor : public ms::Executor {
  public:
    explicit TimedExecutor(ms::Executor &inner) : inner_(inner) {}
    const ms::KvSpec &kv_spec() const override { return inner_.kv_spec(); }
    size_t kv_block_bytes(int group, int block_size, bool bf16) const override {
        return inner_.kv_block_bytes(group, block_size, bf16);
    }
    int vocab_size() const override { return inner_.vocab_size(); }
    int eos_token_id() const override { return inner_.eos_token_id(); }
    int max_positions() const override { return inner_.max_positions(); }
    void forward(const ms::ForwardSeq *seqs, int n_seqs, ms::KvStorage &kv, float *logits) override {
        const auto t0 = std::chrono::steady_clock::now();
        inner_.forward(seqs, n_seqs, kv, logits);
        count(seqs, n_seqs, t0);
    }
    // Device sampling passes through (timed like forward), so the benchmark measures the engine's real path.
    bool can_sample_on_device() const override { return inner_.can_sample_on_device(); }
    void forward_sample(const ms::ForwardSeq *seqs, int n_seqs, ms::KvStorage &kv, const ms::DeviceSampling *rows,
                        int32_t *tokens_out, float *host_logits) override {
        const auto t0 = std::chrono::steady_clock::now();
        inner_.forward_sample(seqs, n_seqs, kv, rows, tokens_out, host_logits);
        count(seqs, n_seqs, t0);
    }
    void count(const ms::ForwardSeq *seqs, int n_seqs, std::chrono::steady_clock::time_point t0) {
        forward_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++steps;
        int tokens = 0;
        for (int i = 0; i < n_seqs; ++i) tokens += seqs[i].n_tokens;
        tokens_computed += uint64_t(tokens);
        max_step_seqs = std::max(max_step_seqs, n_seqs);
        max_step_tokens = std::max(max_step_tokens, tokens);
    }
    void *alloc_kv_memory(size_t bytes) const override { return inner_.alloc_kv_memory(bytes); }
    void free_kv_memory(void *p) const override { inner_.free_kv_memory(p); }
    uint64_t kv_memory_limit() const override { return inner_.kv_memory_limit(); }

    // Engine thread only while the engine runs.
    double forward_s = 0;
    uint64_t steps = 0, tokens_computed = 0;
    int max_step_seqs = 0, max_step_tokens = 0;

  private:
    ms::Executor &inner_;
};

struct RequestTrace {
    uint64_t id = 0;
    double submit_s = 0;              // seconds since the run's start
    std::vector<double> token_s;      // time of each token's event
    int finish_reason = MS_FINISH_NONE;
    int finish_events = 0;            // must be exactly 1
    int bad_tokens = 0;               // ids outside the vocabulary
};

struct ServeBenchResult {
    ServeBenchOptions opt;
    int vocab = 0;
    std::vector<RequestTrace> requests;  // in submission order
    double wall_s = 0;         // first submit to the last request's final event (a cancellation, in a partial run)
    bool partial = false;      // max_seconds ran out and the rest was cancelled
    ms_engine_stats stats{};   // after the last event
    uint64_t kv_pool_tokens = 0;  // positions the KV pool holds (full-attention group)
    int peak_running = 0;      // most sequences running at once (engine stats after each step)
    int peak_waiting = 0;
    uint64_t steps = 0, tokens_computed = 0;
    int max_step_seqs = 0, max_step_tokens = 0;
    double forward_s = 0;      // time inside the executor's forward (GPU work and the logits download)
};

// numpy.percentile's default (linear between closest ranks); NaN for no data.
inline double percentile(std::vector<double> v, double p) {
    if (v.empty()) return std::nan("");
    std::sort(v.begin(), v.end());
    const double r = p / 100.0 * double(v.size() - 1);
    const size_t lo = size_t(std::floor(r)), hi = std::min(v.size() - 1, lo + 1);
    return v[lo] + (v[hi] - v[lo]) * (r - double(lo));
}

struct Latencies {
    std::vector<double> ttft, tpot, itl;  // seconds
};

// TTFT: first token event minus submit; TPOT: (last - first) / (tokens - 1) per request; ITL: every gap between
// consecutive token events of a request. Events of one engine step share a timestamp (one callback per step).
inline Latencies latencies(const ServeBenchResult &r) {
    Latencies l;
    for (const RequestTrace &t : r.requests) {
        if (t.token_s.empty()) continue;
        l.ttft.push_back(t.token_s.front() - t.submit_s);
        if (t.token_s.size() >= 2)
            l.tpot.push_back((t.token_s.back() - t.token_s.front()) / double(t.token_s.size() - 1));
        for (size_t i = 1; i < t.token_s.size(); ++i) l.itl.push_back(t.token_s[i] - t.token_s[i - 1]);
    }
    return l;
}

struct Throughput {
    double input_tokens = 0, output_tokens = 0, requests_done = 0;
    double req_s = 0, input_tok_s = 0, output_tok_s = 0, total_tok_s = 0;
};

// A complete run counts requests x prompt input and requests x output output tokens (vLLM's benchmark_throughput);
// a partial one the prompt tokens the engine computed and the tokens it generated before the deadline.
inline Throughput throughput(const ServeBenchResult &r) {
    Throughput t;
    if (r.partial) {
        t.input_tokens = double(r.stats.prompt_tokens + r.stats.prefix_cache_hits);
        t.output_tokens = double(r.stats.generation_tokens);
        for (const RequestTrace &q : r.requests) t.requests_done += q.finish_reason == MS_FINISH_LENGTH;
    } else {
        t.input_tokens = double(r.requests.size()) * r.opt.prompt;
        t.output_tokens = double(r.requests.size()) * r.opt.output;
        t.requests_done = double(r.requests.size());
    }
    if (r.wall_s > 0) {
        t.req_s = t.requests_done / r.wall_s;
        t.input_tok_s = t.input_tokens / r.wall_s;
        t.output_tok_s = t.output_tokens / r.wall_s;
        t.total_tok_s = (t.input_tokens + t.output_tokens) / r.wall_s;
    }
    return t;
}

// Everything that is wrong with a run's accounting (empty: all requests accounted for). A complete run: every
// request finished once, by length, with exactly `output` tokens; the events' token total equals requests x output
// and the engine's generated-token counter; the prompt tokens computed plus those served from the prefix cache are
// requests x prompt (more only when preemptions recomputed some); nothing is left running, waiting or holding KV.
// A partial run: cancelled requests may have fewer tokens, never more.
inline std::vector<std::string> check_accounting(const ServeBenchResult &r) {
    std::vector<std::string> bad;
    auto add = [&](const std::string &s) {
        if (bad.size() < 20) bad.push_back(s);
    };
    const ServeBenchOptions &o = r.opt;
    if (int(r.requests.size()) != o.requests)
        add(std::to_string(r.requests.size()) + " requests recorded, " + std::to_string(o.requests) + " submitted");
    uint64_t tokens = 0;
    for (size_t i = 0; i < r.requests.size(); ++i) {
        const RequestTrace &t = r.requests[i];
        const std::string who = "request " + std::to_string(i) + " (id " + std::to_string(t.id) + ")";
        const int n = int(t.token_s.size());
        tokens += uint64_t(n);
        if (t.finish_events != 1) add(who + ": " + std::to_string(t.finish_events) + " final events");
        if (t.bad_tokens) add(who + ": " + std::to_string(t.bad_tokens) + " token ids outside the vocabulary");
        const bool cancelled_ok = r.partial && t.finish_reason == MS_FINISH_CANCELLED && n < o.output;
        if (!cancelled_ok && t.finish_reason != MS_FINISH_LENGTH)
            add(who + ": finish reason " + std::to_string(t.finish_reason) + ", expected " +
                std::to_string(MS_FINISH_LENGTH) + " (length)");
        if (!cancelled_ok && n != o.output)
            add(who + ": " + std::to_string(n) + " tokens, expected " + std::to_string(o.output));
        for (size_t k = 1; k < t.token_s.size(); ++k)
            if (t.token_s[k] < t.token_s[k - 1]) {
                add(who + ": token events out of order in time");
                break;
            }
    }
    if (!r.partial && tokens != uint64_t(o.requests) * uint64_t(o.output))
        add("events carried " + std::to_string(tokens) + " tokens, expected requests x output = " +
            std::to_string(uint64_t(o.requests) * uint64_t(o.output)));
    if (tokens != r.stats.generation_tokens)
        add("events carried " + std::to_string(tokens) + " tokens, the engine counted " +
            std::to_string(r.stats.generation_tokens) + " generated");
    const uint64_t prompt_seen = r.stats.prompt_tokens + r.stats.prefix_cache_hits;
    const uint64_t prompt_want = uint64_t(o.requests) * uint64_t(o.prompt);
    if (!r.partial && r.stats.preemptions == 0 && prompt_seen != prompt_want)
        add("prompt tokens computed + cached = " + std::to_string(prompt_seen) + ", expected requests x prompt = " +
            std::to_string(prompt_want) + " (no preemption)");
    if (!r.partial && prompt_seen < prompt_want)
        add("prompt tokens computed + cached = " + std::to_string(prompt_seen) + " < requests x prompt = " +
            std::to_string(prompt_want));
    if (r.stats.running != 0 || r.stats.waiting != 0 || r.stats.kv_blocks_used != 0)
        add("after the run: " + std::to_string(r.stats.running) + " running, " + std::to_string(r.stats.waiting) +
            " waiting, " + std::to_string(r.stats.kv_blocks_used) + " KV blocks in use");
    if (r.steps != r.stats.steps)
        add("the executor ran " + std::to_string(r.steps) + " steps, the engine counted " + std::to_string(r.stats.steps));
    if (r.peak_running > o.max_seqs || r.max_step_seqs > o.max_seqs)
        add("peak running " + std::to_string(std::max(r.peak_running, r.max_step_seqs)) + " > max_seqs " +
            std::to_string(o.max_seqs));
    if (r.max_step_tokens > o.max_batched_tokens)
        add("a step computed " + std::to_string(r.max_step_tokens) + " tokens > max_batched_tokens " +
            std::to_string(o.max_batched_tokens));
    return bad;
}

namespace detail {
struct ServeState {
    std::mutex mu;
    std::condition_variable cv;
    std::chrono::steady_clock::time_point t0;
    std::unordered_map<uint64_t, RequestTrace> traces;  // by engine id; created by whichever side comes first
    size_t finished = 0;
    double last_final_s = 0;
    int vocab = 0;
    ms::Engine *engine = nullptr;
    int peak_running = 0, peak_waiting = 0;

    static void on_events(void *user, const ms_event *ev, int n) {
        auto *s = static_cast<ServeState *>(user);
        const double now = std::chrono::duration<double>(std::chrono::steady_clock::now() - s->t0).count();
        const ms_engine_stats st = s->engine->stats();  // published before this callback: the state after the step
        std::lock_guard<std::mutex> lk(s->mu);
        s->peak_running = std::max(s->peak_running, st.running);
        s->peak_waiting = std::max(s->peak_waiting, st.waiting);
        for (int i = 0; i < n; ++i) {
            RequestTrace &t = s->traces[ev[i].id];
            if (ev[i].token >= 0) {
                t.token_s.push_back(now);
                if (ev[i].token >= s->vocab) ++t.bad_tokens;
            }
            if (ev[i].finish_reason != MS_FINISH_NONE) {
                t.finish_reason = ev[i].finish_reason;
                if (++t.finish_events == 1) ++s->finished;
                s->last_final_s = now;
            }
        }
        s->cv.notify_all();
    }
};
}  // namespace detail

// The KV budget ServeBenchOptions::kv_memory_bytes = 0 stands for on this executor.
inline uint64_t default_kv_bytes(const ms::Executor &exec, const ServeBenchOptions &o) {
    if (exec.kv_memory_limit() > 0) return exec.kv_memory_limit();
    uint64_t per_block = 0;
    for (int g = 0; g < ms::kNumKvGroups; ++g)
        if (exec.kv_spec().layers_in_group[g] > 0) per_block += exec.kv_block_bytes(g, o.kv_block_size, o.kv_bf16);
    const uint64_t blocks_per_seq = uint64_t(o.prompt + o.output + o.kv_block_size - 1) / uint64_t(o.kv_block_size);
    return per_block * blocks_per_seq * uint64_t(o.max_seqs);
}

// Runs the benchmark; progress lines go to `log` (may be null). Throws ms::Error for bad options or engine errors.
inline ServeBenchResult run_serve_bench(ms::Executor &exec, const ServeBenchOptions &o, std::FILE *log) {
    if (o.requests < 1 || o.prompt < 1 || o.output < 1)
        throw ms::Error(MS_ERR_INVALID_ARGUMENT, "requests, prompt and output must be at least 1");
    ServeBenchResult r;
    r.opt = o;
    r.vocab = exec.vocab_size();
    TimedExecutor timed(exec);
    ms_engine_params p;
    ms_engine_params_default(&p);
    p.max_context = o.prompt + o.output;
    p.max_seqs = o.max_seqs;
    p.max_batched_tokens = o.max_batched_tokens;
    p.max_waiting = 0;
    p.kv_block_size = o.kv_block_size;
    p.kv_dtype_bf16 = o.kv_bf16 ? 1 : 0;
    p.enable_prefix_caching = o.prefix_caching ? 1 : 0;
    p.kv_memory_bytes = o.kv_memory_bytes ? o.kv_memory_bytes : default_kv_bytes(exec, o);

    // Prompts first, so that generating them is not timed.
    std::mt19937_64 rng(o.seed);
    std::uniform_int_distribution<int32_t> tok(0, r.vocab - 1);
    std::vector<int32_t> prompts(size_t(o.requests) * size_t(o.prompt));
    for (int32_t &t : prompts) t = tok(rng);

    detail::ServeState st;
    st.vocab = r.vocab;
    ms::Engine engine(timed, p, &detail::ServeState::on_events, &st);
    st.engine = &engine;
    {
        const ms_engine_stats s0 = engine.stats();
        r.kv_pool_tokens = uint64_t(s0.kv_blocks_total) * uint64_t(o.kv_block_size);
        if (log)
            std::fprintf(log, "KV pool: %d blocks of %d tokens = %llu positions (%.2f GB requested)\n",
                         s0.kv_blocks_total, o.kv_block_size, (unsigned long long)r.kv_pool_tokens,
                         p.kv_memory_bytes / 1e9);
    }

    std::vector<uint64_t> ids(size_t(o.requests));
    std::vector<double> submit_s(size_t(o.requests));
    st.t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < o.requests; ++i) {
        ms_request q{};
        q.prompt = prompts.data() + size_t(i) * size_t(o.prompt);
        q.n_prompt = o.prompt;
        q.max_tokens = o.output;
        q.temperature = o.temperature;
        q.top_p = 1.f;
        q.seed = o.seed + uint64_t(i);
        q.has_seed = 1;
        submit_s[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - st.t0).count();
        ids[i] = engine.submit(q);  // no stop ids: exactly max_tokens tokens
    }
    if (log)
        std::fprintf(log, "submitted %d requests in %.1f ms\n", o.requests,
                     1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - st.t0).count());

    {
        std::unique_lock<std::mutex> lk(st.mu);
        auto all_done = [&] { return st.finished >= size_t(o.requests); };
        if (o.max_seconds > 0) {
            const auto deadline = st.t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                              std::chrono::duration<double>(o.max_seconds));
            if (!st.cv.wait_until(lk, deadline, all_done)) {
                r.partial = true;
                lk.unlock();
                for (uint64_t id : ids) {
                    try {
                        engine.cancel(id);
                    } catch (const ms::Error &) {
                        // finished in the meantime
                    }
                }
                lk.lock();
            }
        }
        st.cv.wait(lk, all_done);
    }
    r.stats = engine.stats();  // published before the last callback ran, so it is the final state
    {
        std::lock_guard<std::mutex> lk(st.mu);
        r.wall_s = st.last_final_s;
        r.peak_running = st.peak_running;
        r.peak_waiting = st.peak_waiting;
        for (int i = 0; i < o.requests; ++i) {
            RequestTrace t = st.traces[ids[i]];
            t.id = ids[i];
            t.submit_s = submit_s[i];
            r.requests.push_back(std::move(t));
        }
    }
    // The engine thread is idle (everything finished); its counters are stable.
    r.steps = timed.steps;
    r.tokens_computed = timed.tokens_computed;
    r.max_step_seqs = timed.max_step_seqs;
    r.max_step_tokens = timed.max_step_tokens;
    r.forward_s = timed.forward_s;
    return r;
}

// The report: a few lines of text, and a one-row markdown table (header included). `what` names the model.
inline std::string format_report(const ServeBenchResult &r, const std::string &what) {
    const Throughput t = throughput(r);
    const Latencies l = latencies(r);
    char b[2048];
    std::ostringstream o;
    std::snprintf(b, sizeof b,
                  "%s: %d requests x (%d in + %d out), temperature %g, max_seqs %d, max_batched_tokens %d%s\n"
                  "wall %.2f s: %.2f req/s, input %.0f tok/s, output %.0f tok/s, total %.0f tok/s = %.2fx vLLM's "
                  "published %.1fk total tok/s (one H100, ShareGPT: a different workload)\n"
                  "TTFT p50 %.1f ms, p99 %.1f ms; TPOT p50 %.2f ms, p99 %.2f ms; ITL p50 %.2f ms, p99 %.2f ms\n"
                  "peak running %d, peak waiting %d, preemptions %llu, engine steps %llu (largest %d sequences / %d "
                  "tokens), executor forward %.2f s = %.0f %% of wall\n",
                  what.c_str(), r.opt.requests, r.opt.prompt, r.opt.output, r.opt.temperature, r.opt.max_seqs,
                  r.opt.max_batched_tokens, r.partial ? " - PARTIAL: max_seconds ran out, the rest was cancelled" : "",
                  r.wall_s, t.req_s, t.input_tok_s, t.output_tok_s, t.total_tok_s,
                  t.total_tok_s / kVllmPublishedTotalTokS, kVllmPublishedTotalTokS / 1e3, 1e3 * percentile(l.ttft, 50),
                  1e3 * percentile(l.ttft, 99), 1e3 * percentile(l.tpot, 50), 1e3 * percentile(l.tpot, 99),
                  1e3 * percentile(l.itl, 50), 1e3 * percentile(l.itl, 99), r.peak_running, r.peak_waiting,
                  (unsigned long long)r.stats.preemptions, (unsigned long long)r.steps, r.max_step_seqs,
                  r.max_step_tokens, r.forward_s, r.wall_s > 0 ? 100 * r.forward_s / r.wall_s : 0.0);
    o << b << "\n";
    o << "| model | requests x (in + out) | max seqs / batched tokens | wall | req/s | input tok/s | output tok/s | "
         "total tok/s | vs vLLM published 16.5k (ShareGPT) | TTFT p50 / p99 | TPOT p50 / p99 | ITL p50 / p99 | "
         "peak running | preemptions |\n";
    o << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    std::snprintf(b, sizeof b,
                  "| %s | %d x (%d + %d)%s | %d / %d | %.1f s | %.2f | %.0f | %.0f | %.0f | %.2fx | %.0f / %.0f ms | "
                  "%.1f / %.1f ms | %.1f / %.1f ms | %d | %llu |\n",
                  what.c_str(), r.opt.requests, r.opt.prompt, r.opt.output,
                  r.partial ? (" PARTIAL: " + std::to_string(int(throughput(r).requests_done)) + " done in " +
                               std::to_string(int(r.opt.max_seconds)) + " s")
                                  .c_str()
                            : "",
                  r.opt.max_seqs, r.opt.max_batched_tokens, r.wall_s, t.req_s, t.input_tok_s, t.output_tok_s,
                  t.total_tok_s, t.total_tok_s / kVllmPublishedTotalTokS, 1e3 * percentile(l.ttft, 50),
                  1e3 * percentile(l.ttft, 99), 1e3 * percentile(l.tpot, 50), 1e3 * percentile(l.tpot, 99),
                  1e3 * percentile(l.itl, 50), 1e3 * percentile(l.itl, 99), r.peak_running,
                  (unsigned long long)r.stats.preemptions);
    o << b;
    return o.str();
}

}  // namespace ms_tools
