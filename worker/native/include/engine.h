/*
 * modelserve engine: the C API of the native inference engine.
 *
 * Two opaque handles with create/free pairs:
 *   ms_model  — immutable weights loaded from a checkpoint directory (shareable, read-only after load).
 *   ms_engine — a paged KV cache, a continuous-batching scheduler and a step loop on its own native thread, over one
 *               model. Requests are submitted and cancelled from any thread; generated tokens come back in batches
 *               through the event callback, which runs on the engine thread after each step.
 *
 * Every function that can fail returns an ms_status; on failure ms_last_error() returns a message for the calling
 * thread naming what failed (for a checkpoint: the file and the tensor). The core never includes napi.h.
 */
#ifndef MODELSERVE_ENGINE_H
#define MODELSERVE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ms_status {
    MS_OK = 0,
    MS_ERR_INVALID_ARGUMENT = 1, /* a parameter is out of range or a pointer is null */
    MS_ERR_IO = 2,               /* a file could not be opened, mapped or read */
    MS_ERR_FORMAT = 3,           /* a checkpoint or config is malformed: bad header, missing or mis-shaped tensor */
    MS_ERR_UNSUPPORTED = 4,      /* a valid input this build cannot run (architecture, dtype, backend) */
    MS_ERR_OUT_OF_MEMORY = 5,    /* the weights or the KV budget do not fit */
    MS_ERR_NOT_FOUND = 6,        /* no such request id (already finished or never submitted) */
    MS_ERR_CAPACITY = 7,         /* the request can never fit: prompt + max_tokens beyond max_context or the KV pool */
    MS_ERR_CLOSED = 8,           /* the engine is shutting down */
    MS_ERR_INTERNAL = 9          /* a bug: please report */
} ms_status;

/* The message of the last failed call on this thread ("" if none). Valid until the next call on this thread. */
const char *ms_last_error(void);
/* A stable name for a status ("MS_ERR_FORMAT", ...). */
const char *ms_status_name(ms_status status);

/* ------------------------------------------------------------------------------------------------------------ */
/* Model                                                                                                        */
/* ------------------------------------------------------------------------------------------------------------ */

typedef struct ms_model ms_model;

/* Called from the loading thread with bytes of tensor data processed so far and the total. */
typedef void (*ms_progress_fn)(void *user, uint64_t done_bytes, uint64_t total_bytes);

typedef struct ms_model_params {
    const char *path;        /* a Hugging Face checkpoint directory: config.json + *.safetensors (+ index);
                              * or "synthetic:gpt-oss-20b" / "synthetic:gpt-oss-120b": that shape with random weights
                              * generated on the GPU (seed 42, no file read; backend "cuda" only, else
                              * MS_ERR_UNSUPPORTED; no ms_model_eval) */
    const char *backend;     /* "cpu", "cuda" or "auto" (NULL = "auto": MODELSERVE_DEVICE=cpu|cuda, else "cpu") */
    int n_threads;           /* CPU worker threads; 0 = the number of online cores */
    ms_progress_fn progress; /* optional */
    void *progress_user;
} ms_model_params;

typedef struct ms_model_info {
    char architecture[32]; /* "gpt_oss" */
    char backend[16];      /* "cpu" or "cuda" */
    char simd[16];         /* the CPU kernel set chosen at run time: "scalar", "avx2", "avx512" */
    int n_layers;
    int n_experts;
    int n_experts_per_tok;
    int hidden_size;
    int intermediate_size;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab_size;
    int sliding_window;
    int max_position_embeddings;
    int eos_token_id;
    int bos_token_id;      /* -1: none */
    int add_bos_token;     /* 1: a prompt starts with bos_token_id (GGUF tokenizer.ggml.add_bos_token); the caller adds it */
    uint64_t weight_bytes; /* bytes of tensor data held */
} ms_model_info;

void ms_model_params_default(ms_model_params *params);
ms_status ms_model_load(const ms_model_params *params, ms_model **out);
void ms_model_free(ms_model *model);
ms_status ms_model_get_info(const ms_model *model, ms_model_info *out);

/* Reference path for tests and test vectors: runs tokens[0..n) from position 0 through the model with a private
 * contiguous KV cache and writes the logits of every position to logits[n * vocab_size]. Not for serving. */
ms_status ms_model_eval(ms_model *model, const int32_t *tokens, int n_tokens, float *logits);

/* The tokenizer and chat template a model file carries (GGUF models; MS_ERR_UNSUPPORTED for a checkpoint without
 * one). ms_model_tokenize writes min(n, cap) ids to out and the full count n to *n_out (call again with a bigger
 * buffer when n > cap); parse_special = 1 matches control tokens such as <|im_start|> in the text.
 * ms_model_token_bytes does the same for the bytes of one token (special = 1: control tokens give their text). */
ms_status ms_model_tokenize(const ms_model *model, const char *text, size_t len, int parse_special, int32_t *out,
                            int cap, int *n_out);
ms_status ms_model_token_bytes(const ms_model *model, int32_t token, int special, char *out, size_t cap,
                               size_t *n_out);
/* The chat template from the file's metadata ("" when it has none); valid while the model lives. */
ms_status ms_model_chat_template(const ms_model *model, const char **out);

/* ------------------------------------------------------------------------------------------------------------ */
/* Engine                                                                                                       */
/* ------------------------------------------------------------------------------------------------------------ */

typedef struct ms_engine ms_engine;

typedef struct ms_engine_params {
    int max_context;          /* longest prompt + generation of one sequence, in tokens */
    int max_batched_tokens;   /* token budget of one step (decodes first, then chunked prefill) */
    int max_seqs;             /* sequences running at once */
    int max_waiting;          /* sequences queued before submit fails with MS_ERR_CAPACITY; 0 = unbounded */
    int kv_block_size;        /* tokens per KV block */
    uint64_t kv_memory_bytes; /* KV cache budget in bytes (both groups together) */
    int kv_dtype_bf16;        /* 1 = store K/V as bf16, 0 = fp32 */
    int enable_prefix_caching;
} ms_engine_params;

typedef struct ms_request {
    const int32_t *prompt;
    int n_prompt;
    int max_tokens;    /* tokens to generate at most (>= 1) */
    float temperature; /* 0 = greedy */
    float top_p;       /* 1 = off */
    int top_k;         /* 0 = off */
    float min_p;       /* 0 = off */
    uint64_t seed;     /* used when has_seed: the same seed and inputs give the same tokens */
    int has_seed;
    const int32_t *stop_token_ids; /* generation ends after emitting one of these (it is reported) */
    int n_stop_token_ids;
    int logprobs; /* 0 = none; N > 0: the sampled token's logprob and the top-N alternatives (N <= 20) */
    /* Penalties on tokens already seen (applied before greedy/temperature; logprobs stay those of the raw logits).
     * frequency/presence (OpenAI, generated tokens only, each in [-2, 2], 0 = off):
     *   logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty.
     * repetition_penalty (vLLM, prompt and generated tokens, > 0; 1 = off, and 0 also means off so that a
     * zero-initialised request has no penalty): a seen token's logit is divided by it if positive, else multiplied. */
    float frequency_penalty;
    float presence_penalty;
    float repetition_penalty;
} ms_request;

typedef enum ms_finish_reason {
    MS_FINISH_NONE = 0,      /* more tokens follow */
    MS_FINISH_STOP = 1,      /* a stop token was generated */
    MS_FINISH_LENGTH = 2,    /* max_tokens or max_context reached */
    MS_FINISH_CANCELLED = 3, /* ms_engine_cancel or engine shutdown */
    MS_FINISH_ERROR = 4      /* the engine failed this request; see the event's message */
} ms_finish_reason;

#define MS_MAX_LOGPROBS 20

typedef struct ms_event {
    uint64_t id;
    int32_t token;        /* -1 for an event that only finishes a request (cancelled, error) */
    float logprob;        /* of token, when logprobs were asked for */
    int n_top;            /* entries valid in top_ids / top_logprobs */
    int32_t top_ids[MS_MAX_LOGPROBS];
    float top_logprobs[MS_MAX_LOGPROBS];
    int finish_reason;    /* ms_finish_reason */
    int n_prompt_cached;  /* on the first token: prompt tokens served from the prefix cache */
    const char *message;  /* on MS_FINISH_ERROR; valid during the callback */
} ms_event;

/* Runs on the engine thread once per step with every event of that step. Must not block for long and must not call
 * ms_engine_free; it may call submit/cancel/get_stats. Pointers are valid only during the call. */
typedef void (*ms_event_fn)(void *user, const ms_event *events, int n_events);

typedef struct ms_engine_stats {
    int running;
    int waiting;
    int kv_blocks_used;
    int kv_blocks_total;
    uint64_t prefix_cache_queries; /* prompt tokens looked up in the prefix cache */
    uint64_t prefix_cache_hits;    /* prompt tokens found there */
    uint64_t preemptions;
    uint64_t prompt_tokens;     /* prompt tokens computed (not cached) */
    uint64_t generation_tokens;
    uint64_t steps;
} ms_engine_stats;

void ms_engine_params_default(ms_engine_params *params);
/* Creates the engine over a loaded model (the model must outlive it) and starts its step thread. */
ms_status ms_engine_create(ms_model *model, const ms_engine_params *params, ms_event_fn on_events, void *user,
                           ms_engine **out);
/* Queues a request; the prompt and stop ids are copied. */
ms_status ms_engine_submit(ms_engine *engine, const ms_request *request, uint64_t *id_out);
/* Cancels a request: its blocks are freed before the next step and a MS_FINISH_CANCELLED event is delivered. */
ms_status ms_engine_cancel(ms_engine *engine, uint64_t id);
ms_status ms_engine_get_stats(ms_engine *engine, ms_engine_stats *out);
/* Stops the step thread (cancelling what is in flight, delivering their events) and frees everything. */
void ms_engine_free(ms_engine *engine);

#ifdef __cplusplus
}
#endif
#endif /* MODELSERVE_ENGINE_H */
