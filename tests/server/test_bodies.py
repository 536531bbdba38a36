"""Bad request bodies become 400s that name the field, including unknown keys."""

from __future__ import annotations

import msgspec
import pytest

from gateway_core.errors import InvalidRequest
from gateway_core.sandbox_types import CreateSandboxRequest, ExecuteRequest
from gateway_server.bodies import decode_raw, decode_typed


@pytest.mark.parametrize(
    ("decoder", "body", "param"),
    [
        (msgspec.json.Decoder(CreateSandboxRequest), b'{"runtime": "python", "colour": 1}',
         "colour"),
        (msgspec.json.Decoder(CreateSandboxRequest), b'{"runtime": 5}', "runtime"),
        (msgspec.json.Decoder(ExecuteRequest), b'{"code": "x", "timeout_s": "soon"}',
         "timeout_s"),
    ],
)
def test_param_names_the_field(decoder: msgspec.json.Decoder[object], body: bytes,
                               param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_typed(decoder, body)
    assert info.value.param == param
    assert info.value.status == 400


def test_raw_body_must_be_a_json_object() -> None:
    with pytest.raises(InvalidRequest, match="JSON object"):
        decode_raw(b"[1, 2]")
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        decode_raw(b"{")
    with pytest.raises(InvalidRequest, match="empty"):
        decode_raw(b"")
