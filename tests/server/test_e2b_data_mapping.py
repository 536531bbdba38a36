"""The pure parts of E2B's data plane, table-style: E2B's paths as the guest's, MIME bundles
as the code interpreter's results, listings compared into watch events, the gateway's
errors as the connect-rpc codes the SDK maps."""

from __future__ import annotations

import pytest
from connectrpc.code import Code

from gateway_core.errors import GatewayError, InvalidRequest, NotFound, PayloadTooLarge
from gateway_core.sandbox_types import ExecOutput, FileEntry
from gateway_sandbox.errors import SandboxConflict, SandboxDead
from gateway_server.e2b_data.interpreter import result_event
from gateway_server.e2b_data.scope import connect_error, from_guest, to_guest
from gateway_server.e2b_data.watchers import Change, diff


@pytest.mark.parametrize(("e2b", "guest"), [
    ("/home/user", "/work"),
    ("/home/user/a/b.txt", "/work/a/b.txt"),
    ("~/x", "/work/x"),
    ("x/y", "/work/x/y"),
    ("/tmp/z", "/tmp/z"),  # left for the sandbox to refuse
    ("/home/username", "/home/username"),
])
def test_paths(e2b: str, guest: str) -> None:
    assert to_guest(e2b) == guest


def test_empty_path_names_the_field() -> None:
    with pytest.raises(InvalidRequest) as info:
        to_guest("", "source")
    assert info.value.param == "source"


@pytest.mark.parametrize(("rel", "absolute"), [(".", "/work"), ("a/b", "/work/a/b"),
                                               ("/work/c", "/work/c")])
def test_reported_paths(rel: str, absolute: str) -> None:
    assert from_guest(rel) == absolute


def test_result_event_maps_mime_types() -> None:
    event = result_event([
        ExecOutput(mime="image/png", data="iVBO", bundle=1, value=True),
        ExecOutput(mime="text/plain", data="<Figure>", bundle=1, value=True),
        ExecOutput(mime="application/json", data='{"a": 1}', bundle=1, value=True),
        ExecOutput(mime="application/vnd.custom", data="?", bundle=1, value=True),
    ])
    assert event == {"type": "result", "is_main_result": True, "png": "iVBO",
                     "text": "<Figure>", "json": {"a": 1},
                     "extra": {"application/vnd.custom": "?"}}
    assert result_event([ExecOutput(mime="text/html", data="<b>")])["is_main_result"] is False


def _entry(path: str, size: int = 1, mtime: float = 1.0, mode: int = 0o644) -> FileEntry:
    return FileEntry(name=path.rsplit("/", 1)[-1], path=path, type="file", size=size,
                     mode=mode, mtime=mtime)


def test_diff_reports_each_kind() -> None:
    before = {"a": _entry("a"), "b": _entry("b"), "c": _entry("c")}
    after = {"a": _entry("a", size=2), "c": _entry("c", mode=0o600), "d": _entry("d")}
    assert sorted((c.name, c.kind) for c in diff(before, after)) == [
        ("a", "write"), ("b", "remove"), ("c", "chmod"), ("d", "create")]
    assert diff(after, after) == []
    assert Change("b", "remove") in diff(before, after)


@pytest.mark.parametrize(("error", "code"), [
    (InvalidRequest("bad", param="path"), Code.INVALID_ARGUMENT),
    (NotFound("gone"), Code.NOT_FOUND),
    (SandboxConflict("exists", code="already_exists"), Code.ALREADY_EXISTS),
    (SandboxConflict("busy", code="context_busy"), Code.FAILED_PRECONDITION),
    (SandboxDead("dead"), Code.UNAVAILABLE),
    (PayloadTooLarge("big"), Code.RESOURCE_EXHAUSTED),
    (GatewayError("boom"), Code.INTERNAL),
])
def test_connect_codes(error: GatewayError, code: Code) -> None:
    assert connect_error(error).code is code


def test_connect_error_names_envds_field() -> None:
    assert connect_error(InvalidRequest("Bad.", param="dst")).message == \
        "Bad. (field: destination)"
    assert connect_error(InvalidRequest("Bad.", param="cwd")).message == \
        "Bad. (field: process.cwd)"
