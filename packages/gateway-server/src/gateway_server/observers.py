"""Prometheus implementations of the libraries' observer hooks (the libraries themselves
know nothing of Prometheus)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from gateway_llm.hub import Usage
from gateway_server.metrics import Metrics

__all__ = ["RouterMetrics", "SandboxMetrics"]


class RouterMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        # Children per label set: labels() takes a lock and a lookup on every call.
        self._attempts: dict[tuple[str, str, str, str, str], tuple[Counter, Histogram]] = {}
        self._tokens: dict[tuple[str, str], tuple[Counter, Counter]] = {}

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

    def circuit(self, provider: str, model: str, deployment: str, is_open: bool) -> None:
        self.m.deployment_state.labels(provider, model, deployment).set(1 if is_open else 0)

    def open_circuit(self, alias: str, is_open: bool) -> None:
        self.m.model_open_circuit.labels(alias).set(1 if is_open else 0)

    def ratelimited(self, provider: str, limit: str) -> None:
        self.m.ratelimit_rejections.labels(provider, limit).inc()

    def remaining(self, provider: str, limit: str, value: int) -> None:
        self.m.ratelimit_remaining.labels(provider, limit).set(value)


class SandboxMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def on_start(self, backend: str, kind: str, seconds: float) -> None:
        self.m.sandbox_start.labels(backend, kind).observe(seconds)

    def on_execute(self, runtime: str, outcome: str, seconds: float) -> None:
        self.m.sandbox_executions.labels(runtime, outcome).inc()
        self.m.sandbox_execution.labels(runtime).observe(seconds)

    # The egress proxy's observer (gateway_sandbox.egress.EgressObserver).
    def on_egress(self, decision: str) -> None:
        self.m.sandbox_egress.labels(decision).inc()

    def on_egress_bytes(self, sent: int, received: int) -> None:
        self.m.sandbox_egress_bytes.labels("sent").inc(sent)
        self.m.sandbox_egress_bytes.labels("received").inc(received)
