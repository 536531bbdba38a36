"""Prometheus implementations of the libraries' observer hooks (the libraries themselves
know nothing of Prometheus); they also note on the request's record (request_record.py)
what its access line and overhead header need."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from gateway_llm.hub import Usage
from gateway_server.metrics import Metrics
from gateway_server.request_record import current_record

__all__ = ["RouterMetrics", "SandboxMetrics"]

_NO_HEADERS: Mapping[str, str] = {}


class RouterMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        # Children per label set: labels() takes a lock and a lookup on every call.
        self._attempts: dict[tuple[str, str, str, str, str], tuple[Counter, Histogram]] = {}
        self._tokens: dict[tuple[str, str], tuple[Counter, Counter]] = {}
        self._remaining: dict[tuple[str, str], Gauge] = {}

    def attempt_start(self, provider: str, model: str, api: str, deployment: str,
                      attempt: int) -> Mapping[str, str]:
        return _NO_HEADERS

    def attempt(self, provider: str, model: str, outcome: str, seconds: float,
                api: str, deployment: str) -> None:
        key = (provider, model, outcome, api, deployment)
        children = self._attempts.get(key)
        if children is None:
            children = (self.m.llm_requests.labels(provider, model, outcome, api, deployment),
                        self.m.llm_upstream_duration.labels(provider, model))
            self._attempts[key] = children
        children[0].inc()
        children[1].observe(seconds)
        record = current_record()
        if record is not None:
            record.attempted(api, provider, model, deployment, outcome, seconds)

    def failover(self, from_: str, to: str, reason: str) -> None:
        self.m.llm_failovers.labels(from_, to, reason).inc()

    def tokens(self, provider: str, model: str, usage: Usage) -> None:
        children = self._tokens.get((provider, model))
        if children is None:
            children = (self.m.llm_tokens.labels(provider, model, "prompt"),
                        self.m.llm_tokens.labels(provider, model, "completion"))
            self._tokens[(provider, model)] = children
        children[0].inc(usage.input_tokens)
        children[1].inc(usage.output_tokens)
        record = current_record()
        if record is not None:
            record.add_tokens(usage.input_tokens, usage.output_tokens)

    def circuit(self, provider: str, model: str, deployment: str, is_open: bool) -> None:
        self.m.deployment_state.labels(provider, model, deployment).set(1 if is_open else 0)

    def open_circuit(self, alias: str, is_open: bool) -> None:
        self.m.model_open_circuit.labels(alias).set(1 if is_open else 0)

    def ratelimited(self, provider: str, limit: str) -> None:
        self.m.ratelimit_rejections.labels(provider, limit).inc()

    def remaining(self, provider: str, limit: str, value: int) -> None:
        gauge = self._remaining.get((provider, limit))
        if gauge is None:
            gauge = self._remaining[(provider, limit)] = self.m.ratelimit_remaining.labels(
                provider, limit)
        gauge.set(value)


class SandboxMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self.backend: str | None = None  # set once the manager has picked its backend

    def on_start(self, backend: str, kind: str, seconds: float, *, sandbox_id: str,
                 runtime: str) -> None:
        self.m.sandbox_start.labels(backend, kind).observe(seconds)
        record = current_record()
        if record is not None:
            record.sandbox_id, record.runtime, record.backend = sandbox_id, runtime, backend
            record.sandbox_outcome = kind  # warm or cold

    def on_execute(self, runtime: str, outcome: str, seconds: float, *, sandbox_id: str,
                   exit_code: int | None, timed_out: bool) -> None:
        self.m.sandbox_executions.labels(runtime, outcome).inc()
        self.m.sandbox_execution.labels(runtime).observe(seconds)
        record = current_record()
        if record is not None:
            record.sandbox_id, record.runtime, record.backend = sandbox_id, runtime, self.backend
            record.sandbox_outcome = outcome

    def on_lifecycle(self, action: str, outcome: str, seconds: float, *,
                     sandbox_id: str) -> None:
        record = current_record()
        if record is not None:
            record.sandbox_id, record.backend = sandbox_id, self.backend
            record.sandbox_outcome = outcome

    # The egress proxy's observer (gateway_sandbox.egress.EgressObserver).
    def on_egress(self, decision: str) -> None:
        self.m.sandbox_egress.labels(decision).inc()

    def on_egress_bytes(self, sent: int, received: int) -> None:
        self.m.sandbox_egress_bytes.labels("sent").inc(sent)
        self.m.sandbox_egress_bytes.labels("received").inc(received)
