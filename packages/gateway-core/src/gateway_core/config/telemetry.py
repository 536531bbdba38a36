"""Configuration of OpenTelemetry traces (``[telemetry]``): off by default; what the config
leaves out is read from the standard ``OTEL_*`` environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["TelemetryConfig", "TraceProtocol"]

TraceProtocol = Literal["http/protobuf", "grpc"]


class TelemetryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Spans for every gateway request, upstream attempt and sandbox operation, exported
    over OTLP in batches from a background thread."""

    enabled: bool = False
    # Left out: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL, else
    # http/protobuf.
    protocol: TraceProtocol | None = None
    # Left out: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else the
    # exporter's default (http://localhost:4318/v1/traces, or localhost:4317 for gRPC). For
    # http/protobuf the URL is used as written (give the full .../v1/traces path).
    endpoint: str | None = None
    # Sent with every export (e.g. an API key: write it as ${VAR}); merged over
    # OTEL_EXPORTER_OTLP_(TRACES_)HEADERS.
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # Left out: OTEL_SERVICE_NAME, else "agentic-gateway".
    service_name: str | None = None
    # Share of new traces kept (a client's traceparent decides for its own trace).
    sample_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0
    export_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    # Message contents in spans (gen_ai.input.messages / gen_ai.output.messages): never
    # unless true, and then cut to capture_max_chars with key-shaped strings redacted.
    capture_content: bool = False
    capture_max_chars: Annotated[int, msgspec.Meta(ge=64, le=1_000_000)] = 4096
    # Spans waiting for export; past it new spans are dropped (and counted).
    max_queue_size: Annotated[int, msgspec.Meta(ge=64, le=1_000_000)] = 4096

    def __repr__(self) -> str:
        # Header values are often credentials.
        shown = {f: getattr(self, f) for f in self.__struct_fields__ if f != "headers"}
        return (f"TelemetryConfig(headers=<{len(self.headers)} headers>, "
                + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")")
