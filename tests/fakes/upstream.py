"""A fake LLM upstream: OpenAI Chat Completions, OpenAI Responses and Anthropic Messages on one
aiohttp server in its own thread and event loop (so blocking SDK clients and async tests can both
use it).

It answers like the real services (ids, usage, SSE framing, auth checks, error bodies, request
validation), records what it received, and can be scripted per request to fail, stall, reset
the connection, cut a stream, stream slowly, answer a stream with plain JSON or reply with custom
content. With `responses=False` its OpenAI side is a Chat-only compatible server (404 on
/v1/responses, like vLLM without it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import re
import secrets
import string
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

__all__ = [
    "ADMIN_KEY",
    "ANTHROPIC_KEY",
    "OPENAI_KEY",
    "CutStream",
    "Fail",
    "FakeUpstream",
    "Kind",
    "PlainJson",
    "RecordedRequest",
    "Reply",
    "Reset",
    "SlowStream",
    "Stall",
    "Step",
    "ToolCall",
    "anthropic_error_body",
    "openai_error_body",
]

OPENAI_KEY = "sk-openai-test"
ANTHROPIC_KEY = "sk-ant-test"
# What the Admin API (/v1/organization/*) takes instead of OPENAI_KEY.
ADMIN_KEY = "sk-admin-test"

# "openai" is Chat Completions, "responses" is OpenAI's Responses API, "platform" every
# route of _PlatformAPI (files, images, ...: only Fail steps apply there).
Kind = Literal["openai", "responses", "anthropic", "completions", "embeddings", "platform"]


# --- scripted steps: each one is consumed by exactly one chat/responses/messages request ---


@dataclass(frozen=True)
class Fail:
    """Answer with this status; the body defaults to the provider's own error shape."""

    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    message: str | None = None  # message in the default body


@dataclass(frozen=True)
class Stall:
    """Sleep before sending anything (first-byte timeouts); with after_chunks, stall mid-stream
    after that many SSE events instead."""

    seconds: float
    after_chunks: int | None = None


@dataclass(frozen=True)
class Reset:
    """Abort the TCP connection without any response."""


@dataclass(frozen=True)
class CutStream:
    """Send N SSE events, then drop the connection (no [DONE] / message_stop /
    response.completed). A non-streaming request gets its headers and half its body before the
    drop."""

    after_chunks: int


@dataclass(frozen=True)
class SlowStream:
    """Wait delay_s before every SSE event after the first."""

    delay_s: float


@dataclass(frozen=True)
class PlainJson:
    """Answer a streamed request with a plain `application/json` 200 instead of SSE: the whole
    non-streamed answer, or `body` if given (a misconfigured proxy or compatible server)."""

    body: bytes | None = None


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A custom answer. Token counts default to the fake's word counts; stop_reason is in the
    provider's own vocabulary (OpenAI finish_reason, Anthropic stop_reason, or a Responses
    incomplete_details.reason such as "max_output_tokens", which makes the response incomplete).

    cached_tokens are part of prompt_tokens: OpenAI reports them as cached_tokens, Anthropic as
    cache_read_input_tokens beside input_tokens = prompt_tokens - cached_tokens.
    reasoning_tokens (OpenAI only) are part of completion_tokens when given; left None, the
    Responses API thinks _THINKING_TOKENS tokens when the request sets reasoning.effort."""

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    stop_reason: str | None = None
    cached_tokens: int = 0
    reasoning_tokens: int | None = None


Step = Fail | Stall | Reset | CutStream | SlowStream | PlainJson | Reply


@dataclass(frozen=True)
class RecordedRequest:
    kind: Kind | None  # None for /v1/models and unknown paths
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; `accept` shows what a stream request asked for
    body: Any  # parsed JSON, None if the body was not JSON
    at: float  # time.monotonic() when it arrived
    raw: bytes = b""  # the body exactly as it arrived
    peer: str = ""  # the client's address and port: one per connection it came on


# --- wire helpers ---------------------------------------------------------------------------

_B62 = string.ascii_letters + string.digits

_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                       403: "invalid_request_error", 404: "invalid_request_error",
                       409: "invalid_request_error", 413: "invalid_request_error"}
# https://docs.anthropic.com/en/api/errors
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                          402: "billing_error", 403: "permission_error", 404: "not_found_error",
                          413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                          504: "timeout_error", 529: "overloaded_error"}


def _rand(n: int) -> str:
    return "".join(secrets.choice(_B62) for _ in range(n))


def openai_error_body(status: int, message: str, *, code: str | None = None,
                      param: str | None = None) -> bytes:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error")
    if status == 429 and code is None:
        code = "rate_limit_exceeded"
        kind = "requests"
    return json.dumps({"error": {"message": message, "type": kind, "param": param,
                                 "code": code}}).encode()


def anthropic_error_body(status: int, message: str) -> bytes:
    """Anthropic's error shape: {"type": "error", "error": {"type", "message"}}."""
    kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message},
                       "request_id": "req_" + _rand(24)}).encode()


def _json_response(status: int, body: bytes, headers: dict[str, str] | None = None
                   ) -> web.Response:
    return web.Response(status=status, body=body, headers=headers,
                        content_type="application/json")


def _mask(key: str) -> str:
    # OpenAI echoes a masked key; never the whole secret.
    return key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "****"


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _text_of(content: Any) -> str:
    """The plain text of a message's content (any of the three APIs' part shapes)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") in ("text", "input_text", "output_text"):
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(_text_of(block.get("content", "")))
    return " ".join(parts)


def _count_images(messages: list[Any]) -> int:
    count = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            count += sum(1 for b in content if isinstance(b, dict)
                         and b.get("type") in ("image", "image_url", "input_image"))
    return count


def _instance_of(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A deterministic minimal instance of a JSON schema: required properties (all if none
    are listed), the first enum value or anyOf branch, $refs into $defs followed."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 16:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target: Any = root
        for name in [p for p in ref[1:].split("/") if p]:
            target = target.get(name) if isinstance(target, dict) else None
        return _instance_of(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return _instance_of((usable or options)[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        names = schema.get("required") or list(props)
        return {name: _instance_of(props.get(name) or {"type": "string"}, root, depth + 1)
                for name in names}
    if kind == "array":
        return [_instance_of(schema.get("items") or {}, root, depth + 1)
                for _ in range(int(schema.get("minItems") or 0))]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "Paris")


def _args_for(schema: Any) -> dict[str, Any]:
    """Deterministic tool arguments from a JSON schema (see _instance_of)."""
    args = _instance_of(schema) if isinstance(schema, dict) else None
    return args if isinstance(args, dict) else {}


def _format_answer(schema: Any) -> str:
    """The text a structured-output request gets: JSON that its schema accepts."""
    return json.dumps(_instance_of(schema))


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _word_pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


# --- OpenAI Responses: the request shape (openai 3.57's ResponseCreateParams and input items) -
# https://platform.openai.com/docs/api-reference/responses/create

# client_metadata: sent by Codex CLI and accepted by the real API, though not in the SDK's params.
_RESPONSES_KEYS = frozenset({
    "client_metadata", "access_programs", "background", "background_options",
    "context_management", "conversation",
    "image", "include", "input", "instructions", "max_output_tokens", "max_tool_calls",
    "metadata", "model", "moderation", "parallel_tool_calls", "previous_response_id", "prompt",
    "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning",
    "safety_identifier", "service_tier", "store", "stream", "stream_options", "temperature",
    "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user"})
_ITEM_TYPES = (
    "message", "file_search_call", "computer_call", "computer_call_output", "web_search_call",
    "function_call", "function_call_output", "tool_search_call", "tool_search_output",
    "additional_tools", "configuration_update", "reasoning", "compaction",
    "image_generation_call", "code_interpreter_call", "local_shell_call",
    "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response",
    "mcp_call", "custom_tool_call_output", "custom_tool_call", "compaction_trigger",
    "item_reference", "program", "program_output")
# Every key of the items a translator writes is checked; other item kinds only by their type.
_ITEM_KEYS = {
    "message": frozenset({"type", "role", "content", "id", "status", "phase"}),
    "function_call": frozenset({"type", "call_id", "name", "arguments", "id", "status",
                                "namespace", "caller", "async"}),
    "function_call_output": frozenset({"type", "call_id", "output", "id", "status", "name",
                                       "namespace", "caller"}),
    "reasoning": frozenset({"type", "id", "summary", "content", "encrypted_content", "status"}),
    "item_reference": frozenset({"type", "id"}),
}
_FUNCTION_TOOL_KEYS = frozenset({"type", "name", "description", "parameters", "strict",
                                 "allowed_callers", "defer_loading", "output_schema", "async"})
_TOOL_TYPES = (
    "function", "file_search", "computer", "computer_use_preview", "web_search",
    "web_search_2025_08_26", "mcp", "code_interpreter", "programmatic_tool_calling",
    "image_generation", "local_shell", "shell", "custom", "namespace", "tool_search",
    "web_search_preview", "web_search_preview_2025_03_11", "apply_patch")
_INCLUDABLE = (
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url",
    "code_interpreter_call.outputs", "reasoning.encrypted_content",
    "message.output_text.logprobs")
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# In the order of the API's own "Supported values are" message.
_PART_TYPES = ("input_text", "input_image", "output_text", "refusal", "input_file",
               "computer_screenshot", "summary_text", "tether_browsing_display")
_INPUT_PARTS = ("input_text", "input_image", "input_file")
_OUTPUT_PARTS = ("output_text", "refusal")
_FORMAT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Reasoning tokens the fake spends when a request sets reasoning.effort (part of output_tokens).
_THINKING_TOKENS = 4
_THOUGHT = "**Thinking it over**\n\nThe user wants a short answer."

# (message, param, code) of a 400 in OpenAI's error shape
_Problem = tuple[str, str | None, str | None]


def _hex(n: int) -> str:
    return secrets.token_hex(n // 2)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", dict: "an object", list: "an array", int: "an integer",
            float: "a decimal"}.get(type(value), "null")


def _one_of(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) < 3:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _missing(param: str) -> _Problem:
    return f"Missing required parameter: '{param}'.", param, "missing_required_parameter"


def _bad_type(param: str, expected: str, got: Any) -> _Problem:
    return (f"Invalid type for '{param}': expected {expected}, but got {_json_kind(got)} "
            "instead.", param, "invalid_type")


def _bad_value(param: str, value: Any, supported: tuple[str, ...]) -> _Problem:
    return (f"Invalid value: '{value}'. Supported values are: {_one_of(supported)}.", param,
            "invalid_value")


def _unknown(param: str) -> _Problem:
    return f"Unknown parameter: '{param}'.", param, "unknown_parameter"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _out_of_range(param: str, value: Any, low: float, high: float) -> _Problem | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _bad_type(param, "a decimal", value)
    if value < low:
        return (f"Invalid '{param}': decimal below minimum value. Expected a value >= {low:g}, "
                f"but got {value:g} instead.", param, "decimal_below_min_value")
    if value > high:
        return (f"Invalid '{param}': decimal above maximum value. Expected a value <= {high:g}, "
                f"but got {value:g} instead.", param, "decimal_above_max_value")
    return None


def _not_strict(schema: Any, path: str = "()") -> str | None:
    """Why a schema is not usable with strict: true (every object closed, every property
    required), as the API words it; None if it is."""
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"In context={path}, 'additionalProperties' is required to be supplied and " \
                   "to be false."
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        for key in props:
            if key not in required:
                return f"In context={path}, 'required' is required to be supplied and to be " \
                       f"an array including every key in properties. Missing '{key}'."
        for key, sub in props.items():
            problem = _not_strict(sub, f"{path[:-1]}'properties', '{key}')")
            if problem:
                return problem
    children: list[Any] = [schema.get("items")]
    for key in ("anyOf", "oneOf", "allOf"):
        children += schema.get(key) or []
    for key in ("$defs", "definitions"):
        children += list((schema.get(key) or {}).values())
    for sub in children:
        problem = _not_strict(sub, path)
        if problem:
            return problem
    return None


def _item_kind(item: dict[str, Any]) -> Any:
    # The easy message form and item references may leave out their type.
    if "type" in item:
        return item["type"]
    if "role" in item:
        return "message"
    return "item_reference" if "id" in item else None


def _invalid_content(where: str, role: Any, content: Any) -> _Problem | None:
    if content is None:
        return _missing(f"{where}.content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return _bad_type(f"{where}.content", "one of a string or array of input content",
                         content)
    allowed = _OUTPUT_PARTS if role == "assistant" else _INPUT_PARTS
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict):
            return _bad_type(at, "an object", part)
        if kind not in _PART_TYPES:
            return _bad_value(f"{at}.type", kind, _PART_TYPES)
        if kind not in allowed:
            # e.g. an assistant turn written with input_text, a user turn with output_text
            return _bad_value(at, kind, allowed)
        if kind in ("input_text", "output_text") and not isinstance(part.get("text"), str):
            return _missing(f"{at}.text")
        if kind == "refusal" and not isinstance(part.get("refusal"), str):
            return _missing(f"{at}.refusal")
        if kind == "input_image" and not (part.get("image_url") or part.get("file_id")):
            return _missing(f"{at}.image_url")
    return None


def _invalid_items(items: list[Any], history: list[Any]) -> _Problem | None:
    """The input items' checks; `history` is what previous_response_id brings in."""
    calls: list[str] = []
    answered: set[str] = set()
    for item in history:
        if isinstance(item, dict) and item.get("type") == "function_call":
            calls.append(item.get("call_id", ""))
        elif isinstance(item, dict) and item.get("type") == "function_call_output":
            answered.add(item.get("call_id", ""))
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            return _bad_type(where, "an input item", item)
        kind = _item_kind(item)
        if kind is None:
            return _missing(f"{where}.type")
        if kind not in _ITEM_TYPES:
            return _bad_value(f"{where}.type", kind, _ITEM_TYPES)
        known = _ITEM_KEYS.get(kind, frozenset(item))
        for key in item:
            if key not in known:
                return _unknown(f"{where}.{key}")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                return _bad_value(f"{where}.role", role,
                                  ("user", "assistant", "system", "developer"))
            problem = _invalid_content(where, role, item.get("content"))
            if problem:
                return problem
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if key not in item:
                    return _missing(f"{where}.{key}")
            if not isinstance(item["arguments"], str):
                return _bad_type(f"{where}.arguments", "a string", item["arguments"])
            calls.append(item["call_id"])
        elif kind == "function_call_output":
            if not item.get("call_id"):
                return _missing(f"{where}.call_id")
            if "output" not in item:
                return _missing(f"{where}.output")
            if not isinstance(item["output"], (str, list)):
                return _bad_type(f"{where}.output", "one of a string or array of output content",
                                 item["output"])
            if item["call_id"] not in calls:
                return "No tool call found for function call output with call_id " \
                       f"{item['call_id']}.", "input", None
            answered.add(item["call_id"])
        elif kind == "reasoning":
            if not isinstance(item.get("id"), str):
                return _missing(f"{where}.id")
            if not isinstance(item.get("summary"), list):
                return _missing(f"{where}.summary")
            encrypted = item.get("encrypted_content")
            if encrypted is not None and not isinstance(encrypted, str):
                return _bad_type(f"{where}.encrypted_content", "a string", encrypted)
        elif kind == "item_reference" and not isinstance(item.get("id"), str):
            return _missing(f"{where}.id")
    for call_id in calls:
        if call_id not in answered:
            return f"No tool output found for function call {call_id}.", "input", None
    return None


def _invalid_tools(body: dict[str, Any]) -> _Problem | None:
    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        return _bad_type("tools", "an array", tools)
    names: list[str] = []
    for j, tool in enumerate(tools):
        at = f"tools[{j}]"
        if not isinstance(tool, dict):
            return _bad_type(at, "an object", tool)
        kind = tool.get("type")
        if kind not in _TOOL_TYPES:
            return _bad_value(f"{at}.type", kind, _TOOL_TYPES)
        if kind in ("function", "custom") and not tool.get("name"):
            # A Chat-style {"type": "function", "function": {...}} tool lands here.
            return _missing(f"{at}.name")
        if kind != "function":
            continue
        for key in tool:
            if key not in _FUNCTION_TOOL_KEYS:
                return _unknown(f"{at}.{key}")
        params = tool.get("parameters")
        if params is not None and not isinstance(params, dict):
            return _bad_type(f"{at}.parameters", "an object", params)
        if tool.get("strict") is True:
            problem = _not_strict(params or {"type": "object", "properties": {}})
            if problem:
                return f"Invalid schema for function '{tool['name']}': {problem}", \
                       f"{at}.parameters", "invalid_function_parameters"
        names.append(tool["name"])
    choice = body.get("tool_choice")
    if choice is None or choice == "auto" or choice == "none":
        return None
    if isinstance(choice, str):
        if choice != "required":
            return _bad_value("tool_choice", choice, ("none", "auto", "required"))
        if not tools:
            return "Tool choice 'required' must be specified with 'tools' parameter.", \
                   "tool_choice", None
    elif isinstance(choice, dict) and choice.get("type") == "function":
        if not choice.get("name"):
            return _missing("tool_choice.name")
        if choice["name"] not in names:
            return f"Tool choice 'function' with name '{choice['name']}' not found in 'tools' " \
                   "parameter.", "tool_choice", None
    elif not isinstance(choice, dict):
        return _bad_type("tool_choice", "one of a string or object", choice)
    return None


def _invalid_format(body: dict[str, Any], items: list[Any]) -> _Problem | None:
    text = body.get("text")
    if text is None:
        return None
    if not isinstance(text, dict):
        return _bad_type("text", "an object", text)
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        return _bad_type("text.format", "an object", fmt)
    kind = fmt.get("type")
    if kind not in ("text", "json_schema", "json_object"):
        return _bad_value("text.format.type", kind, ("text", "json_schema", "json_object"))
    if kind == "json_schema":
        # A Chat-style {"type": "json_schema", "json_schema": {...}} format lands here.
        if not isinstance(fmt.get("name"), str):
            return _missing("text.format.name")
        if not _FORMAT_NAME.match(fmt["name"]):
            return "Invalid 'text.format.name': string does not match pattern. Expected a " \
                   "string that matches the pattern '^[a-zA-Z0-9_-]+$'.", "text.format.name", \
                   "invalid_value"
        if not isinstance(fmt.get("schema"), dict):
            return _missing("text.format.schema")
        if fmt.get("strict") is True:
            problem = _not_strict(fmt["schema"])
            if problem:
                return f"Invalid schema for response_format '{fmt['name']}': {problem}", \
                       "text.format.schema", "invalid_json_schema"
    if kind == "json_object":
        words = " ".join([str(body.get("instructions") or "")]
                         + [_text_of(i.get("content")) for i in items if isinstance(i, dict)])
        if "json" not in words.lower():
            return "Response input messages must contain the word 'json' in some form to use " \
                   "'text.format' of type 'json_object'.", "input", None
    return None


def _items_of(body: dict[str, Any]) -> list[Any]:
    """The input as a list of items (a plain string is one user message)."""
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return value if isinstance(value, list) else []


def _item_text(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    kind = _item_kind(item)
    if kind == "function_call":
        return str(item.get("arguments", ""))
    if kind == "function_call_output":
        return _text_of(item.get("output"))
    return _text_of(item.get("content"))


def _default_responses(body: dict[str, Any], items: list[Any]) -> Reply:
    """The Responses twin of the chat default: quote a tool's output, call a tool when asked
    ("call tool..." or a forcing tool_choice), answer a text.format, else echo."""
    last = items[-1] if items and isinstance(items[-1], dict) else {}
    if _item_kind(last) == "function_call_output":
        return Reply(text="The tool said: " + _text_of(last.get("output")))
    text = _text_of(last.get("content")) if _item_kind(last) == "message" else ""
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    choice = body.get("tool_choice")
    forced = choice == "required" or (isinstance(choice, dict)
                                      and choice.get("type") == "function")
    if tools and choice != "none" and (text.startswith("call tool") or forced):
        fn = tools[0]
        if isinstance(choice, dict) and choice.get("type") == "function":
            fn = next((t for t in tools if t.get("name") == choice.get("name")), fn)
        return Reply(tool_calls=(ToolCall(fn["name"], _args_for(fn.get("parameters"))),))
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        return Reply(text=_format_answer(fmt.get("schema")))
    if fmt.get("type") == "json_object":
        return Reply(text=json.dumps({"echo": text}))
    images = _count_images(items)
    return Reply(text=f"echo: {text}" + (f" [{images} image(s)]" if images else ""))


def _response_object(body: dict[str, Any], rid: str, created: int, status: str,
                     output: list[Any], usage: dict[str, Any] | None,
                     incomplete: str | None) -> dict[str, Any]:
    """A Response as the API returns it: the request's settings echoed with their defaults."""
    reasoning = body.get("reasoning") or {}
    text = body.get("text") or {}
    tools = [dict(t, strict=t.get("strict", True), description=t.get("description"))
             if t.get("type") == "function" else t for t in body.get("tools") or []]
    return {
        "id": rid, "object": "response", "created_at": created, "status": status,
        "background": False, "completed_at": created if status == "completed" else None,
        "error": None, "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"), "model": body["model"], "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"), "service_tier": "default",
        "store": body.get("store") is not False, "temperature": body.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"},
                 "verbosity": text.get("verbosity", "medium")},
        "tool_choice": body.get("tool_choice", "auto"), "tools": tools,
        "top_logprobs": body.get("top_logprobs", 0), "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"), "usage": usage,
        "user": body.get("user"), "metadata": body.get("metadata") or {},
    }


@dataclass(frozen=True)
class _Answer:
    text: str | None
    tool_calls: tuple[ToolCall, ...]
    prompt_tokens: int
    completion_tokens: int
    stop_reason: str | None
    cached_tokens: int = 0
    reasoning_tokens: int = 0


# --- the server -----------------------------------------------------------------------------


class FakeUpstream:
    """`with FakeUpstream() as up:` serves all three APIs on a free 127.0.0.1 port until exit.

    `responses=False` (or setting `up.responses = False` in a test) makes the OpenAI side a
    Chat-only compatible server: /v1/responses answers 404, records the request and consumes
    no scripted step."""

    def __init__(self, *, openai_key: str = OPENAI_KEY, anthropic_key: str = ANTHROPIC_KEY,
                 models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini"),
                 responses: bool = True) -> None:
        self.openai_key = openai_key
        self.anthropic_key = anthropic_key
        self.models = models
        self.responses = responses
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._disconnects = 0
        self._queues: dict[Kind | None, deque[Step]] = {None: deque(), "openai": deque(),
                                                         "responses": deque(),
                                                         "anthropic": deque(),
                                                         "completions": deque(),
                                                         "embeddings": deque(),
                                                         "platform": deque()}
        # Stored responses (store: true, the API's default) for previous_response_id: the
        # conversation each one ends, its input items followed by its output items.
        self._stored: dict[str, list[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._startup_error: BaseException | None = None
        self.platform = _PlatformAPI(self)

    # addresses

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # control (called from the test's thread)

    def script(self, *steps: Step, kind: Kind | None = None) -> None:
        """Queue steps, each consumed by one request of that kind (None: any kind). A request
        takes from its own kind's queue first, then from the shared one."""
        with self._lock:
            self._queues[kind].extend(steps)

    @property
    def pending(self) -> int:
        """Steps not yet consumed."""
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, kind: Kind) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == kind]

    @property
    def disconnects(self) -> int:
        """Handlers that ended because the client went away (or stop() cancelled them)."""
        with self._lock:
            return self._disconnects

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until n requests arrived (for tests whose request is in another thread)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests
            if len(got) >= n:
                return got
            time.sleep(0.01)
        raise TimeoutError(f"fake upstream saw {len(self.requests)} requests, wanted {n}")

    def reset(self) -> None:
        """Forget recorded requests, unconsumed steps and stored responses."""
        with self._lock:
            self._requests.clear()
            self._disconnects = 0
            self._stored.clear()
            for q in self._queues.values():
                q.clear()

    def _next_step(self, kind: Kind) -> Step | None:
        with self._lock:
            for q in (self._queues[kind], self._queues[None]):
                if q:
                    return q.popleft()
        return None

    # lifecycle

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,),
                                        name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10) or self._startup_error is not None:
            self.stop()
            raise RuntimeError("fake upstream did not start") from self._startup_error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel open handlers (stalled ones too), close the server, join the thread."""
        loop, thread = self._loop, self._thread
        self._thread = None
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        elif thread is not None:
            thread.join(timeout)
        self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/v1/chat/completions", self._tracked("openai", self._openai))
            app.router.add_post("/v1/responses", self._tracked("responses", self._responses))
            app.router.add_post("/v1/messages", self._tracked("anthropic", self._anthropic))
            app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
            app.router.add_post("/v1/completions",
                                self._tracked("completions", self._completions))
            app.router.add_post("/v1/embeddings", self._tracked("embeddings", self._embeddings))
            app.router.add_get("/v1/models", self._models)
            self.platform.add_routes(app)
            # handler_cancellation: a client that goes away cancels its handler, which is how
            # tests see that the gateway gave up on an upstream request.
            runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                   shutdown_timeout=0.2, handler_cancellation=True)
            self._runner = runner
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = int(runner.addresses[0][1])
        except BaseException as exc:  # noqa: BLE001 - re-raised by start() in the caller's thread
            self._startup_error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            # Stalled or streaming handlers would otherwise keep cleanup waiting.
            for task in list(self._handlers):
                task.cancel()
            # Connections still open after the wait are cut below with their tasks.
            with contextlib.suppress(TimeoutError):
                loop.run_until_complete(asyncio.wait_for(runner.cleanup(), 3))
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=1))
            loop.close()

    # request plumbing (server thread)

    def _tracked(self, kind: Kind, handler: Callable[[web.Request, Any, Step | None],
                                                     Awaitable[web.StreamResponse]]
                 ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            try:
                body = await self._record(kind, request)
                if kind == "responses" and not self.responses:
                    # What a Chat-only server (FastAPI's default, e.g. vLLM) says.
                    return web.json_response({"detail": "Not Found"}, status=404)
                return await handler(request, body, self._next_step(kind))
            except asyncio.CancelledError:
                self._count_disconnect()
                raise
            finally:
                self._handlers.discard(task)

        return wrapped

    def _count_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1

    async def _record(self, kind: Kind | None, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        rec = RecordedRequest(kind, request.method, request.path,
                              {k.lower(): v for k, v in request.headers.items()}, body,
                              time.monotonic(), raw, f"{peer[0]}:{peer[1]}" if peer else "")
        with self._lock:
            self._requests.append(rec)
        return body

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(None, request)
        if request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return self._openai_unauthorized(request)
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"}
            for m in self.models]})

    async def _apply_fault(self, request: web.Request, step: Step | None,
                           error: Callable[[int, str], bytes]) -> web.StreamResponse | None:
        """Play a fault step before any answer; None means go on and answer."""
        if isinstance(step, Stall) and step.after_chunks is None:
            await asyncio.sleep(step.seconds)
        elif isinstance(step, Reset):
            # The response returned after the abort is never written: aiohttp sees the closed
            # transport and drops it quietly.
            self._abort(request)
            return web.Response(status=500)
        elif isinstance(step, Fail):
            body = step.body
            if body is None:
                body = error(step.status, step.message or f"scripted failure {step.status}")
            return _json_response(step.status, body, step.headers)
        return None

    @staticmethod
    def _abort(request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()

    async def _send_json(self, request: web.Request, payload: dict[str, Any],
                         step: Step | None) -> web.StreamResponse:
        body = json.dumps(payload).encode()
        if isinstance(step, PlainJson) and step.body is not None:
            body = step.body
        if not isinstance(step, CutStream):
            return web.Response(body=body, content_type="application/json")
        # Headers promise the full length; half arrives; then the connection drops.
        resp = web.StreamResponse(headers={"content-type": "application/json"})
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[:len(body) // 2])
        await asyncio.sleep(0.05)
        self._abort(request)
        return resp

    async def _send_sse(self, request: web.Request, events: list[bytes],
                        step: Step | None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache"})
        await resp.prepare(request)
        for i, event in enumerate(events):
            if isinstance(step, CutStream) and i >= step.after_chunks:
                await asyncio.sleep(0.05)  # let the sent events leave before the drop
                self._abort(request)
                return resp
            if isinstance(step, Stall) and step.after_chunks == i:
                await asyncio.sleep(step.seconds)
            if isinstance(step, SlowStream) and i > 0:
                await asyncio.sleep(step.delay_s)
            try:
                await resp.write(event)
            except ConnectionResetError:
                # The client went away mid-stream; returning lets aiohttp drop it quietly.
                self._count_disconnect()
                return resp
        # As real providers' often does, the body's last chunk comes in a packet of its own,
        # after the end event.
        await asyncio.sleep(0.005)
        await resp.write_eof()
        return resp

    def _answer(self, step: Step | None, default: Callable[[], Reply], prompt_tokens: int,
                max_tokens: Any, length_reason: str, thinking: int = 0) -> _Answer:
        """The answer to give: the scripted Reply or the default one, cut to max_tokens.
        `thinking` is the default reasoning_tokens, spent before the visible answer."""
        reply = step if isinstance(step, Reply) else default()
        reasoning = reply.reasoning_tokens if reply.reasoning_tokens is not None else thinking
        budget = max_tokens - reasoning if isinstance(max_tokens, int) \
            and not isinstance(max_tokens, bool) else None
        if (not isinstance(step, Reply) and reply.text and budget is not None
                and max_tokens > 0 and budget < _words(reply.text)):
            # One word is one token here, so a small max_tokens cuts the answer like the
            # real services do (finish_reason "length" / stop_reason "max_tokens" /
            # incomplete_details.reason "max_output_tokens").
            reply = Reply(text=" ".join(reply.text.split(" ")[:max(budget, 0)]) or None,
                          stop_reason=length_reason)
        completion = reply.completion_tokens
        if completion is None:
            completion = reasoning + max(1, (_words(reply.text) if reply.text else 0) + sum(
                _words(json.dumps(t.arguments)) for t in reply.tool_calls))
        return _Answer(reply.text, reply.tool_calls,
                       reply.prompt_tokens if reply.prompt_tokens is not None else prompt_tokens,
                       completion, reply.stop_reason, reply.cached_tokens, reasoning)

    # --- OpenAI ---------------------------------------------------------------------------

    def _openai_unauthorized(self, request: web.Request) -> web.Response:
        header = request.headers.get("authorization")
        if not header:
            return _json_response(401, openai_error_body(
                401, "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username and password. You can "
                "obtain an API key from https://platform.openai.com/account/api-keys."))
        key = header.removeprefix("Bearer ").strip()
        return _json_response(401, openai_error_body(
            401, f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.", code="invalid_api_key"))

    @staticmethod
    def _invalid_openai(body: Any) -> tuple[str, str | None] | None:
        """(message, param) for the request checks the real API makes, else None."""
        if not isinstance(body, dict):
            return "We could not parse the JSON body of your request.", None
        if not body.get("model"):
            return "you must provide a model parameter", None
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "[] is too short - 'messages'", "messages"
        pending: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in ("system", "developer", "user", "assistant", "tool", "function"):
                return f"Invalid value: '{role}'. Supported values are: 'system', " \
                       "'assistant', 'user', 'function', 'tool', and 'developer'.", \
                       f"messages[{i}].role"
            if role == "tool":
                call_id = m.get("tool_call_id")
                if call_id not in pending:
                    return "Invalid parameter: messages with role 'tool' must be a response " \
                           "to a preceeding message with 'tool_calls'.", \
                           f"messages.[{i}].role"
                pending.discard(call_id)
                continue
            if pending:
                missing = ", ".join(sorted(pending))
                return "An assistant message with 'tool_calls' must be followed by tool " \
                       "messages responding to each 'tool_call_id'. The following " \
                       f"tool_call_ids did not have response messages: {missing}", "messages"
            if role == "assistant":
                pending = {c.get("id") for c in m.get("tool_calls") or []}
        if pending:
            return "An assistant message with 'tool_calls' must be followed by tool messages " \
                   "responding to each 'tool_call_id'.", "messages"
        for j, tool in enumerate(body.get("tools") or []):
            # GPT-5's freeform tools: {"type": "custom", "custom": {"name", "format"?}}.
            if isinstance(tool, dict) and tool.get("type") == "custom":
                if not isinstance(tool.get("custom"), dict) or not tool["custom"].get("name"):
                    return f"Missing required parameter: 'tools[{j}].custom'.", f"tools[{j}]"
                continue
            if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict) \
                    or not tool["function"].get("name"):
                return "Missing required parameter: 'tools[0].function'.", f"tools[{j}]"
        return None

    def _default_openai(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        last = messages[-1]
        if last.get("role") == "tool":
            return Reply(text="The tool said: " + _text_of(last.get("content")))
        text = _text_of(last.get("content"))
        tools = [t["function"] for t in body.get("tools") or [] if "function" in t]
        choice = body.get("tool_choice")
        if tools and choice != "none" and (text.startswith("call tool")
                                            or choice == "required" or isinstance(choice, dict)):
            fn = tools[0]
            if isinstance(choice, dict):
                name = (choice.get("function") or {}).get("name")
                fn = next((t for t in tools if t.get("name") == name), fn)
            return Reply(tool_calls=(ToolCall(fn["name"], _args_for(fn.get("parameters"))),))
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return Reply(text=_format_answer((fmt.get("json_schema") or {}).get("schema")))
        images = _count_images(messages)
        return Reply(text=f"echo: {text}" + (f" [{images} image(s)]" if images else ""))

    async def _completions(self, request: web.Request, body: Any, step: Step | None
                           ) -> web.StreamResponse:
        """The legacy completions API: "echo: <prompt>" as text, usage, SSE when asked."""
        failed = await self._apply_fault(request, step, openai_error_body)
        if failed is not None:
            return failed
        if request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return self._openai_unauthorized(request)
        if not isinstance(body, dict) or not body.get("model"):
            return _json_response(400, openai_error_body(
                400, "you must provide a model parameter", param="model"))
        prompt = body.get("prompt")
        if prompt is None or prompt == "" or prompt == []:
            return _json_response(400, openai_error_body(
                400, "you must provide a prompt parameter", param="prompt"))
        text_in = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        reply = step if isinstance(step, Reply) else Reply(text=f"echo: {text_in}")
        text = reply.text or ""
        prompt_tokens = reply.prompt_tokens or _words(text_in)
        completion_tokens = reply.completion_tokens or _words(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        cid, created, model = "cmpl-" + _rand(29), int(time.time()), body["model"]
        finish = reply.stop_reason or "stop"
        if not body.get("stream") or isinstance(step, PlainJson):
            return await self._send_json(request, {
                "id": cid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None,
                             "finish_reason": finish}], "usage": usage}, step)

        def chunk(choices: list[Any], usage_: Any = None) -> bytes:
            return b"data: " + json.dumps({
                "id": cid, "object": "text_completion", "created": created, "model": model,
                "choices": choices, "usage": usage_}).encode() + b"\n\n"
        events = [chunk([{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}])
                  for piece in _word_pieces(text)]
        events.append(chunk([{"text": "", "index": 0, "logprobs": None,
                              "finish_reason": finish}]))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            events.append(chunk([], usage))
        events.append(b"data: [DONE]\n\n")
        return await self._send_sse(request, events, step)

    async def _embeddings(self, request: web.Request, body: Any, step: Step | None
                          ) -> web.StreamResponse:
        """Deterministic 8-dimensional vectors (from each input's hash), as floats or as
        base64 little-endian float32 per encoding_format, with usage."""
        failed = await self._apply_fault(request, step, openai_error_body)
        if failed is not None:
            return failed
        if request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return self._openai_unauthorized(request)
        if not isinstance(body, dict) or not body.get("model"):
            return _json_response(400, openai_error_body(
                400, "you must provide a model parameter", param="model"))
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs
                                       and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not inputs or not isinstance(inputs, list) or any(i in ("", []) for i in inputs):
            return _json_response(400, openai_error_body(
                400, "'input' : input must be a non-empty string or array", param="input"))
        data: list[Any] = []
        tokens = 0
        for index, item in enumerate(inputs):
            tokens += len(item) if isinstance(item, list) else _words(str(item))
            digest = hashlib.sha256(json.dumps(item).encode()).digest()
            vector = [round((b - 128) / 128, 4) for b in digest[:8]]
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        return await self._send_json(request, {
            "object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, step)

    async def _openai(self, request: web.Request, body: Any, step: Step | None
                      ) -> web.StreamResponse:
        failed = await self._apply_fault(request, step, openai_error_body)
        if failed is not None:
            return failed
        if request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return self._openai_unauthorized(request)
        problem = self._invalid_openai(body)
        if problem is not None:
            return _json_response(400, openai_error_body(400, problem[0], param=problem[1]))
        prompt_words = _words(" ".join(_text_of(m.get("content")) for m in body["messages"]))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        ans = self._answer(step, lambda: self._default_openai(body), prompt_words, limit,
                           "length")
        cid = "chatcmpl-" + _rand(29)
        created = int(time.time())
        model = body["model"]
        finish = ans.stop_reason or ("tool_calls" if ans.tool_calls else "stop")
        calls = [("call_" + _rand(24), t) for t in ans.tool_calls]
        usage = {"prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens,
                 "total_tokens": ans.prompt_tokens + ans.completion_tokens,
                 "prompt_tokens_details": {"cached_tokens": ans.cached_tokens,
                                           "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": ans.reasoning_tokens,
                                               "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0,
                                               "rejected_prediction_tokens": 0}}
        if not body.get("stream") or isinstance(step, PlainJson):
            message: dict[str, Any] = {"role": "assistant", "content": ans.text,
                                       "refusal": None, "annotations": []}
            if calls:
                message["tool_calls"] = [
                    {"id": cid_, "type": "function",
                     "function": {"name": t.name, "arguments": json.dumps(t.arguments)}}
                    for cid_, t in calls]
            return await self._send_json(request, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": finish}],
                "usage": usage, "service_tier": "default", "system_fingerprint": "fp_fake0001"},
                step)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "service_tier": "default", "system_fingerprint": "fp_fake0001",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}]}
            if include_usage:
                data["usage"] = None  # OpenAI sends null on every chunk but the last
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if ans.text:
            events += [chunk({"content": w}) for w in _word_pieces(ans.text)]
        for index, (call_id, t) in enumerate(calls):
            events.append(chunk({"tool_calls": [{
                "index": index, "id": call_id, "type": "function",
                "function": {"name": t.name, "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
                       for p in _pieces(json.dumps(t.arguments), 8)]
        events.append(chunk({}, finish))
        if include_usage:
            events.append(b"data: " + json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "service_tier": "default", "system_fingerprint": "fp_fake0001",
                "choices": [], "usage": usage}).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return await self._send_sse(request, events, step)

    # --- OpenAI Responses -----------------------------------------------------------------

    def _history(self, previous: Any) -> list[Any] | None:
        """The conversation a stored response ended (empty without previous_response_id;
        None when that id is unknown or was not stored)."""
        if previous is None:
            return []
        with self._lock:
            stored = self._stored.get(previous) if isinstance(previous, str) else None
        return None if stored is None else list(stored)

    def _invalid_responses(self, body: Any) -> _Problem | None:
        """The request checks the real API makes that catch translation bugs."""
        if not isinstance(body, dict):
            return "We could not parse the JSON body of your request. (HINT: This likely " \
                   "means you aren't using your HTTP library correctly. The OpenAI API " \
                   "expects a JSON payload, but what was sent was not valid JSON.", None, None
        for key in body:
            if key not in _RESPONSES_KEYS:
                return _unknown(key)  # e.g. Chat's messages or max_tokens forwarded as is
        if not body.get("model"):
            return _missing("model")
        previous = body.get("previous_response_id")
        history = self._history(previous)
        if history is None:
            return f"Previous response with id '{previous}' not found.", \
                   "previous_response_id", "previous_response_not_found"
        value = body.get("input")
        if value is None:
            if previous is None and not body.get("conversation") and not body.get("prompt"):
                return _missing("input")
        elif not isinstance(value, (str, list)):
            return _bad_type("input", "one of a string or array of input items", value)
        items = _items_of(body)
        problem = _invalid_items(items, history)
        if problem:
            return problem
        limit = body.get("max_output_tokens")
        if limit is not None and not _is_int(limit):
            return _bad_type("max_output_tokens", "an integer", limit)
        if limit is not None and limit < 16:
            return "Invalid 'max_output_tokens': integer below minimum value. Expected a value " \
                   f">= 16, but got {limit} instead.", "max_output_tokens", \
                   "integer_below_min_value"
        problem = _out_of_range("temperature", body.get("temperature"), 0, 2) \
            or _out_of_range("top_p", body.get("top_p"), 0, 1) \
            or _invalid_tools(body) or _invalid_format(body, items)
        if problem:
            return problem
        reasoning = body.get("reasoning")
        if reasoning is not None:
            if not isinstance(reasoning, dict):
                return _bad_type("reasoning", "an object", reasoning)
            effort = reasoning.get("effort")
            if effort is not None and effort not in _EFFORTS:
                return _bad_value("reasoning.effort", effort, _EFFORTS)
            summary = reasoning.get("summary")
            if summary is not None and summary not in ("auto", "concise", "detailed"):
                return _bad_value("reasoning.summary", summary, ("auto", "concise", "detailed"))
        include = body.get("include") or []
        if not isinstance(include, list):
            return _bad_type("include", "an array", include)
        for k, name in enumerate(include):
            if name not in _INCLUDABLE:
                return _bad_value(f"include[{k}]", name, _INCLUDABLE)
        return None

    async def _responses(self, request: web.Request, body: Any, step: Step | None
                         ) -> web.StreamResponse:
        failed = await self._apply_fault(request, step, openai_error_body)
        if failed is not None:
            return failed
        if request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return self._openai_unauthorized(request)
        problem = self._invalid_responses(body)
        if problem is not None:
            return _json_response(400, openai_error_body(400, problem[0], param=problem[1],
                                                         code=problem[2]))
        items = _items_of(body)
        history = self._history(body.get("previous_response_id")) or []
        prompt_words = _words(" ".join([str(body.get("instructions") or "")]
                                       + [_item_text(i) for i in history + items]))
        reasoning = body.get("reasoning") or {}
        thinks = reasoning.get("effort") not in (None, "none")
        ans = self._answer(step, lambda: _default_responses(body, items), prompt_words,
                           body.get("max_output_tokens"), "max_output_tokens",
                           _THINKING_TOKENS if thinks else 0)
        # Any other stop reason is an incomplete_details.reason (max_output_tokens,
        # content_filter).
        incomplete = ans.stop_reason if ans.stop_reason not in (None, "completed") else None
        output: list[dict[str, Any]] = []
        if thinks:
            encrypted = "gAAAAAB" + _rand(120) \
                if "reasoning.encrypted_content" in (body.get("include") or []) else None
            output.append({"id": "rs_" + _hex(48), "type": "reasoning",
                           "summary": [{"type": "summary_text", "text": _THOUGHT}]
                           if reasoning.get("summary") else [],
                           "encrypted_content": encrypted})
        if ans.text is not None or not ans.tool_calls:
            output.append({"id": "msg_" + _hex(48), "type": "message",
                           "status": "incomplete" if incomplete else "completed",
                           "role": "assistant",
                           "content": [{"type": "output_text", "annotations": [],
                                        "logprobs": [], "text": ans.text or ""}]})
        output += [{"id": "fc_" + _hex(48), "type": "function_call", "status": "completed",
                    "arguments": json.dumps(t.arguments), "call_id": "call_" + _rand(24),
                    "name": t.name} for t in ans.tool_calls]
        usage = {"input_tokens": ans.prompt_tokens,
                 "input_tokens_details": {"cached_tokens": ans.cached_tokens,
                                          "cache_write_tokens": 0},
                 "output_tokens": ans.completion_tokens,
                 "output_tokens_details": {"reasoning_tokens": ans.reasoning_tokens},
                 "total_tokens": ans.prompt_tokens + ans.completion_tokens}
        rid = "resp_" + _hex(48)
        created = int(time.time())
        final = _response_object(body, rid, created, "incomplete" if incomplete else "completed",
                                 output, usage, incomplete)
        if body.get("store") is not False:
            with self._lock:
                self._stored[rid] = history + items + output
        if not body.get("stream") or isinstance(step, PlainJson):
            return await self._send_json(request, final, step)

        numbers = itertools.count()
        # Delta events carry random padding unless the client turned it off.
        obfuscate = (body.get("stream_options") or {}).get("include_obfuscation", True)

        def ev(kind: str, **data: Any) -> bytes:
            if obfuscate and kind.endswith(".delta"):
                data["obfuscation"] = _rand(8)
            payload = {"type": kind, **data, "sequence_number": next(numbers)}
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

        start = dict(final, status="in_progress", output=[], usage=None, completed_at=None,
                     incomplete_details=None)
        events = [ev("response.created", response=start),
                  ev("response.in_progress", response=start)]
        for index, item in enumerate(output):
            at: dict[str, Any] = {"item_id": item["id"], "output_index": index}
            if item["type"] == "reasoning":
                events.append(ev("response.output_item.added", output_index=index,
                                 item=dict(item, summary=[], encrypted_content=None)))
                for k, part in enumerate(item["summary"]):
                    events.append(ev("response.reasoning_summary_part.added", **at,
                                     summary_index=k, part=dict(part, text="")))
                    events += [ev("response.reasoning_summary_text.delta", **at,
                                  summary_index=k, delta=w) for w in _word_pieces(part["text"])]
                    events.append(ev("response.reasoning_summary_text.done", **at,
                                     summary_index=k, text=part["text"]))
                    events.append(ev("response.reasoning_summary_part.done", **at,
                                     summary_index=k, part=part))
            elif item["type"] == "message":
                part = item["content"][0]
                events.append(ev("response.output_item.added", output_index=index,
                                 item=dict(item, status="in_progress", content=[])))
                events.append(ev("response.content_part.added", **at, content_index=0,
                                 part=dict(part, text="")))
                if part["text"]:
                    events += [ev("response.output_text.delta", **at, content_index=0,
                                  delta=w, logprobs=[]) for w in _word_pieces(part["text"])]
                events.append(ev("response.output_text.done", **at, content_index=0,
                                 text=part["text"], logprobs=[]))
                events.append(ev("response.content_part.done", **at, content_index=0,
                                 part=part))
            else:
                events.append(ev("response.output_item.added", output_index=index,
                                 item=dict(item, status="in_progress", arguments="")))
                events += [ev("response.function_call_arguments.delta", **at, delta=p)
                           for p in _pieces(item["arguments"], 8)]
                events.append(ev("response.function_call_arguments.done", **at,
                                 arguments=item["arguments"]))
            events.append(ev("response.output_item.done", output_index=index, item=item))
        events.append(ev("response.incomplete" if incomplete else "response.completed",
                         response=final))
        return await self._send_sse(request, events, step)

    # --- Anthropic ------------------------------------------------------------------------

    @staticmethod
    def _invalid_anthropic(body: Any) -> str | None:
        """The checks the real API makes that catch translation bugs."""
        if not isinstance(body, dict):
            return "There was an issue with your request body: expected a JSON object"
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                return f"{key}: Field required"
        if not isinstance(body["max_tokens"], int) or isinstance(body["max_tokens"], bool) \
                or body["max_tokens"] < 1:
            return "max_tokens: Input should be a valid integer greater than or equal to 1"
        system = body.get("system")
        if system is not None and not isinstance(system, str) and (
                not isinstance(system, list) or any(
                    not isinstance(b, dict) or b.get("type") != "text"
                    or not isinstance(b.get("text"), str) for b in system)):
            return "system: Input should be a valid string or a list of text blocks"
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 1:
            return "temperature: range: 0..1"
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        if not isinstance(messages[0], dict) or messages[0].get("role") != "user":
            return "messages: first message must use the \"user\" role"
        tool_ids: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            # Newer API versions take system messages between turns (Claude Code sends them).
            if role == "system" and i:
                continue
            if role not in ("user", "assistant"):
                return f"messages.{i}.role: Input should be 'user' or 'assistant'"
            if i and role == messages[i - 1]["role"]:
                return "messages: roles must alternate between \"user\" and \"assistant\", " \
                       "but found multiple \"" + str(role) + "\" roles in a row"
            content = m.get("content")
            last = i == len(messages) - 1
            if isinstance(content, str):
                if not content and not (last and role == "assistant"):
                    return f"messages.{i}: all messages must have non-empty content except " \
                           "for the optional final assistant message"
                if tool_ids:
                    return f"messages.{i}: `tool_use` ids were found without `tool_result` " \
                           "blocks immediately after: " + ", ".join(sorted(tool_ids))
                continue
            if not isinstance(content, list):
                return f"messages.{i}.content: Input should be a valid string or list"
            if not content and not (last and role == "assistant"):
                return f"messages.{i}: all messages must have non-empty content except for " \
                       "the optional final assistant message"
            new_ids: set[str] = set()
            for j, b in enumerate(content):
                where = f"messages.{i}.content.{j}"
                kind = b.get("type") if isinstance(b, dict) else None
                if kind == "text":
                    if not isinstance(b.get("text"), str):
                        return f"{where}.text: Field required"
                    if not b["text"]:
                        return "messages: text content blocks must be non-empty"
                elif kind == "image":
                    src = b.get("source")
                    ok = isinstance(src, dict) and (
                        (src.get("type") == "base64" and src.get("media_type") in (
                            "image/jpeg", "image/png", "image/gif", "image/webp")
                         and isinstance(src.get("data"), str))
                        or (src.get("type") == "url" and isinstance(src.get("url"), str)))
                    if not ok:
                        return f"{where}.source: invalid image source"
                elif kind == "tool_use":
                    if role != "assistant":
                        return f"{where}: tool_use blocks are only allowed in assistant turns"
                    if not b.get("id") or not b.get("name") \
                            or not isinstance(b.get("input"), dict):
                        return f"{where}: tool_use needs id, name and an object input"
                    new_ids.add(b["id"])
                elif kind == "tool_result":
                    if role != "user":
                        return f"{where}: tool_result blocks are only allowed in user turns"
                    if b.get("tool_use_id") not in tool_ids:
                        return f"{where}: unexpected `tool_use_id` found in `tool_result` " \
                               f"blocks: {b.get('tool_use_id')}. Each `tool_result` block " \
                               "must have a corresponding `tool_use` block in the previous " \
                               "message."
                elif kind not in ("thinking", "redacted_thinking", "document"):
                    return f"{where}.type: Input tag '{kind}' found using 'type' does not " \
                           "match any of the expected tags"
            # https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use
            kinds = [b.get("type") for b in content if isinstance(b, dict)]
            last_result = len(kinds) - 1 - kinds[::-1].index("tool_result") \
                if "tool_result" in kinds else 0
            if any(k != "tool_result" for k in kinds[:last_result]):
                return f"messages.{i}: tool_result blocks must come first in the content, " \
                       "before any other blocks"
            if role == "user" and tool_ids:
                answered = {b.get("tool_use_id") for b in content
                            if isinstance(b, dict) and b.get("type") == "tool_result"}
                if tool_ids - answered:
                    return f"messages.{i}: `tool_use` ids were found without `tool_result` " \
                           "blocks immediately after: " + ", ".join(sorted(tool_ids - answered))
            tool_ids = new_ids
        for j, tool in enumerate(body.get("tools") or []):
            if not isinstance(tool, dict) or not tool.get("name") \
                    or not isinstance(tool.get("input_schema"), dict):
                return f"tools.{j}: a tool needs a name and an input_schema object"
        return None

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """Anthropic's count_tokens: the prompt's words, after the same key check."""
        body = await self._record(None, request)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if (request.headers.get("x-api-key") or bearer) != self.anthropic_key:
            return _json_response(401, anthropic_error_body(401, "invalid x-api-key"))
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _json_response(400, anthropic_error_body(400, "messages: Field required"))
        words = sum(_words(_text_of(m.get("content"))) for m in body["messages"]
                    if isinstance(m, dict))
        return web.json_response({"input_tokens": words + 3})

    def _default_anthropic(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        content = messages[-1].get("content")
        if isinstance(content, list) and any(isinstance(b, dict) and b.get("type")
                                             == "tool_result" for b in content):
            return Reply(text="The tool said: " + _text_of(content))
        text = _text_of(content)
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        if tools and choice.get("type") != "none" and (
                text.startswith("call tool") or choice.get("type") in ("any", "tool")):
            tool = tools[0]
            if choice.get("type") == "tool":
                tool = next((t for t in tools if t.get("name") == choice.get("name")), tool)
            return Reply(tool_calls=(ToolCall(tool["name"], _args_for(tool["input_schema"])),))
        images = _count_images(messages)
        return Reply(text=f"echo: {text}" + (f" [{images} image(s)]" if images else ""))

    async def _anthropic(self, request: web.Request, body: Any, step: Step | None
                         ) -> web.StreamResponse:
        failed = await self._apply_fault(request, step, anthropic_error_body)
        if failed is not None:
            return failed
        # The API takes `x-api-key`; current SDKs (anthropic>=2) send `Authorization: Bearer`.
        key = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "")
        if key is None and bearer.startswith("Bearer "):
            key = bearer.removeprefix("Bearer ").strip()
        if not key:
            return _json_response(401, anthropic_error_body(401, "x-api-key header is required"))
        if key != self.anthropic_key:
            return _json_response(401, anthropic_error_body(401, "invalid x-api-key"))
        if not request.headers.get("anthropic-version"):
            return _json_response(400, anthropic_error_body(
                400, "anthropic-version: header is required"))
        problem = self._invalid_anthropic(body)
        if problem is not None:
            return _json_response(400, anthropic_error_body(400, problem))
        system = body.get("system")
        prompt_words = _words(" ".join(
            [_text_of(system) if system else ""]
            + [_text_of(m.get("content")) for m in body["messages"]]))
        ans = self._answer(step, lambda: self._default_anthropic(body), prompt_words,
                           body["max_tokens"], "max_tokens")
        mid = "msg_01" + _rand(22)
        model = body["model"]
        stop = ans.stop_reason or ("tool_use" if ans.tool_calls else "end_turn")
        blocks: list[dict[str, Any]] = []
        if ans.text:
            blocks.append({"type": "text", "text": ans.text})
        blocks += [{"type": "tool_use", "id": "toolu_01" + _rand(22), "name": t.name,
                    "input": t.arguments} for t in ans.tool_calls]
        usage = {"input_tokens": ans.prompt_tokens - ans.cached_tokens,
                 "output_tokens": ans.completion_tokens,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": ans.cached_tokens,
                 "service_tier": "standard"}
        message = {"id": mid, "type": "message", "role": "assistant", "model": model,
                   "content": blocks, "stop_reason": stop, "stop_sequence": None,
                   "usage": usage}
        if not body.get("stream") or isinstance(step, PlainJson):
            return await self._send_json(request, message, step)

        def ev(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        events = [ev("message_start", {"message": dict(
            message, content=[], stop_reason=None,
            usage=dict(usage, output_tokens=1))})]
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                events.append(ev("content_block_start", {"index": index,
                                                         "content_block": {"type": "text",
                                                                           "text": ""}}))
                if index == 0:
                    events.append(ev("ping", {}))
                events += [ev("content_block_delta", {"index": index, "delta": {
                    "type": "text_delta", "text": w}}) for w in _word_pieces(block["text"])]
            else:
                events.append(ev("content_block_start", {"index": index,
                                                         "content_block": dict(block, input={})}))
                if index == 0:
                    events.append(ev("ping", {}))
                events += [ev("content_block_delta", {"index": index, "delta": {
                    "type": "input_json_delta", "partial_json": p}})
                    for p in _pieces(json.dumps(block["input"]), 8)]
            events.append(ev("content_block_stop", {"index": index}))
        events.append(ev("message_delta", {
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": ans.completion_tokens}}))
        events.append(ev("message_stop", {}))
        return await self._send_sse(request, events, step)


# --- the rest of the OpenAI platform API (files, batches, images, audio, ...) -------------


class _PlatformAPI:
    """Files, batches, images, audio, moderations, vector stores and stored chat
    completions, as OpenAI answers them (enough for the SDK's models to parse). Every answer
    carries x-request-id, openai-processing-ms and x-ratelimit-* like the real API's. A file
    id ``file-big-<n>`` downloads ``n`` generated bytes, streamed in 1 MiB writes."""

    def __init__(self, up: FakeUpstream) -> None:
        self.up = up
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.vector_stores: dict[str, dict[str, Any]] = {}

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v1/files", self._create_file)
        r.add_get("/v1/files", self._list_files)
        r.add_get("/v1/files/{file_id}", self._get_file)
        r.add_delete("/v1/files/{file_id}", self._delete_file)
        r.add_get("/v1/files/{file_id}/content", self._file_content)
        r.add_post("/v1/batches", self._create_batch)
        r.add_get("/v1/batches/{batch_id}", self._get_batch)
        r.add_post("/v1/images/generations", self._images)
        r.add_post("/v1/audio/speech", self._speech)
        r.add_post("/v1/audio/transcriptions", self._transcription)
        r.add_post("/v1/moderations", self._moderations)
        r.add_post("/v1/vector_stores", self._create_vector_store)
        r.add_get("/v1/vector_stores", self._list_vector_stores)
        r.add_get("/v1/chat/completions/{completion_id}", self._stored_completion)
        r.add_get("/v1/chat/completions", self._list_stored_completions)
        r.add_get("/v1/organization/users", self._admin_users)

    @staticmethod
    def _headers() -> dict[str, str]:
        return {"x-request-id": "req_" + _rand(24), "openai-processing-ms": "7",
                "x-ratelimit-limit-requests": "5000", "x-ratelimit-remaining-requests": "4999",
                "x-ratelimit-reset-requests": "12ms"}

    def _json(self, payload: Any, status: int = 200) -> web.Response:
        return _json_response(status, json.dumps(payload).encode(), self._headers())

    async def _auth(self, request: web.Request, key: str | None = None) -> web.Response | None:
        await self.up._record(None, request)
        if request.headers.get("authorization") != f"Bearer {key or self.up.openai_key}":
            return self.up._openai_unauthorized(request)
        with self.up._lock:  # its own queue only: a shared step is for an LLM call
            queue = self.up._queues["platform"]
            step = queue.popleft() if queue else None
        if isinstance(step, Fail):
            return _json_response(step.status, step.body or openai_error_body(
                step.status, step.message or f"scripted {step.status}"),
                {**self._headers(), **step.headers})
        return None

    async def _admin_users(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request, ADMIN_KEY)) is not None:
            return denied
        return self._json({"object": "list", "data": [], "first_id": None, "last_id": None,
                           "has_more": False})

    @staticmethod
    async def _form(request: web.Request) -> dict[str, tuple[str | None, bytes]]:
        """A multipart/form-data body's fields: name -> (filename, bytes). Parsed from the
        cached body (recording it already read the stream)."""
        import email.parser
        import email.policy

        raw = await request.read()
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        out: dict[str, tuple[str | None, bytes]] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                out[name] = (part.get_filename(), payload)
        return out

    def _not_found(self, what: str, oid: str) -> web.Response:
        return _json_response(404, openai_error_body(
            404, f"No such {what}: '{oid}'", param="id"), self._headers())

    @staticmethod
    def _file_object(fid: str, name: str, size: int, purpose: str) -> dict[str, Any]:
        return {"id": fid, "object": "file", "bytes": size, "created_at": int(time.time()),
                "filename": name, "purpose": purpose, "status": "processed"}

    async def _create_file(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        form = await self._form(request)
        if "file" not in form or "purpose" not in form:
            return _json_response(400, openai_error_body(
                400, "'file' and 'purpose' are required.", param="file"))
        name, data = form["file"]
        fid = "file-" + _rand(22)
        obj = self._file_object(fid, name or "file", len(data), form["purpose"][1].decode())
        self.files[fid] = (obj, data)
        return self._json(obj)

    async def _list_files(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        data = [obj for obj, _ in self.files.values()]
        return self._json({"object": "list", "data": data, "has_more": False,
                           "first_id": data[0]["id"] if data else None,
                           "last_id": data[-1]["id"] if data else None})

    async def _get_file(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        fid = request.match_info["file_id"]
        if fid not in self.files:
            return self._not_found("file", fid)
        return self._json(self.files[fid][0])

    async def _delete_file(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        fid = request.match_info["file_id"]
        if self.files.pop(fid, None) is None:
            return self._not_found("file", fid)
        return self._json({"id": fid, "object": "file", "deleted": True})

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        fid = request.match_info["file_id"]
        if fid.startswith("file-big-"):
            size = int(fid.removeprefix("file-big-"))
            resp = web.StreamResponse(headers={**self._headers(),
                                               "content-type": "application/octet-stream"})
            resp.content_length = size
            await resp.prepare(request)
            block = bytes(range(256)) * 4096  # 1 MiB
            sent = 0
            while sent < size:
                piece = block[:min(len(block), size - sent)]
                await resp.write(piece)
                sent += len(piece)
            await resp.write_eof()
            return resp
        if fid not in self.files:
            return self._not_found("file", fid)
        return web.Response(body=self.files[fid][1], headers=self._headers(),
                            content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        body = await request.json()
        bid = "batch_" + _rand(24)
        batch = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": body["input_file_id"],
                 "completion_window": body["completion_window"], "status": "validating",
                 "created_at": int(time.time()), "metadata": body.get("metadata")}
        self.batches[bid] = batch
        return self._json(batch)

    async def _get_batch(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        bid = request.match_info["batch_id"]
        if bid not in self.batches:
            return self._not_found("batch", bid)
        return self._json(self.batches[bid])

    async def _images(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        body = await request.json()
        n = body.get("n") or 1
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + body["prompt"].encode()).decode()
        return self._json({"created": int(time.time()), "data": [{"b64_json": png}] * n,
                           "usage": {"input_tokens": _words(body["prompt"]),
                                     "output_tokens": 100 * n,
                                     "total_tokens": _words(body["prompt"]) + 100 * n,
                                     "input_tokens_details": {"text_tokens": 1,
                                                              "image_tokens": 0}}})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        body = await request.json()
        audio = b"ID3" + hashlib.sha256(body["input"].encode()).digest() * 64
        return web.Response(body=audio, headers=self._headers(), content_type="audio/mpeg")

    async def _transcription(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        form = await self._form(request)
        if "file" not in form:
            return _json_response(400, openai_error_body(400, "'file' is required.",
                                                         param="file"))
        size = len(form["file"][1])
        model = form["model"][1].decode() if "model" in form else None
        return self._json({"text": f"{size} bytes of {model}",
                           "usage": {"type": "tokens", "input_tokens": 11, "output_tokens": 5,
                                     "total_tokens": 16}})

    async def _moderations(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        names = ("harassment", "hate", "self-harm", "sexual", "violence")
        result = {"flagged": False, "categories": dict.fromkeys(names, False),
                  "category_scores": dict.fromkeys(names, 0.001),
                  "category_applied_input_types": {k: ["text"] for k in names}}
        return self._json({"id": "modr-" + _rand(20),
                           "model": body.get("model", "omni-moderation-latest"),
                           "results": [result for _ in inputs]})

    async def _create_vector_store(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        body = await request.json() if request.can_read_body else {}
        vid = "vs_" + _rand(24)
        store = {"id": vid, "object": "vector_store", "created_at": int(time.time()),
                 "name": body.get("name", ""), "usage_bytes": 0, "status": "completed",
                 "file_counts": {"in_progress": 0, "completed": 0, "failed": 0,
                                 "cancelled": 0, "total": 0},
                 "last_active_at": None, "metadata": body.get("metadata")}
        self.vector_stores[vid] = store
        return self._json(store)

    async def _list_vector_stores(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        data = list(self.vector_stores.values())
        limit = int(request.query.get("limit", "20"))
        return self._json({"object": "list", "data": data[:limit],
                           "has_more": len(data) > limit,
                           "first_id": data[0]["id"] if data else None,
                           "last_id": data[:limit][-1]["id"] if data else None})

    async def _list_stored_completions(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        return self._json({"object": "list", "data": [], "first_id": None, "last_id": None,
                           "has_more": False})

    async def _stored_completion(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._auth(request)) is not None:
            return denied
        cid = request.match_info["completion_id"]
        return self._json({"id": cid, "object": "chat.completion", "created": 1715367049,
                           "model": "gpt-4o", "choices": [{
                               "index": 0, "finish_reason": "stop", "logprobs": None,
                               "message": {"role": "assistant", "content": "stored",
                                           "refusal": None}}],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                     "total_tokens": 4}})
