"""Several deployments behind one model, end to end: the official openai SDK talks to the
served gateway, whose alias spreads over fake upstreams on separate ports (one port, one
deployment) by weight; killing the heavy one moves its share to the other without client
errors; a lone deployment failing now and then keeps serving the rest."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.fakes.upstream import OPENAI_KEY, Fail, FakeUpstream
from tests.gateway_process import GatewayProcess

GATEWAY_KEY = "gw-test-key"
WORKERS = 8


def config(heavy: FakeUpstream, light: FakeUpstream, standby: FakeUpstream,
           solo: FakeUpstream) -> str:
    providers = "".join(f"""
[llm.providers.{name}]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
first_byte_timeout_s = 5.0
""" for name, up in (("heavy", heavy), ("light", light), ("standby", standby), ("solo", solo)))
    return f"""
[server]
api_keys = ["{GATEWAY_KEY}"]
[logging]
access_log = false
[sandbox]
enabled = false
[llm]
max_retries = 1
backoff_base_s = 0.01
backoff_max_s = 0.05
{providers}
[llm.providers.solo-once]
kind = "openai"
base_url = "{solo.openai_base_url}"
api_key = "{OPENAI_KEY}"
max_retries = 0
[llm.models.spread]
routing = "weighted"
deployments = [
  {{ provider = "heavy", model = "gpt-4o", weight = 3 }},
  {{ provider = "light", model = "gpt-4o", weight = 1, headers = {{ "x-region" = "eu" }} }},
  {{ provider = "standby", model = "gpt-4o", weight = 0 }},
]
[llm.models.lonely]
provider = "solo-once"
model = "gpt-4o"
"""


@pytest.fixture
def upstreams() -> Iterator[dict[str, FakeUpstream]]:
    with FakeUpstream() as heavy, FakeUpstream() as light, FakeUpstream() as standby, \
            FakeUpstream() as solo:
        yield {"heavy": heavy, "light": light, "standby": standby, "solo": solo}


@pytest.fixture
def gateway(upstreams: dict[str, FakeUpstream]) -> Iterator[GatewayProcess]:
    ups = upstreams
    with GatewayProcess(config(ups["heavy"], ups["light"], ups["standby"], ups["solo"])) as gw:
        yield gw


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY,
                       max_retries=0, timeout=20) as c:
        yield c


def ask(client: openai.OpenAI, model: str = "spread") -> str:
    """One chat completion; the deployment that served it."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=20)
    assert raw.parse().choices[0].message.content == "echo: hello"
    return raw.headers["x-gateway-deployment"]


def test_weights_three_one_zero(client: openai.OpenAI, gateway: GatewayProcess,
                                upstreams: dict[str, FakeUpstream]) -> None:
    n = 1000
    with ThreadPoolExecutor(WORKERS) as pool:
        served = Counter(pool.map(lambda _: ask(client), range(n)))
    assert served["heavy/gpt-4o"] == pytest.approx(0.75 * n, abs=0.06 * n)
    assert served["light/gpt-4o"] == pytest.approx(0.25 * n, abs=0.06 * n)
    assert served["standby/gpt-4o"] == 0 and sum(served.values()) == n
    # Each deployment is one upstream; the light one carries its own header.
    assert len(upstreams["heavy"].requests) == served["heavy/gpt-4o"]
    assert len(upstreams["light"].requests) == served["light/gpt-4o"]
    assert upstreams["standby"].requests == []
    assert all(r.headers.get("x-region") == "eu" for r in upstreams["light"].requests)
    assert all("x-region" not in r.headers for r in upstreams["heavy"].requests)
    metrics = httpx.get(gateway.url + "/metrics").text
    line = next(m for m in metrics.splitlines()
                if m.startswith("gateway_llm_requests_total{") and 'deployment="heavy/gpt-4o"'
                in m and 'outcome="ok"' in m)
    assert float(line.rsplit(" ", 1)[1]) == served["heavy/gpt-4o"]


def test_killing_the_heavy_deployment_moves_its_share(
        client: openai.OpenAI, gateway: GatewayProcess,
        upstreams: dict[str, FakeUpstream]) -> None:
    n, kill_at = 600, 150
    done = 0
    lock = threading.Lock()
    killed = threading.Event()
    results: list[tuple[bool, str | None]] = []  # (sent after the kill, deployment or None)

    def one(_: int) -> None:
        nonlocal done
        after = killed.is_set()
        try:
            served: str | None = ask(client)
        except openai.APIError:
            served = None
        with lock:
            results.append((after, served))
            done += 1
            if done == kill_at:
                upstreams["heavy"].stop()  # mid-run, with requests in flight on it
                killed.set()

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, range(n)))
    before = Counter(s for after, s in results if not after)
    after = Counter(s for after, s in results if after)
    errors = sum(1 for _, s in results if s is None)
    # Only requests in flight on it when it died may fail (and even those fail over).
    assert errors <= WORKERS
    assert before["heavy/gpt-4o"] > before["light/gpt-4o"]
    assert set(after) == {"light/gpt-4o"} and after["light/gpt-4o"] >= n - kill_at - WORKERS
    assert upstreams["standby"].requests == []
    ready = httpx.get(gateway.url + "/health/ready").json()["llm"]
    assert ready["deployments"]["heavy/gpt-4o"]["state"] == "open"
    assert ready["models"]["spread"]["open_circuit"] is False


def test_a_lone_deployment_failing_three_in_a_hundred_serves_the_other_ninety_seven(
        client: openai.OpenAI, gateway: GatewayProcess,
        upstreams: dict[str, FakeUpstream]) -> None:
    solo = upstreams["solo"]
    outcomes = []
    for i in range(100):
        if i in (10, 11, 60):  # two in a row, and one later
            solo.script(Fail(500))
        try:
            outcomes.append(ask(client, "lonely"))
        except openai.InternalServerError:
            outcomes.append("500")
    assert Counter(outcomes) == {"solo-once/gpt-4o": 97, "500": 3}
    assert len(solo.requests) == 100  # every request reached the upstream
    ready = httpx.get(gateway.url + "/health/ready").json()["llm"]
    assert ready["deployments"]["solo-once/gpt-4o"]["state"] == "closed"

