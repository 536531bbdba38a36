"""Prometheus metrics of the gateway. With several hypercorn workers the CLI points
PROMETHEUS_MULTIPROC_DIR at an emptied directory before anything imports prometheus_client,
and each scrape sums every worker's numbers with a fresh registry."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

__all__ = ["MULTIPROC_ENV", "Metrics", "get_metrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The gateway's own time: a fraction of a millisecond when all is well.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 120.0)


class Metrics:
    """Every metric the gateway exports, created once per process."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.http_requests = Counter(
            "gateway_http_requests_total", "HTTP requests answered.",
            ["method", "route", "status"],
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ["method", "route"], buckets=_LATENCY_BUCKETS,
        )
        self.llm_requests = Counter(
            "gateway_llm_requests_total",
            "Upstream LLM attempts by outcome, front door (api: chat, responses, messages) "
            "and deployment (its configured name; provider/* for a direct provider/model).",
            ["provider", "model", "outcome", "api", "deployment"],
        )
        self.llm_upstream_duration = Histogram(
            "gateway_llm_upstream_duration_seconds",
            "Upstream time until the response (or stream) ended.",
            ["provider", "model"], buckets=_LATENCY_BUCKETS,
        )
        self.llm_overhead = Histogram(
            "gateway_llm_overhead_seconds",
            "The gateway's own time on an LLM request: time to the response headers minus "
            "the time spent waiting on upstreams (for streams, to their first output); "
            "also sent as x-gateway-overhead-ms.",
            ["api", "provider"], buckets=_OVERHEAD_BUCKETS,
        )
        self.trace_exports = Counter(
            "gateway_trace_exports_total",
            "Span batches sent to the OTLP collector, by result (ok, failed).",
            ["result"],
        )
        self.llm_tokens = Counter(
            "gateway_llm_tokens_total", "Tokens reported by providers.",
            ["provider", "model", "type"],
        )
        self.llm_failovers = Counter(
            "gateway_llm_failovers_total", "Requests moved from one deployment to the next.",
            ["from", "to", "reason"],
        )
        self.ratelimit_rejections = Counter(
            "gateway_ratelimit_rejections_total", "Deployments skipped or requests refused "
            "because a limit was reached.", ["provider", "limit"],
        )
        self.ratelimit_remaining = Gauge(
            "gateway_ratelimit_remaining", "Remaining budget after the last admission.",
            ["provider", "limit"], multiprocess_mode="mostrecent",
        )
        self.deployment_state = Gauge(
            "gateway_llm_deployment_open", "1 while a deployment is cooling down "
            "(circuit open), else 0.", ["provider", "model", "deployment"],
            multiprocess_mode="max",
        )
        self.model_open_circuit = Gauge(
            "gateway_llm_model_open_circuit", "1 while every deployment of a model alias "
            "and of its fallbacks has an open circuit (requests go to the one that opened "
            "first, as probes), else 0.", ["model"], multiprocess_mode="max",
        )
        self.sandbox_pool_ready = Gauge(
            "gateway_sandbox_pool_ready", "Warm sandboxes ready to hand out.",
            multiprocess_mode="livesum",
        )
        self.sandbox_active = Gauge(
            "gateway_sandbox_active", "Sandboxes handed out and alive.",
            multiprocess_mode="livesum",
        )
        self.sandbox_start = Histogram(
            "gateway_sandbox_start_seconds", "Time to hand out a sandbox.",
            ["backend", "kind"], buckets=_LATENCY_BUCKETS,
        )
        self.sandbox_executions = Counter(
            "gateway_sandbox_executions_total", "Code executions by outcome.",
            ["runtime", "outcome"],
        )
        self.sandbox_execution = Histogram(
            "gateway_sandbox_execution_seconds", "Execution round trip.",
            ["runtime"], buckets=_LATENCY_BUCKETS,
        )
        self.usage_dropped = Counter(
            "gateway_usage_dropped_total", "Usage records dropped because the database "
            "stayed unreachable past [storage] max_pending.",
        )
        self.usage_write_errors = Counter(
            "gateway_usage_write_errors_total", "Failed writes of a batch of usage records "
            "(kept and retried).",
        )
        self.sandbox_egress = Counter(
            "gateway_sandbox_egress_total", "Egress proxy connections by decision (allowed, "
            "denied, capped, error).", ["decision"],
        )
        self.sandbox_egress_bytes = Counter(
            "gateway_sandbox_egress_bytes_total", "Bytes relayed by the egress proxy, by "
            "direction as seen from the sandbox (sent, received).", ["direction"],
        )

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess:
            registry = CollectorRegistry()
            _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        from prometheus_client import REGISTRY

        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_metrics: Metrics | None = None


def get_metrics() -> Metrics:
    """The process's metrics; created on first use (prometheus_client allows one per name)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics
