"""The Responses API wire types take the create request as the openai SDK sends it (every
field, every input item and tool kind), name the field when something is wrong, and write
Response objects and stream events the SDK's own models accept."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import msgspec
import openai
import pydantic
import pytest
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseInputItemParam, ResponseStreamEvent, ToolParam

from gateway_core import responses_types as rt
from gateway_core.errors import InvalidRequest

decoder = msgspec.json.Decoder(rt.ResponsesRequest)
lax_decoder = msgspec.json.Decoder(rt.ResponsesRequest, strict=False)  # as the route decodes
sdk_items = pydantic.TypeAdapter(list[ResponseInputItemParam])
sdk_tools = pydantic.TypeAdapter(list[ToolParam])
sdk_event = pydantic.TypeAdapter(ResponseStreamEvent)


def sent_by_sdk(**params: Any) -> bytes:
    """The body the openai SDK sends for ``client.responses.create(**params)``."""
    seen: list[bytes] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.content)
        return httpx2.Response(400, json={"error": {"message": "stop", "type": "x"}})

    with openai.OpenAI(api_key="sk-test", base_url="http://upstream.test/v1", max_retries=0,
                       http_client=httpx2.Client(transport=httpx2.MockTransport(handler))) as c:
        with pytest.raises(openai.BadRequestError):
            c.responses.create(**params)
    return seen[0]


# One of each input item kind of the SDK's ResponseInputItemParam, content parts included
# (shapes of https://platform.openai.com/docs/api-reference/responses/create).
ITEMS: list[Any] = [
    {"role": "developer", "content": "Talk like a pirate."},
    {"role": "user", "content": [
        {"type": "input_text", "text": "What is in this image and file?"},
        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
        {"type": "input_image", "file_id": "file-img", "detail": "auto"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=",
         "filename": "a.pdf"},
        {"type": "input_file", "file_id": "file-abc"},
        {"type": "input_file", "file_url": "https://example.com/b.pdf"},
    ]},
    {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys"}]},
    {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
     "content": [{"type": "output_text", "text": "Arr.", "annotations": [
         {"type": "url_citation", "start_index": 0, "end_index": 3, "title": "t",
          "url": "https://example.com"}]},
         {"type": "refusal", "refusal": "I cannot."}]},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Hmm."}],
     "encrypted_content": "gAAAA", "content": [{"type": "reasoning_text", "text": "think"}]},
    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
     "arguments": "{\"location\": \"Paris\"}", "status": "completed"},
    {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
    {"type": "function_call_output", "call_id": "call_1", "output": [
        {"type": "input_text", "text": "see"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBO"},
        {"type": "input_file", "file_id": "file-x"}]},
    {"type": "custom_tool_call", "call_id": "call_2", "name": "code_exec",
     "input": "print(1)", "id": "ctc_1"},
    {"type": "custom_tool_call_output", "call_id": "call_2", "output": "1"},
    {"type": "item_reference", "id": "msg_old"},
    {"type": "web_search_call", "id": "ws_1", "status": "completed",
     "action": {"type": "search", "query": "weather"}},
    {"type": "file_search_call", "id": "fs_1", "queries": ["q"], "status": "completed"},
    {"type": "computer_call", "id": "cu_1", "call_id": "call_3", "status": "completed",
     "action": {"type": "screenshot"}, "pending_safety_checks": []},
    {"type": "computer_call_output", "call_id": "call_3",
     "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,iVBO"}},
    {"type": "local_shell_call", "id": "ls_1", "call_id": "call_4", "status": "completed",
     "action": {"type": "exec", "command": ["ls"], "env": {}}},
    {"type": "local_shell_call_output", "id": "ls_1", "output": "a.txt"},
    {"type": "mcp_call", "id": "mcp_1", "name": "t", "arguments": "{}", "server_label": "s"},
    {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
    {"type": "image_generation_call", "id": "ig_1", "result": None, "status": "completed"},
    {"type": "code_interpreter_call", "id": "ci_1", "code": "1+1", "container_id": "c",
     "outputs": None, "status": "completed"},
]

TOOLS: list[Any] = [
    {"type": "function", "name": "get_weather", "description": "Weather in a city",
     "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                    "required": ["location"], "additionalProperties": False},
     "strict": True},
    {"type": "custom", "name": "code_exec", "description": "Runs Python",
     "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
    {"type": "namespace", "name": "crm", "description": "The CRM",
     "tools": [{"type": "function", "name": "find_customer", "parameters": None,
                "strict": False}]},
    {"type": "web_search"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {"type": "image_generation"},
    {"type": "mcp", "server_label": "deepwiki", "server_url": "https://mcp.deepwiki.com/mcp",
     "require_approval": "never"},
    {"type": "local_shell"},
    {"type": "shell"},
    {"type": "apply_patch"},
    {"type": "computer_use_preview", "display_height": 768, "display_width": 1024,
     "environment": "browser"},
]


def test_the_fixtures_are_what_the_sdk_types() -> None:
    sdk_items.validate_python(ITEMS)
    sdk_tools.validate_python(TOOLS)


def test_every_documented_request_field_decodes_as_the_sdk_sends_it() -> None:
    body = sent_by_sdk(
        model="gpt-5", input=ITEMS, instructions="Be brief.", tools=TOOLS,
        tool_choice={"type": "function", "name": "get_weather"}, parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "weather", "strict": True,
                         "schema": {"type": "object"}, "description": "d"},
              "verbosity": "low"},
        max_output_tokens=500, max_tool_calls=3, temperature=0.2, top_p=0.9, top_logprobs=2,
        reasoning={"effort": "high", "summary": "auto"}, store=False,
        previous_response_id="resp_prev", include=["reasoning.encrypted_content"],
        metadata={"k": "v"}, user="u-1", truncation="auto", prompt_cache_key="pk",
        safety_identifier="sid", service_tier="flex", stream_options={"include_obfuscation": False},
        background=False, prompt={"id": "pmpt_1", "version": "2", "variables": {"x": "y"}},
        extra_body={"some_future_field": {"kept": "by the raw body"}},
    )
    req = decoder.decode(body)
    assert req.model == "gpt-5" and req.instructions == "Be brief."
    assert isinstance(req.input, list) and len(req.input) == len(ITEMS)
    assert isinstance(req.tools, list) and len(req.tools) == len(TOOLS)
    assert req.tool_choice == {"type": "function", "name": "get_weather"}
    assert isinstance(req.text, rt.TextConfig) and req.text.verbosity == "low"
    assert isinstance(req.text.format, rt.FormatJSONSchema)
    assert req.text.format.schema == {"type": "object"} and req.text.format.strict is True
    assert isinstance(req.reasoning, rt.ReasoningParam)
    assert (req.reasoning.effort, req.reasoning.summary) == ("high", "auto")
    assert (req.max_output_tokens, req.max_tool_calls, req.top_logprobs) == (500, 3, 2)
    assert (req.temperature, req.top_p, req.parallel_tool_calls) == (0.2, 0.9, False)
    assert req.store is False and req.previous_response_id == "resp_prev"
    assert req.include == ["reasoning.encrypted_content"] and req.metadata == {"k": "v"}
    assert (req.user, req.truncation, req.prompt_cache_key, req.safety_identifier,
            req.service_tier) == ("u-1", "auto", "pk", "sid", "flex")
    assert isinstance(req.prompt, rt.PromptRef) and req.prompt.variables == {"x": "y"}
    assert isinstance(req.stream_options, rt.StreamOptions)
    assert req.background is False


@pytest.mark.parametrize("value", ["hi", [{"role": "user", "content": "hi"}]])
def test_input_as_string_or_items(value: Any) -> None:
    req = decoder.decode(json.dumps({"model": "m", "input": value}))
    items = rt.decode_input_items(req.input)  # type: ignore[arg-type]
    assert items == [rt.InputMessage(role="user", content="hi")]


@pytest.mark.parametrize("d", [decoder, lax_decoder])
def test_integral_floats_decode_as_ints(d: msgspec.json.Decoder[rt.ResponsesRequest]) -> None:
    req = d.decode(b'{"model": "m", "input": "x", "max_output_tokens": 100.0, '
                   b'"top_logprobs": 2.0, "max_tool_calls": 1}')
    assert req.max_output_tokens == 100 and type(req.max_output_tokens) is int
    assert req.top_logprobs == 2 and type(req.top_logprobs) is int


def test_a_fractional_int_names_the_field() -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        decoder.decode(b'{"model": "m", "max_output_tokens": 100.5}')
    assert str(info.value).endswith("- at `$.max_output_tokens`")


def test_unset_fields_are_not_encoded() -> None:
    req = decoder.decode(b'{"model": "m", "input": "hi"}')
    assert msgspec.json.decode(msgspec.json.encode(req)) == {"model": "m", "input": "hi"}


def test_every_item_kind_is_typed_or_kept_as_it_came() -> None:
    items = rt.decode_input_items(ITEMS)
    kinds = [type(i).__name__ if not isinstance(i, rt.OpaqueItem) else i.type for i in items]
    assert kinds == [
        "InputMessage", "InputMessage", "InputMessage", "InputMessage", "ReasoningItem",
        "FunctionToolCall", "FunctionCallOutput", "FunctionCallOutput", "CustomToolCall",
        "CustomToolCallOutput", "ItemReference", "web_search_call", "file_search_call",
        "computer_call", "computer_call_output", "local_shell_call", "local_shell_call_output",
        "mcp_call", "mcp_approval_response", "image_generation_call", "code_interpreter_call",
    ]
    user = items[1]
    assert isinstance(user, rt.InputMessage) and isinstance(user.content, list)
    assert [type(p) for p in user.content] == [rt.InputText, rt.InputImage, rt.InputImage,
                                               rt.InputFile, rt.InputFile, rt.InputFile]
    assistant = items[3]
    assert isinstance(assistant, rt.InputMessage) and isinstance(assistant.content, list)
    text = assistant.content[0]
    assert isinstance(text, rt.OutputText) and text.annotations[0]["type"] == "url_citation"
    reasoning = items[4]
    assert isinstance(reasoning, rt.ReasoningItem)
    assert reasoning.encrypted_content == "gAAAA" and reasoning.summary[0].text == "Hmm."
    assert isinstance(items[-1], rt.OpaqueItem) and items[-1].value == ITEMS[-1]


def test_items_without_type() -> None:
    items = rt.decode_input_items([{"role": "assistant", "content": "hi"}, {"id": "msg_7"}])
    assert items == [rt.InputMessage(role="assistant", content="hi"), rt.ItemReference(id="msg_7")]


@pytest.mark.parametrize("items,param", [
    ([{"type": "no_such_item"}], "input[0].type"),
    ([{"content": "no role"}], "input[0].type"),
    (["a string"], "input[0]"),
    ([{"role": "user", "content": "ok"}, {"role": "robot", "content": "x"}], "input[1].role"),
    ([{"role": "user", "content": [{"type": "input_text"}]}], "input[0].content[0].text"),
    ([{"role": "user", "content": [{"type": "input_video", "url": "x"}]}],
     "input[0].content[0].type"),
    ([{"type": "function_call", "call_id": "c", "name": "f"}], "input[0].arguments"),
    ([{"type": "function_call_output", "call_id": "c", "output": 3}], "input[0].output"),
    ([{"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text"}]}],
     "input[0].summary[0].text"),
])
def test_a_bad_item_names_the_field(items: list[Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        rt.decode_input_items(items)
    assert info.value.param == param, info.value.message


def test_every_tool_kind_is_typed_or_kept_as_it_came() -> None:
    tools = rt.decode_tools(TOOLS)
    fn, custom, ns = tools[0], tools[1], tools[2]
    assert isinstance(fn, rt.FunctionTool) and fn.strict is True and fn.parameters is not None
    assert isinstance(custom, rt.CustomTool) and custom.format is not None
    assert isinstance(ns, rt.NamespaceTool) and isinstance(ns.tools[0], rt.FunctionTool)
    hosted = tools[3:]
    assert all(isinstance(t, rt.HostedTool) for t in hosted)
    assert [t.type for t in hosted if isinstance(t, rt.HostedTool)] == [
        t["type"] for t in TOOLS[3:]]
    with pytest.raises(InvalidRequest) as info:
        rt.decode_tools([{"type": "function"}])
    assert info.value.param == "tools[0].name"
    with pytest.raises(InvalidRequest) as info:
        rt.decode_tools([{"name": "x"}])
    assert info.value.param == "tools[0].type"


def _response(**fields: Any) -> rt.Response:
    return rt.Response(id="resp_1", created_at=1741476542, status="completed", model="gpt-5",
                       **fields)


def test_the_response_object_is_what_the_sdk_parses() -> None:
    response = _response(
        output=[
            rt.ReasoningItem(id="rs_1", summary=[rt.SummaryText(text="s")],
                             encrypted_content="enc"),
            rt.OutputMessage(id="msg_1", content=[rt.OutputText(text="Hello"),
                                                  rt.OutputRefusal(refusal="no")]),
            rt.FunctionToolCall(id="fc_1", call_id="call_1", name="f", arguments="{}",
                                status="completed"),
            rt.CustomToolCall(id="ctc_1", call_id="call_2", name="g", input="x"),
        ],
        usage=rt.ResponseUsage(input_tokens=36, output_tokens=87, total_tokens=123),
        text={"format": {"type": "text"}}, reasoning={"effort": None, "summary": None},
    )
    body = msgspec.json.encode(response)
    parsed = SDKResponse.model_validate_json(body)
    assert parsed.output_text == "Hello"
    assert [o.type for o in parsed.output] == ["reasoning", "message", "function_call",
                                               "custom_tool_call"]
    assert parsed.usage is not None and parsed.usage.input_tokens_details.cached_tokens == 0
    as_json = json.loads(body)
    # Written as OpenAI writes it: annotations and summary always there, nulls kept.
    assert as_json["output"][1]["content"][0]["annotations"] == []
    assert as_json["error"] is None and as_json["object"] == "response"
    assert msgspec.json.decode(body, type=rt.Response) == response


def test_stream_events_are_what_the_sdk_parses() -> None:
    response = _response()
    events: list[rt.StreamEvent] = [
        rt.ResponseCreatedEvent(sequence_number=0, response=response),
        rt.OutputItemAddedEvent(sequence_number=1, output_index=0,
                                item=rt.OutputMessage(id="msg_1", content=[])),
        rt.ContentPartAddedEvent(sequence_number=2, item_id="msg_1", output_index=0,
                                 content_index=0, part=rt.OutputText(text="")),
        rt.OutputTextDeltaEvent(sequence_number=3, item_id="msg_1", output_index=0,
                                content_index=0, delta="Hi"),
        rt.OutputTextDoneEvent(sequence_number=4, item_id="msg_1", output_index=0,
                               content_index=0, text="Hi"),
        rt.RefusalDeltaEvent(sequence_number=5, item_id="msg_1", output_index=0,
                             content_index=1, delta="no"),
        rt.RefusalDoneEvent(sequence_number=6, item_id="msg_1", output_index=0,
                            content_index=1, refusal="no"),
        rt.FunctionCallArgumentsDeltaEvent(sequence_number=7, item_id="fc_1", output_index=1,
                                           delta="{}"),
        rt.FunctionCallArgumentsDoneEvent(sequence_number=8, item_id="fc_1", output_index=1,
                                          arguments="{}"),
        rt.CustomToolCallInputDeltaEvent(sequence_number=9, item_id="ctc", output_index=2,
                                         delta="x"),
        rt.CustomToolCallInputDoneEvent(sequence_number=10, item_id="ctc", output_index=2,
                                        input="x"),
        rt.ReasoningSummaryPartAddedEvent(sequence_number=11, item_id="rs", output_index=3,
                                          summary_index=0, part=rt.SummaryText(text="")),
        rt.ReasoningSummaryTextDeltaEvent(sequence_number=12, item_id="rs", output_index=3,
                                          summary_index=0, delta="s"),
        rt.ReasoningSummaryTextDoneEvent(sequence_number=13, item_id="rs", output_index=3,
                                         summary_index=0, text="s"),
        rt.ReasoningSummaryPartDoneEvent(sequence_number=14, item_id="rs", output_index=3,
                                         summary_index=0, part=rt.SummaryText(text="s")),
        rt.ReasoningTextDeltaEvent(sequence_number=15, item_id="rs", output_index=3,
                                   content_index=0, delta="t"),
        rt.ReasoningTextDoneEvent(sequence_number=16, item_id="rs", output_index=3,
                                  content_index=0, text="t"),
        rt.ContentPartDoneEvent(sequence_number=17, item_id="rs", output_index=3,
                                content_index=0, part=rt.ReasoningText(text="t")),
        rt.OutputItemDoneEvent(sequence_number=18, output_index=3,
                               item=rt.ReasoningItem(id="rs", summary=[])),
        rt.ResponseInProgressEvent(sequence_number=19, response=response),
        rt.ResponseCompletedEvent(sequence_number=20, response=response),
        rt.ResponseIncompleteEvent(sequence_number=21, response=response),
        rt.ResponseFailedEvent(sequence_number=22, response=msgspec.structs.replace(
            response, status="failed",
            error=rt.ResponseError(code="server_error", message="boom"))),
        rt.ErrorEvent(sequence_number=23, code="server_error", message="boom"),
    ]
    for event in events:
        data = msgspec.json.encode(event)
        parsed = sdk_event.validate_json(data)
        assert parsed.type == type(event).__struct_config__.tag
        assert parsed.sequence_number == event.sequence_number
