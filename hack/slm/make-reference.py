#!/usr/bin/env python3
"""Reference vectors for SmolLM2-135M-Instruct (Q4_1) from llama.cpp, through llama-cpp-python.

Writes into worker/native/testdata/smollm2/:
  tokenize.json  token ids of a few hundred strings (unicode, whitespace runs, digits, code, special tokens), texts as
                 UTF-8 hex so that any byte string survives the JSON
  greedy.json    for 20 prompts: the prompt's ids, the greedy continuation (64 tokens, or up to and including the
                 first <|im_end|>), and the 32 largest last-position logits with their ids

llama.cpp's arithmetic depends on the SIMD of the machine that built it (GGML_NATIVE): an AVX-512 build and an AVX2
build give different greedy.json files. The committed one is from an AVX-512 build; the engine's exact mode for it is
MS_LLAMA_NUMERICS=llamacpp (llamacpp-avx2 for a file made by an AVX2 build; docs/slm.md).

Run with the cached venv's python (hack/slm/ensure-llama-cpp.sh prints it):
  $(hack/slm/ensure-llama-cpp.sh | tail -1) hack/slm/make-reference.py MODEL.gguf OUT_DIR
"""
import json
import random
import sys

import llama_cpp
import numpy as np

MODEL, OUT = sys.argv[1], sys.argv[2]
N_GREEDY = 64
TOP = 32
IM_END = 2


def tokenize_cases():
    fixed = [
        "", " ", "  ", "\n", "\n\n", "\t", " \t\n ", "Hello world", "Hello, world!", " Hello", "Hello ", "hello   world",
        "I'm here; you're there; they've gone; we'll see; he'd know; it's 'quoted'", "DON'T SHOUT'S", "o'clock",
        "12345", "3.14159", "1,000,000", "2024-11-23T18:40:00Z", "x1y22z333", " 42", "version 1.2.3-rc4", "0x7fff_ffff",
        "ⅫⅧ ① ٣ ३", "½ ¾ ²³", "naïve café résumé", "Ünïcödé", "Привет, мир!", "Γειά σου Κόσμε", "こんにちは世界",
        "你好，世界。", "안녕하세요", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "🙂🙃😀", "👩‍👩‍👧‍👦 family", "🇫🇷🇩🇪",
        "e\u0301 combining", "\u200b zero width", "\u00a0nbsp\u00a0", "\u3000ideographic space", "a\u2028b\u2029c",
        "tab\tseparated\tvalues", "line1\nline2\r\nline3", "    indented four", "trailing spaces    ", "mixed \t \n\t end",
        "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }", '{"key": [1, 2, 3], "b": null}',
        "SELECT * FROM users WHERE id = 42;", "<div class=\"x\">text</div>", "#include <stdio.h>", "a->b = c::d<e>();",
        "$HOME/.cache && echo $?", "x==y!=z<=w>=v", "!!!???...", "---===___", "@user #tag $100 %50 ^&*",
        "<|im_start|>user\nHi<|im_end|>", "<|endoftext|>", "<|im_start|><|im_end|>", "<repo_name>a<file_sep>b",
        "The quick brown fox jumps over the lazy dog.", "A" * 50, "ab" * 40, "😀" * 10, " " * 17 + "x", "\n" * 5 + "y",
        "CamelCaseIdentifierWithNumbers123And456", "snake_case_name = another_name_2", "http://example.com/a?b=c&d=e",
        "user@example.com", "C:\\Windows\\System32", "¿Qué tal? ¡Muy bien!", "Ça va? Où est-ce?", "straße Maß",
        "İstanbul ıi", "ﬁ ligature", "Ⅻ roman", "\u0000nul", "\x7fdel", "emoji at end 🎉", "🎉 emoji at start",
    ]
    fragments = ["the", " cat", "  ", "\n", "\t", "123", "4", " 56", "é", "日本", "🙂", "'s", "'ll", "(", ")", "{",
                 "}", ";", "::", "->", "_", "-", ".", ",", "x", "Hello", " World", "   ", "\r\n", "0", "١٢", "ß", "Ω",
                 "—", "…", "'", '"', "#", "$", "%", "<", ">", "=", "==", "!=", "+", "*", "/", "\\", "|", "&"]
    rng = random.Random(20261123)
    generated = ["".join(rng.choice(fragments) for _ in range(rng.randint(1, 12))) for _ in range(230)]
    cases = [(t, False) for t in fixed + generated]
    cases += [(t, True) for t in ["<|im_start|>user\nHi<|im_end|>", "<|im_start|><|im_end|>x<|endoftext|>",
                                  "a<|im_start|>b", "<|im_start|>system\nYou are kind.<|im_end|>\n"]]
    # Invalid UTF-8 (a lone continuation byte, a truncated sequence).
    raw = [(b"abc\x80def", False), (b"\xe6\x97", False), (b"ok\xff\xfe", False)]
    return [(t.encode("utf-8"), s) for t, s in cases] + raw


PROMPTS_USER = [
    "What is the capital of France?", "Write a haiku about autumn leaves.", "Explain recursion to a child.",
    "List three prime numbers greater than 100.", "Translate 'good morning' into Spanish and German.",
    "What is 17 times 23?", "Write a Python function that reverses a string.", "Give me a short tip for better sleep.",
    "Who wrote Pride and Prejudice?", "Summarise the water cycle in two sentences.",
    "What does HTTP stand for?", "Name a colour that rhymes with 'bed'.",
]
PROMPTS_RAW = [
    "Once upon a time", "The three laws of thermodynamics are", "def fibonacci(n):\n", "1, 2, 3, 5, 8, 13,",
    "The meaning of life is", "Paris is the capital of", "import numpy as np\n\nx = np.", "Dear Sir or Madam,\n\n",
]


def last_logits(llm):
    # The last evaluated token's logits straight from llama.cpp's output buffer (llama-cpp-python keeps .scores only
    # with logits_all=True, which would make llama.cpp compute the unembedding for every prompt token).
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()


def chatml(user):
    return ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n")


def main():
    # fp32 K/V (GGML_TYPE_F32 = 0), as our tests run the engine, so attention precision is not a difference between them.
    llm = llama_cpp.Llama(model_path=MODEL, n_ctx=512, n_batch=512, n_threads=2, seed=0, verbose=False, type_k=0, type_v=0)
    tok_cases = []
    for text, special in tokenize_cases():
        ids = llm.tokenize(text, add_bos=False, special=special)
        tok_cases.append({"hex": text.hex(), "special": special, "ids": ids})
    with open(f"{OUT}/tokenize.json", "w") as f:
        json.dump({"generator": "hack/slm/make-reference.py", "llama_cpp_python": llama_cpp.__version__,
                   "cases": tok_cases}, f, separators=(",", ":"))
        f.write("\n")

    greedy_cases = []
    for prompt in [chatml(p) for p in PROMPTS_USER] + PROMPTS_RAW:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        last = last_logits(llm)
        top = np.argsort(-last, kind="stable")[:TOP]
        out, alts, gaps = [], [], []
        logits = last
        for _ in range(N_GREEDY):
            order = np.argsort(-logits, kind="stable")[:5]
            t = int(order[0])
            out.append(t)
            # The runners-up and how far below the chosen token's logit each one was.
            alts.append([int(i) for i in order[1:]])
            gaps.append([round(float(logits[order[0]] - logits[i]), 5) for i in order[1:]])
            if t == IM_END:
                break
            llm.eval([t])
            logits = last_logits(llm)
        greedy_cases.append({"prompt_hex": prompt.encode("utf-8").hex(), "ids": ids, "greedy": out, "alts": alts, "gaps": gaps,
                             "top_ids": [int(i) for i in top], "top_logits": [round(float(last[i]), 5) for i in top]})
    with open(f"{OUT}/greedy.json", "w") as f:
        json.dump({"generator": "hack/slm/make-reference.py", "llama_cpp_python": llama_cpp.__version__,
                   "n_greedy": N_GREEDY, "stop_id": IM_END, "cases": greedy_cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(tok_cases)} tokenization cases and {len(greedy_cases)} greedy cases to {OUT}")


main()
