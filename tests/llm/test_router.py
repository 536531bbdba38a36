"""The router over several deployments, with fake providers and an injected clock: routing
strategies (weights, least busy, lowest latency, most budget), retries moving to another
deployment of the alias before fallbacks, the breaker counting client requests by failure
rate, and the last door that stays open when every circuit is."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from typing import Any

import pytest

from gateway_core.config import (
    ConfigError,
    CooldownConfig,
    DeploymentConfig,
    LLMConfig,
    ModelConfig,
    ProviderConfig,
    RateLimitConfig,
    parse_config,
)
from gateway_core.errors import GatewayError, UpstreamError
from gateway_llm.balancer import DeploymentStats, order
from gateway_llm.errors import classify_status
from gateway_llm.hub import Conversation, LLMRequest, Message, Text, Usage
from gateway_llm.limiter import MemoryLimitStore, RateLimiter
from gateway_llm.providers.base import Call, Completion
from gateway_llm.router import RoutedStream, Router


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeStream:
    def __init__(self) -> None:
        self.closed = False

    @property
    def usage(self) -> Usage | None:
        return Usage(input_tokens=3, output_tokens=2)

    @property
    def headers(self) -> dict[str, str]:
        return {}

    def __aiter__(self) -> Any:
        return self._events()

    async def _events(self) -> Any:
        yield b"data: {}\n\n"

    async def aclose(self) -> None:
        self.closed = True


class FakeProvider:
    """Answers after ``latency`` (clock) seconds, or fails with the next scripted status."""

    kind = "openai"

    def __init__(self, name: str, clock: Clock, *, latency: float = 0.0,
                 log: list[str] | None = None, config: ProviderConfig | None = None) -> None:
        self._name = name
        self.clock = clock
        self.latency = latency
        self._config = config or ProviderConfig(kind="openai", base_url="http://fake")
        self.script: deque[int | None] = deque()
        self.calls = 0
        self.hold: asyncio.Event | None = None
        self.trace_headers: list[dict[str, str]] = []
        self.log = log
        self.started = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> ProviderConfig:
        return self._config

    def serves(self, dialect: str) -> bool:
        return True

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.started = False

    async def _answer(self, call: Call) -> None:
        self.calls += 1
        self.trace_headers.append(dict(call.trace_headers))
        if self.log is not None:
            self.log.append(self._name)
        if self.hold is not None:
            await self.hold.wait()
        self.clock.now += self.latency
        status = self.script.popleft() if self.script else None
        if status is not None:
            raise classify_status(status, UpstreamError(f"upstream said {status}"), {})

    async def complete(self, call: Call) -> Completion:
        await self._answer(call)
        return Completion(b"{}", Usage(input_tokens=3, output_tokens=2))

    async def stream(self, call: Call) -> FakeStream:
        await self._answer(call)
        return FakeStream()


class Recorder:
    """Records what the router reports; hands each attempt a header naming it."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str, str]] = []
        self.started: list[tuple[str, int]] = []
        self.circuits: list[tuple[str, bool]] = []
        self.open: list[tuple[str, bool]] = []

    def attempt_start(self, provider: str, model: str, api: str, deployment: str,
                      attempt: int) -> dict[str, str]:
        self.started.append((deployment, attempt))
        return {"traceparent": f"attempt-{attempt}"}

    def attempt(self, provider: str, model: str, outcome: str, seconds: float, api: str,
                deployment: str) -> None:
        self.attempts.append((deployment, outcome, api))

    def failover(self, from_: str, to: str, reason: str) -> None:
        pass

    def tokens(self, provider: str, model: str, usage: Usage) -> None:
        pass

    def circuit(self, provider: str, model: str, deployment: str, is_open: bool) -> None:
        self.circuits.append((deployment, is_open))

    def open_circuit(self, alias: str, is_open: bool) -> None:
        self.open.append((alias, is_open))

    def ratelimited(self, provider: str, limit: str) -> None:
        pass

    def remaining(self, provider: str, limit: str, value: int) -> None:
        pass


class FakeDialect:
    name = "chat"

    def to_conversation(self, typed: object) -> Conversation:
        return Conversation(messages=[Message(role="user", parts=[Text(text="hello")])])


def ask(model: str = "m") -> LLMRequest:
    return LLMRequest(FakeDialect(), model, None, {})  # type: ignore[arg-type]


def deployments(*specs: tuple[str, float]) -> ModelConfig:
    return ModelConfig(deployments=[DeploymentConfig(provider=p, model="x", name=p, weight=w)
                                    for p, w in specs])


def router(clock: Clock, providers: dict[str, FakeProvider], models: dict[str, ModelConfig],
           *, max_retries: int = 0, cooldown: CooldownConfig | None = None,
           limiter: RateLimiter | None = None, observer: Recorder | None = None,
           seed: int = 7, **kw: Any) -> Router:
    config = LLMConfig(providers={n: p.config for n, p in providers.items()}, models=models,
                       max_retries=max_retries, backoff_base_s=0.01,
                       cooldown=cooldown or CooldownConfig())
    return Router(config, providers, clock=clock, sleep=clock.sleep,  # type: ignore[arg-type]
                  rng=random.Random(seed), limiter=limiter, observer=observer, **kw)


def fakes(clock: Clock, *names: str, **kw: Any) -> dict[str, FakeProvider]:
    return {n: FakeProvider(n, clock, **kw) for n in names}


# --- strategies ------------------------------------------------------------------------


async def test_weights_are_honoured_over_ten_thousand_requests() -> None:
    clock = Clock()
    ps = fakes(clock, "a", "b", "c")
    r = router(clock, ps, {"m": deployments(("a", 3), ("b", 1), ("c", 0))})
    served = Counter([(await r.complete(ask())).deployment for _ in range(10_000)])
    assert served["a"] == pytest.approx(7500, abs=250)
    assert served["b"] == pytest.approx(2500, abs=250)
    assert served["c"] == 0


class Cand:
    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.stats = DeploymentStats()


def test_weighted_first_choice_follows_the_weights() -> None:
    rng = random.Random(1)
    cands = [Cand(1), Cand(2), Cand(7)]
    first = Counter(id(order("weighted", cands, rng=rng, now=0)[0]) for _ in range(10_000))
    shares = [first[id(c)] / 10_000 for c in cands]
    assert shares == pytest.approx([0.1, 0.2, 0.7], abs=0.02)


async def test_a_standby_of_weight_zero_takes_what_the_others_cannot() -> None:
    clock = Clock()
    ps = fakes(clock, "a", "c")
    ps["a"].script.extend([500])
    r = router(clock, ps, {"m": deployments(("a", 1), ("c", 0))})
    routed = await r.complete(ask())
    assert routed.deployment == "c" and routed.attempts == 2 and not routed.fallback
    assert (ps["a"].calls, ps["c"].calls) == (1, 1)


async def test_least_busy_steers_away_from_a_slow_deployment() -> None:
    clock = Clock()
    ps = fakes(clock, "a", "b")
    ps["a"].hold = asyncio.Event()  # a answers nothing until released
    models = {"m": deployments(("a", 1), ("b", 1))}
    models["m"].routing = "least-busy"
    r = router(clock, ps, models)
    tasks = []
    for _ in range(40):
        tasks.append(asyncio.create_task(r.complete(ask())))
        await asyncio.sleep(0)
    assert ps["a"].calls == 1 and ps["b"].calls == 39
    ps["a"].hold.set()
    served = Counter(t.deployment for t in await asyncio.gather(*tasks))
    assert served == {"a": 1, "b": 39}


async def test_lowest_latency_shifts_after_a_slowdown_and_back_after_recovery() -> None:
    clock = Clock()
    ps = {"a": FakeProvider("a", clock, latency=0.1), "b": FakeProvider("b", clock, latency=0.2)}
    models = {"m": deployments(("a", 1), ("b", 1))}
    models["m"].routing = "lowest-latency"
    r = router(clock, ps, models)

    async def phase(n: int) -> Counter[str]:
        served = [(await r.complete(ask())).deployment for _ in range(n)]
        return Counter(served[-100:])

    assert (await phase(200))["a"] >= 85  # a is faster (5 % explore)
    ps["a"].latency = 1.0  # a slows down
    assert (await phase(200))["b"] >= 85
    ps["a"].latency = 0.05  # a recovers: exploration notices
    assert (await phase(400))["a"] >= 85


async def test_usage_steers_to_the_deployment_with_most_budget_left() -> None:
    clock = Clock()
    ps = fakes(clock, "a", "b")
    models = {"m": ModelConfig(routing="usage", deployments=[
        DeploymentConfig(provider="a", model="x", name="a", rpm=100),
        DeploymentConfig(provider="b", model="x", name="b", rpm=100)])}
    limiter = RateLimiter.from_config(RateLimitConfig(enabled=True),
                                      {n: p.config for n, p in ps.items()}, models,
                                      store=MemoryLimitStore(clock))
    for _ in range(60):  # someone else (another worker) spent most of a's budget
        await limiter.acquire("a", "m", 0, deployment="a")
    r = router(clock, ps, models, limiter=limiter)
    served = Counter([(await r.complete(ask())).deployment for _ in range(50)])
    # a is tried once (its budget unknown until then), then b has more left every time.
    assert served == {"a": 1, "b": 49}


@pytest.mark.parametrize("routing", ["weighted", "least-busy", "lowest-latency", "usage"])
async def test_an_over_budget_deployment_is_skipped_in_every_strategy(routing: str) -> None:
    clock = Clock()
    ps = fakes(clock, "a", "b")
    models = {"m": ModelConfig(routing=routing, deployments=[  # type: ignore[arg-type]
        DeploymentConfig(provider="a", model="x", name="a", rpm=2, weight=100),
        DeploymentConfig(provider="b", model="x", name="b")])}
    limiter = RateLimiter.from_config(RateLimitConfig(enabled=True),
                                      {n: p.config for n, p in ps.items()}, models,
                                      store=MemoryLimitStore(clock))
    r = router(clock, ps, models, limiter=limiter)
    served = Counter([(await r.complete(ask())).deployment for _ in range(20)])
    assert served["a"] <= 2 and sum(served.values()) == 20 and ps["a"].calls <= 2


# --- retries and fallbacks ---------------------------------------------------------------


async def test_retries_move_to_another_deployment_before_fallbacks() -> None:
    clock = Clock()
    log: list[str] = []
    ps = fakes(clock, "a", "b", "f", log=log)
    ps["a"].script.extend([500, 500])
    ps["b"].script.extend([503, 503])
    models = {"m": deployments(("a", 1), ("b", 1)), "n": ModelConfig(provider="f")}
    models["m"].fallbacks = ["n"]
    r = router(clock, ps, models, max_retries=1)
    routed = await r.complete(ask())
    assert sorted(log[:2]) == ["a", "b"]  # the retry goes to the other deployment first
    assert log[2:4] == log[:2]  # then each is retried once, with backoff
    assert log[4:] == ["f"] and routed.fallback and routed.attempts == 5
    assert len(clock.slept) == 2  # backoff only before trying the same deployment again


async def test_a_request_error_is_answered_at_once() -> None:
    clock = Clock()
    ps = fakes(clock, "a", "b")
    ps["a"].script.extend([400])
    ps["b"].script.extend([400])
    r = router(clock, ps, {"m": deployments(("a", 1), ("b", 1))}, max_retries=2)
    with pytest.raises(GatewayError):
        await r.complete(ask())
    assert ps["a"].calls + ps["b"].calls == 1


# --- the breaker, through the router ----------------------------------------------------


async def test_request_errors_never_count() -> None:
    clock = Clock()
    ps = fakes(clock, "a")
    for status in (400, 404, 413, 422) * 5:
        ps["a"].script.append(status)
    r = router(clock, ps, {"m": deployments(("a", 1))},
               cooldown=CooldownConfig(min_requests=2, failures=1))
    for _ in range(20):
        with pytest.raises(GatewayError):
            await r.complete(ask())
    info = r.health()["deployments"]["a"]  # type: ignore[index]
    assert info["state"] == "closed" and info["window_requests"] == 0
    assert (await r.complete(ask())).deployment == "a"


async def test_a_retried_request_counts_once_and_does_not_shut_its_alias() -> None:
    # The report: one request met three 500s in a row; the next five must reach
    # the (healthy again) upstream, not get 503 for 30 s.
    clock = Clock()
    ps = fakes(clock, "a")
    ps["a"].script.extend([500, 500, 500])
    r = router(clock, ps, {"m": ModelConfig(provider="a")}, max_retries=2)
    with pytest.raises(UpstreamError):
        await r.complete(ask())
    assert ps["a"].calls == 3
    info = r.health()["deployments"]["a/m"]  # type: ignore[index]
    assert (info["window_requests"], info["window_failures"]) == (1, 1)
    for _ in range(5):
        assert (await r.complete(ask())).provider == "a"
    assert ps["a"].calls == 8


async def test_three_failures_in_a_hundred_keep_the_other_ninety_seven_served() -> None:
    clock = Clock()
    ps = fakes(clock, "a")
    for i in range(100):
        ps["a"].script.append(500 if i in (10, 11, 12) else None)
    obs = Recorder()
    r = router(clock, ps, {"m": ModelConfig(provider="a")}, observer=obs)
    ok = errors = 0
    for _ in range(100):
        try:
            await r.complete(ask())
            ok += 1
        except UpstreamError:
            errors += 1
    assert (ok, errors) == (97, 3)
    assert obs.circuits == [] and r.health()["deployments"]["a/m"]["state"] == "closed"  # type: ignore[index]


async def test_half_the_requests_failing_opens_it_and_moves_traffic() -> None:
    clock = Clock()
    ps = fakes(clock, "a", "b")
    ps["a"].script.extend([500] * 1000)
    obs = Recorder()
    r = router(clock, ps, {"m": deployments(("a", 1), ("b", 1))}, observer=obs,
               cooldown=CooldownConfig(min_requests=4, failure_rate=0.5, failures=1))
    served = Counter([(await r.complete(ask())).deployment for _ in range(100)])
    assert served == {"b": 100}  # no client saw an error
    assert ps["a"].calls == 4  # min_requests, all failed: open, then skipped
    assert obs.circuits == [("a", True)]
    assert r.health()["models"]["m"]["open_circuit"] is False  # type: ignore[index]


async def test_an_auth_failure_opens_at_once() -> None:
    clock = Clock()
    ps = fakes(clock, "a", "b")
    ps["a"].script.extend([401])
    r = router(clock, ps, {"m": deployments(("a", 1000), ("b", 1))})
    assert (await r.complete(ask())).deployment == "b"
    assert r.health()["deployments"]["a"]["state"] == "open"  # type: ignore[index]
    for _ in range(10):
        await r.complete(ask())
    assert ps["a"].calls == 1


async def test_the_last_deployment_stays_in_use_when_its_circuit_is_open() -> None:
    clock = Clock()
    ps = fakes(clock, "a")
    ps["a"].script.extend([401])
    obs = Recorder()
    r = router(clock, ps, {"m": ModelConfig(provider="a")}, observer=obs)
    with pytest.raises(UpstreamError):
        await r.complete(ask())
    assert r.health()["models"]["m"]["open_circuit"] is True  # type: ignore[index]
    assert obs.open == [("m", True)]
    # Open, cooling down, and the only door: the request goes through as a probe ...
    routed = await r.complete(ask())
    assert routed.deployment == "a/m" and ps["a"].calls == 2
    # ... whose success closes the circuit.
    assert r.health()["deployments"]["a/m"]["state"] == "closed"  # type: ignore[index]
    assert r.health()["models"]["m"]["open_circuit"] is False  # type: ignore[index]
    assert obs.open == [("m", True), ("m", False)]
    assert obs.circuits == [("a/m", True), ("a/m", False)]


async def test_when_every_door_is_shut_the_first_opened_gets_the_request() -> None:
    clock = Clock()
    ps = {"a": FakeProvider("a", clock, latency=1.0), "b": FakeProvider("b", clock)}
    ps["a"].script.extend([401])
    ps["b"].script.extend([401])
    models = {"m": ModelConfig(provider="a", fallbacks=["n"]), "n": ModelConfig(provider="b")}
    r = router(clock, ps, models)
    with pytest.raises(UpstreamError):
        await r.complete(ask())  # a opens, then b a second later
    health = r.health()
    assert health["models"]["m"]["open_circuit"] is True  # type: ignore[index]
    assert health["models"]["n"]["open_circuit"] is True  # type: ignore[index]
    routed = await r.complete(ask())
    assert routed.provider == "a" and (ps["a"].calls, ps["b"].calls) == (2, 1)
    assert r.health()["models"]["m"]["open_circuit"] is False  # type: ignore[index]
    assert r.health()["models"]["n"]["open_circuit"] is True  # type: ignore[index]


# --- what the request says of its deployment ------------------------------------------


async def test_routed_names_the_deployment_and_metrics_label_it() -> None:
    clock = Clock()
    ps = fakes(clock, "a")
    obs = Recorder()
    models = {"m": ModelConfig(deployments=[DeploymentConfig(provider="a", model="gpt",
                                                             name="eu-1")])}
    r = router(clock, ps, models, observer=obs)
    routed = await r.complete(ask())
    assert (routed.deployment, routed.provider, routed.model) == ("eu-1", "a", "gpt")
    direct = await r.complete(ask("a/anything-a-client-types"))
    assert direct.deployment == "a/anything-a-client-types"
    assert obs.attempts == [("eu-1", "ok", "chat"), ("a/*", "ok", "chat")]


async def test_a_stream_counts_in_flight_until_closed() -> None:
    clock = Clock()
    ps = fakes(clock, "a")
    r = router(clock, ps, {"m": ModelConfig(provider="a")})
    routed = await r.stream(ask())
    assert isinstance(routed, RoutedStream) and routed.deployment == "a/m"
    assert r.health()["deployments"]["a/m"]["in_flight"] == 1  # type: ignore[index]
    assert [e async for e in routed.stream] == [b"data: {}\n\n"]
    await routed.stream.aclose()
    assert r.health()["deployments"]["a/m"]["in_flight"] == 0  # type: ignore[index]


async def test_a_deployment_with_its_own_pool_timeouts_or_headers_gets_its_own_session(
) -> None:
    clock = Clock()
    shared = ProviderConfig(kind="openai", base_url="http://fake", api_key="k",
                            headers={"x-org": "o"})
    ps = {"a": FakeProvider("a", clock, config=shared)}
    made: list[tuple[str, ProviderConfig, FakeProvider]] = []

    def factory(name: str, config: ProviderConfig) -> FakeProvider:
        p = FakeProvider(name, clock, config=config)
        made.append((name, config, p))
        return p

    models = {"m": ModelConfig(deployments=[
        DeploymentConfig(provider="a", model="x", name="eu", headers={"x-region": "eu"},
                         max_connections=4, first_byte_timeout_s=5.0),
        DeploymentConfig(provider="a", model="x", name="plain", weight=0)])}
    r = router(clock, ps, models, provider_factory=factory)
    assert len(made) == 1
    name, config, own = made[0]
    assert name == "a" and config.api_key == "k"
    assert config.headers == {"x-org": "o", "x-region": "eu"}
    assert (config.max_connections, config.first_byte_timeout_s) == (4, 5.0)
    assert config.total_timeout_s == shared.total_timeout_s
    await r.start()
    assert own.started and ps["a"].started
    routed = await r.complete(ask())
    assert routed.deployment == "eu" and own.calls == 1 and ps["a"].calls == 0
    await r.aclose()
    assert not own.started


# --- configuration -------------------------------------------------------------------------


BASE = {"providers": {"openai": {"api_key": "k"},
                      "eu": {"kind": "openai", "base_url": "http://eu"}}}


@pytest.mark.parametrize(("models", "error"), [
    ({"m": {"deployments": [{"provider": "openai", "model": "gpt-4o", "weight": 3},
                            {"provider": "eu", "model": "gpt-4o", "weight": 1}],
            "routing": "least-busy"}}, None),
    ({"m": {"provider": "openai", "deployments": [{"provider": "openai"}]}},
     "`llm.models.m.deployments`: set with provider/model"),
    ({"m": {}}, "`llm.models.m.provider`: missing"),
    ({"m": {"deployments": [{"provider": "nope"}]}},
     "`llm.models.m.deployments[0].provider`: 'nope' is not a configured provider"),
    ({"m": {"deployments": [{"provider": "openai", "weight": -1}]}}, "Expected `float` >= 0"),
    ({"m": {"deployments": [{"provider": "openai", "weight": 0}]}}, "every weight is 0"),
    ({"m": {"deployments": [{"provider": "openai"}, {"provider": "openai"}]}},
     "'openai/m' names two deployments of this alias"),
    ({"m": {"deployments": [{"provider": "openai", "model": "x", "rpm": 3}]},
      "n": {"deployments": [{"provider": "openai", "model": "x"}]}},
     "deployment 'openai/x' is also in alias 'm' with other settings"),
    ({"m": {"deployments": [{"provider": "openai", "model": "x", "weight": 3}]},
      "n": {"deployments": [{"provider": "openai", "model": "x"}]}}, None),
    ({"m": {"provider": "openai", "routing": "fastest"}},
     "expected one of ['least-busy', 'lowest-latency', 'usage', 'weighted']"),
    ({"m": {"deployments": [{"provider": "openai", "max_connections": 0}]}},
     "Expected `int` >= 1"),
    ({"m": {"deployments": [{"provider": "openai", "timeout": 1}]}},
     "unknown field `timeout`"),
])
def test_deployment_config(models: dict[str, Any], error: str | None) -> None:
    data = {"llm": {**BASE, "models": models}}
    if error is None:
        parse_config(data)
        return
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(data)
    assert error in str(info.value)


@pytest.mark.parametrize(("cooldown", "error"), [
    ({"failure_rate": 1.5}, "`llm.cooldown.failure_rate` = 1.5: Expected `float` <= 1.0"),
    ({"min_requests": 0}, "`llm.cooldown.min_requests` = 0: Expected `int` >= 1"),
    ({"probes": 0}, "`llm.cooldown.probes` = 0"),
    ({"failures": 1000, "window_s": 10, "min_requests": 20, "failure_rate": 0.25,
      "probes": 3}, None),
])
def test_cooldown_config(cooldown: dict[str, Any], error: str | None) -> None:
    data = {"llm": {**BASE, "models": {"m": {"provider": "openai"}}, "cooldown": cooldown}}
    if error is None:
        assert parse_config(data).llm.cooldown.probes == 3
        return
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert error in str(info.value)


# --- what the observer sees ------------------------------------------------------------


async def test_each_attempt_is_announced_and_carries_the_observers_headers() -> None:
    clock = Clock()
    ps = fakes(clock, "a", "b")
    ps["a"].script.append(500)
    obs = Recorder()
    r = router(clock, ps, {"m": ModelConfig(provider="a", fallbacks=["b/x"])}, observer=obs)
    routed = await r.complete(ask())
    assert routed.deployment == "b/x"
    assert obs.started == [("a/m", 1), ("b/x", 2)]
    assert ps["a"].trace_headers == [{"traceparent": "attempt-1"}]
    assert ps["b"].trace_headers == [{"traceparent": "attempt-2"}]
    assert [(d, o) for d, o, _ in obs.attempts] == [("a/m", "status_500"), ("b/x", "ok")]


async def test_an_attempt_cut_by_the_client_is_reported_cancelled() -> None:
    clock = Clock()
    ps = fakes(clock, "a")
    ps["a"].hold = asyncio.Event()
    obs = Recorder()
    r = router(clock, ps, {"m": ModelConfig(provider="a")}, observer=obs)
    task = asyncio.ensure_future(r.complete(ask()))
    for _ in range(100):
        if ps["a"].calls:
            break
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert obs.attempts == [("a/m", "cancelled", "chat")]
    # Cancellation says nothing of the deployment's health.
    assert r.health()["deployments"]["a/m"]["window_failures"] == 0  # type: ignore[index]
