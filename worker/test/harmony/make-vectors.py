#!/usr/bin/env python3
"""Harmony rendering test vectors from the reference renderer (PyPI `openai-harmony`).

Each case is an OpenAI chat request (messages, tools, reasoning_effort) plus the token ids the reference renderer
produces for the assistant's next turn. The worker's TypeScript renderer must reproduce them exactly
(worker/test/harmony/render.test.ts).

Offline use: the reference reads o200k_base.tiktoken from TIKTOKEN_ENCODINGS_BASE. Make it first with
    npx tsx worker/test/harmony/make-o200k-vocab.ts .tmp/tiktoken
then
    pip install openai-harmony==0.0.8
    TIKTOKEN_ENCODINGS_BASE=$PWD/.tmp/tiktoken python3 worker/test/harmony/make-vectors.py > worker/test/harmony/vectors.json
"""

import json
import sys

from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    HarmonyEncodingName,
    Message,
    ReasoningEffort,
    Role,
    SystemContent,
    ToolDescription,
    load_harmony_encoding,
)

DATE = "2026-01-15"
EFFORTS = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM, "high": ReasoningEffort.HIGH}

WEATHER = {
    "name": "get_weather",
    "description": "Gets the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            "days": {"type": "integer", "description": "Forecast days", "default": 1},
        },
        "required": ["location"],
    },
}
SEARCH = {
    "name": "search_docs",
    "description": "Searches the documentation.\nReturns at most `limit` hits.",
    "parameters": {
        "type": "object",
        "description": "Search options",
        "properties": {
            "query": {"type": "string", "title": "Query", "examples": ["drain", "metrics"]},
            "limit": {"type": ["integer", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "filters": {
                "type": "object",
                "properties": {
                    "exact": {"type": "boolean", "default": False},
                    "since": {"type": "string", "description": "ISO date", "default": "2024-01-01"},
                    "scope": {"type": "object", "properties": {"repo": {"type": "string"}}, "required": ["repo"]},
                },
            },
            "mode": {
                "description": "Match mode",
                "oneOf": [
                    {"type": "string", "enum": ["any", "all"], "description": "word mode"},
                    {"type": "number", "description": "similarity threshold", "default": 0.5},
                ],
            },
            "anything": {},
            "list": {"type": "array"},
            "nullable": {"type": "string", "nullable": True},
        },
        "required": ["query"],
    },
}
NOW = {"name": "get_time", "description": "Current time."}

CASES = [
    {"name": "system+user", "messages": [{"role": "user", "content": "Hello there"}]},
    {
        "name": "system prompt becomes developer instructions",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2+2?"},
        ],
    },
    {
        "name": "developer role and content parts",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": [{"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}]},
        ],
    },
    {"name": "reasoning low", "reasoning_effort": "low", "messages": [{"role": "user", "content": "Quick one."}]},
    {"name": "reasoning high", "reasoning_effort": "high", "messages": [{"role": "user", "content": "Think hard."}]},
    {
        "name": "tools with instructions",
        "reasoning_effort": "high",
        "tools": [WEATHER, SEARCH, NOW],
        "messages": [
            {"role": "system", "content": "Use tools when useful."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
    },
    {
        "name": "tools without instructions",
        "tools": [NOW],
        "messages": [{"role": "user", "content": "What time is it?"}],
    },
    {
        "name": "multi-turn tool call and result (analysis kept)",
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "Weather in Tokyo?"},
            {
                "role": "assistant",
                "reasoning_content": "Need the weather tool.",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Tokyo, Japan"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature":21,"sky":"clear"}'},
        ],
    },
    {
        "name": "tool result answered, next user turn (analysis dropped)",
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "Weather in Tokyo?"},
            {
                "role": "assistant",
                "reasoning_content": "Need the weather tool.",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "21C"},
            {"role": "assistant", "reasoning_content": "Summarise.", "content": "It is 21C and clear."},
            {"role": "user", "content": "And tomorrow?"},
        ],
    },
    {
        "name": "history with analysis dropped",
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "reasoning_content": "Simple arithmetic.", "content": "4."},
            {"role": "user", "content": "And 9 / 2?"},
            {"role": "assistant", "reasoning_content": "Division.", "content": "4.5"},
            {"role": "user", "content": "Thanks! 😀 <|end|> literal"},
        ],
    },
    {
        "name": "preamble with tool call",
        "tools": [WEATHER, NOW],
        "messages": [
            {"role": "user", "content": "Time and weather?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Oslo"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "12:00"},
            {"role": "tool", "tool_call_id": "b", "content": "snow"},
        ],
    },
]


def text_of(content):
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content)


def to_harmony(case):
    tools = case.get("tools", [])
    instructions = []
    rest = []
    names = {}
    for m in case["messages"]:
        role = m["role"]
        if role in ("system", "developer"):
            instructions.append(text_of(m.get("content")))
        elif role == "user":
            rest.append(Message.from_role_and_content(Role.USER, text_of(m.get("content"))))
        elif role == "assistant":
            if m.get("reasoning_content"):
                rest.append(Message.from_role_and_content(Role.ASSISTANT, m["reasoning_content"]).with_channel("analysis"))
            calls = m.get("tool_calls") or []
            text = text_of(m.get("content"))
            if text or not calls:
                channel = "commentary" if calls else "final"
                rest.append(Message.from_role_and_content(Role.ASSISTANT, text).with_channel(channel))
            for call in calls:
                names[call["id"]] = call["function"]["name"]
                rest.append(
                    Message.from_role_and_content(Role.ASSISTANT, call["function"]["arguments"])
                    .with_channel("commentary")
                    .with_recipient("functions." + call["function"]["name"])
                    .with_content_type("<|constrain|>json")
                )
        elif role == "tool":
            name = "functions." + names[m["tool_call_id"]]
            rest.append(
                Message.from_author_and_content(Author.new(Role.TOOL, name), text_of(m.get("content")))
                .with_recipient("assistant")
                .with_channel("commentary")
            )
    system = SystemContent.new().with_conversation_start_date(DATE)
    system = system.with_reasoning_effort(EFFORTS[case.get("reasoning_effort", "medium")])
    out = [Message.from_role_and_content(Role.SYSTEM, system)]
    if instructions or tools:
        dev = DeveloperContent.new()
        if instructions:
            dev = dev.with_instructions("\n\n".join(instructions))
        if tools:
            dev = dev.with_function_tools(
                [ToolDescription.new(t["name"], t.get("description", ""), parameters=t.get("parameters")) for t in tools]
            )
        out.append(Message.from_role_and_content(Role.DEVELOPER, dev))
    return out + rest


def main():
    enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    vectors = []
    for case in CASES:
        tokens = enc.render_conversation_for_completion(Conversation.from_messages(to_harmony(case)), Role.ASSISTANT)
        vectors.append(
            {
                "name": case["name"],
                "request": {k: v for k, v in case.items() if k != "name"},
                "date": DATE,
                "tokens": list(tokens),
                "text": enc.decode_utf8(tokens),
            }
        )
    json.dump({"generator": "openai-harmony 0.0.8 render_conversation_for_completion", "cases": vectors}, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
