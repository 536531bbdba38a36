"""The parts of tracing.py that need no served gateway: what content capture keeps and
redacts, where the exporter's protocol comes from, and what readiness shows of its endpoint."""

from __future__ import annotations

import pytest

from gateway_core.config import ConfigError, LLMConfig, TelemetryConfig
from gateway_server.metrics import get_metrics
from gateway_server.tracing import ContentCapture, Tracing


@pytest.mark.parametrize("secret", [
    "sk-proj-Ab12Cd34Ef56Gh78", "sk-ant-api03-abcdefghijklmnop", "gsk_abcdefgh12345678",
    "xai-abcdefgh12345678", "AKIAABCDEFGHIJKLMNOP", "ghp_abcdefghijklmnopqrstuvwx",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijkl",
    "Bearer abc.def-ghi_jkl", "my-own-gateway-key"])
def test_key_shaped_strings_are_redacted(secret: str) -> None:
    capture = ContentCapture(1000, ["my-own-gateway-key"])
    cleaned = capture.request({"messages": [{"role": "user", "content": f"use {secret} now"}],
                               "temperature": 0.2})
    assert secret not in cleaned
    assert "[REDACTED]" in cleaned and "use " in cleaned and " now" in cleaned
    # Only the message fields: sampling settings are no content.
    assert "temperature" not in cleaned


def test_content_is_cut_to_its_limit() -> None:
    capture = ContentCapture(100, [])
    cleaned = capture.request({"input": "word " * 500})
    assert len(cleaned) == 100 + len("...[truncated]") and cleaned.endswith("...[truncated]")
    assert "word word" in cleaned


def _tracing(cfg: TelemetryConfig, env: dict[str, str]) -> Tracing:
    return Tracing(cfg, get_metrics(), LLMConfig(), env=env)


def test_protocol_and_endpoint_from_the_environment_when_the_config_leaves_them_out() -> None:
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:pw@127.0.0.1:4317"}
    t = _tracing(TelemetryConfig(enabled=True), env)
    try:
        health = t.health()
        assert health["protocol"] == "grpc"
        # User info (a credential) is not shown.
        assert health["endpoint"] == "http://127.0.0.1:4317"
    finally:
        t.shutdown()
    t = _tracing(TelemetryConfig(enabled=True, protocol="http/protobuf",
                                 endpoint="http://127.0.0.1:4318/v1/traces?token=x"), env)
    try:
        assert t.health()["protocol"] == "http/protobuf"
        assert t.health()["endpoint"] == "http://127.0.0.1:4318/v1/traces"
    finally:
        t.shutdown()


def test_a_protocol_the_exporters_do_not_speak_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"telemetry\.protocol: 'http/json'"):
        _tracing(TelemetryConfig(enabled=True), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
