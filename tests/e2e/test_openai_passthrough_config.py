"""``[llm.passthrough]`` and the router around the OpenAI pass-through, with the official
openai SDK against the served gateway: allow/deny lists, the Admin API only with its own
key, OpenAI-Organization/Project only where the provider lets clients choose, failover and
retries where sending again is safe (connect errors; 5xx only with an Idempotency-Key),
breakers, and object ids routed back to their provider across gateways sharing a Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway_llm.headers import forwarded_headers, upstream_headers
from tests.fakes.upstream import ADMIN_KEY, OPENAI_KEY, Fail, FakeUpstream, PlainJson
from tests.gateway_process import GatewayProcess, free_port
from tests.redis_fixture import redis_server

GATEWAY_KEY = "gw-test-key"
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


def config(up: FakeUpstream, other: FakeUpstream, flaky: FakeUpstream, *,
           passthrough: str = "") -> str:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
    return f"""
[server]
api_keys = ["{GATEWAY_KEY}"]
[logging]
format = "json"
[sandbox]
enabled = false
[llm]
max_retries = 1
backoff_base_s = 0.01
[llm.cooldown]
min_requests = 1
failures = 1
cooldown_s = 60
[llm.passthrough]
{passthrough}
[llm.providers.openai]
kind = "openai"
base_url = "{up.openai_base_url}"
api_key = "{OPENAI_KEY}"
client_organization = true
headers = {{ "OpenAI-Organization" = "org-configured" }}
[llm.providers.other]
kind = "openai"
base_url = "{other.openai_base_url}"
api_key = "{OPENAI_KEY}"
headers = {{ "OpenAI-Organization" = "org-other" }}
[llm.providers.dead]
kind = "openai"
base_url = "{dead}"
api_key = "{OPENAI_KEY}"
[llm.providers.flaky]
kind = "openai"
base_url = "{flaky.openai_base_url}"
api_key = "{OPENAI_KEY}"
max_retries = 0
[llm.models.image]
provider = "openai"
model = "gpt-image-1"
[llm.models.image-dead]
provider = "dead"
model = "gpt-image-1"
fallbacks = ["image"]
[llm.models.image-flaky]
provider = "flaky"
model = "gpt-image-1"
fallbacks = ["image"]
[llm.models.image-flaky-2]
provider = "flaky"
model = "gpt-image-2"
fallbacks = ["image"]
[llm.models.image-flaky-only]
provider = "flaky"
model = "gpt-image-1"
[llm.models.whisper-dead]
provider = "dead"
model = "whisper-1"
fallbacks = ["openai/whisper-1"]
[llm.models.mod-other]
provider = "other"
model = "omni-moderation-latest"
"""


@pytest.fixture(scope="module")
def ups() -> Iterator[tuple[FakeUpstream, FakeUpstream, FakeUpstream]]:
    with FakeUpstream() as up, FakeUpstream() as other, FakeUpstream() as flaky:
        yield up, other, flaky


@pytest.fixture(scope="module")
def gateway(ups: tuple[FakeUpstream, FakeUpstream, FakeUpstream]) -> Iterator[GatewayProcess]:
    pt = f'deny = ["/vector_stores"]\nadmin = true\nadmin_key = "{ADMIN_KEY}"'
    with GatewayProcess(config(*ups, passthrough=pt)) as gw:
        yield gw


@pytest.fixture
def up(ups: tuple[FakeUpstream, FakeUpstream, FakeUpstream]) -> FakeUpstream:
    for u in ups:
        u.reset()
    return ups[0]


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=GATEWAY_KEY, base_url=gateway.url + "/v1",
                       max_retries=0) as c:
        yield c


def _sent(u: FakeUpstream, path: str) -> list[dict[str, str]]:
    return [r.headers for r in u.requests if r.path == path]


def test_client_organization_only_where_the_provider_allows_it(
        client: openai.OpenAI, up: FakeUpstream,
        ups: tuple[FakeUpstream, FakeUpstream, FakeUpstream]) -> None:
    billing = {"OpenAI-Organization": "org-client", "OpenAI-Project": "proj-client"}
    client.files.list(extra_headers=billing)
    sent = _sent(up, "/v1/files")[-1]
    assert sent["openai-organization"] == "org-client"
    assert sent["openai-project"] == "proj-client"
    assert sent["authorization"] == f"Bearer {OPENAI_KEY}"
    # "other" does not let clients choose: its configured organization goes, theirs not.
    client.moderations.create(model="mod-other", input="x", extra_headers=billing)
    sent = _sent(ups[1], "/v1/moderations")[-1]
    assert sent["openai-organization"] == "org-other" and "openai-project" not in sent
    # The same policy on a front door (Responses, native at openai).
    client.chat.completions.create(model="openai/gpt-4o", extra_headers=billing,
                                   messages=[{"role": "user", "content": "hi"}])
    assert _sent(up, "/v1/chat/completions")[-1]["openai-organization"] == "org-client"


def test_deny_list_is_a_404_without_an_upstream_call(client: openai.OpenAI,
                                                     up: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.vector_stores.create(name="docs")
    assert err.value.code == "unknown_url"
    assert not up.requests
    assert client.files.list() is not None  # the rest still passes


def test_admin_api_with_its_own_key(gateway: GatewayProcess, up: FakeUpstream) -> None:
    r = httpx.get(gateway.url + "/v1/organization/users", headers=AUTH)
    assert r.status_code == 200 and r.json()["object"] == "list"
    sent = _sent(up, "/v1/organization/users")
    assert [h["authorization"] for h in sent] == [f"Bearer {ADMIN_KEY}"]
    # Without the gateway's key it never gets there.
    r = httpx.get(gateway.url + "/v1/organization/users",
                  headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 401 and len(_sent(up, "/v1/organization/users")) == 1


def test_connect_error_fails_over_even_for_a_streamed_upload(
        client: openai.OpenAI, up: FakeUpstream, gateway: GatewayProcess) -> None:
    raw = client.images.with_raw_response.generate(model="image-dead", prompt="a fox")
    assert raw.headers["x-gateway-provider"] == "openai"
    assert raw.parse().usage is not None
    # Multipart streams through without being kept: after a refused connection nothing of
    # it was sent, so it still goes to the next deployment, with that one's model.
    audio = b"\x00" * 200_000
    text = client.audio.transcriptions.create(model="whisper-dead", file=("a.mp3", audio))
    assert text.text == f"{len(audio)} bytes of whisper-1"
    # The dead deployment's breaker saw it (cooldown: one failure opens it).
    health = httpx.get(gateway.url + "/health/ready").json()
    assert health["llm"]["deployments"]["dead/gpt-image-1"]["state"] == "open"


def test_5xx_fails_over_only_when_sending_again_is_safe(
        client: openai.OpenAI, up: FakeUpstream, gateway: GatewayProcess,
        ups: tuple[FakeUpstream, FakeUpstream, FakeUpstream]) -> None:
    flaky = ups[2]
    # With an Idempotency-Key the 500 is sent again elsewhere.
    flaky.script(Fail(500), kind="platform")
    raw = client.images.with_raw_response.generate(
        model="image-flaky", prompt="a fox", extra_headers={"Idempotency-Key": "idem-1"})
    assert raw.headers["x-gateway-provider"] == "openai"
    assert len(_sent(flaky, "/v1/images/generations")) == 1
    # Without one (the openai SDK sends none), the upstream may have acted on it: its 5xx
    # is the answer. (Another deployment: the first 500 opened that one's circuit.)
    flaky.script(Fail(503, message="busy"), kind="platform")
    r = httpx.post(gateway.url + "/v1/images/generations", headers=AUTH,
                   json={"model": "image-flaky-2", "prompt": "a fox"})
    assert r.status_code == 503 and r.json()["error"]["message"] == "busy"
    assert r.headers["x-gateway-provider"] == "flaky"
    assert len(_sent(flaky, "/v1/images/generations")) == 2
    assert len(_sent(up, "/v1/images/generations")) == 1  # only the first request's


def test_the_last_refusal_is_the_answer(client: openai.OpenAI, up: FakeUpstream,
                                        ups: tuple[FakeUpstream, FakeUpstream, FakeUpstream],
                                        ) -> None:
    flaky = ups[2]
    flaky.script(Fail(429, message="slow down", headers={"retry-after": "0"}),
                 kind="platform")
    with pytest.raises(openai.RateLimitError) as err:
        client.images.generate(model="image-flaky-only", prompt="a fox")
    assert "slow down" in err.value.message
    assert err.value.response.headers["x-gateway-provider"] == "flaky"
    assert len(_sent(flaky, "/v1/images/generations")) == 1  # its max_retries = 0


def test_usage_is_counted_and_labelled_passthrough(client: openai.OpenAI,
                                                   gateway: GatewayProcess,
                                                   up: FakeUpstream) -> None:
    client.images.generate(model="image", prompt="one two three")
    text = httpx.get(gateway.url + "/metrics").text
    lines = [line for line in text.splitlines()
             if "gpt-image-1" in line and "tokens" in line and not line.startswith("#")]
    assert lines, "no token metric for the image model"
    assert any('api="passthrough"' in line for line in text.splitlines()
               if "gpt-image-1" in line)


def test_stored_chat_completions_list_passes_through(client: openai.OpenAI,
                                                     up: FakeUpstream) -> None:
    page = client.chat.completions.list(limit=2)
    assert page.data == []
    assert [(q.method, q.path) for q in up.requests] == [("GET", "/v1/chat/completions")]


def test_previous_response_made_at_the_provider_goes_along(client: openai.OpenAI,
                                                           gateway: GatewayProcess,
                                                           up: FakeUpstream) -> None:
    def stored() -> int:
        ready = httpx.get(gateway.url + "/health/ready").json()
        return int(ready["llm"]["responses_store"]["items"])

    # A response made at the provider itself, not through the gateway.
    made = httpx.post(up.openai_base_url + "/responses", json={
        "model": "gpt-4o", "input": "remember alpha"},
        headers={"authorization": f"Bearer {OPENAI_KEY}"}).json()
    before = stored()
    second = client.responses.create(model="openai/gpt-4o", input="and beta",
                                     previous_response_id=made["id"])
    assert second.output_text == "echo: and beta"
    sent = [r for r in up.requests if r.path == "/v1/responses"][-1]
    assert sent.body["previous_response_id"] == made["id"]
    # Not a conversation the gateway saw whole: it stores nothing of it.
    assert stored() == before


def test_a_completions_stream_answered_as_json_is_replayed(client: openai.OpenAI,
                                                           up: FakeUpstream) -> None:
    up.script(PlainJson(), kind="completions")
    chunks = list(client.completions.create(model="openai/gpt-3.5-turbo-instruct",
                                            prompt="say hi", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: say hi"


def test_header_policy_unit() -> None:
    client = {"openai-beta": "assistants=v2", "idempotency-key": "k",
              "authorization": "Bearer gw", "openai-project": "p", "x-stainless-lang": "py"}
    forwarded = forwarded_headers(client)
    assert forwarded == {"openai-beta": "assistants=v2", "idempotency-key": "k",
                         "openai-project": "p"}
    provider = {"authorization": "Bearer sk", "OpenAI-Project": "mine"}
    assert upstream_headers(provider, forwarded, client_organization=False) == {
        "authorization": "Bearer sk", "OpenAI-Project": "mine",
        "openai-beta": "assistants=v2", "idempotency-key": "k"}
    assert upstream_headers(provider, forwarded, client_organization=True) == {
        "authorization": "Bearer sk", "openai-project": "p",
        "openai-beta": "assistants=v2", "idempotency-key": "k"}


def test_disabled_passthrough_is_a_404(ups: tuple[FakeUpstream, FakeUpstream, FakeUpstream],
                                       ) -> None:
    for u in ups:
        u.reset()
    with GatewayProcess(config(*ups, passthrough="enabled = false")) as gw:
        for path in ("/v1/files", "/v1/organization/users", "/v1/batches/batch_1"):
            r = httpx.get(gw.url + path, headers=AUTH)
            assert r.status_code == 404, path
    assert not ups[0].requests


def test_gateway_limits_apply_to_passthrough_calls(
        ups: tuple[FakeUpstream, FakeUpstream, FakeUpstream]) -> None:
    up = ups[0]
    up.reset()
    limited = config(*ups) + "[rate_limit]\nenabled = true\nrequests_per_minute = 2\n"
    with GatewayProcess(limited) as gw:
        got = [httpx.get(gw.url + "/v1/files", headers=AUTH) for _ in range(3)]
    assert [r.status_code for r in got] == [200, 200, 429]
    assert len(_sent(up, "/v1/files")) == 2
    # The gateway's limit answers for the rate headers, not the upstream's.
    assert got[0].headers["x-ratelimit-limit-requests"] == "2"
    assert int(got[2].headers["retry-after"]) >= 1


def test_ids_route_back_across_gateways_sharing_redis(
        ups: tuple[FakeUpstream, FakeUpstream, FakeUpstream]) -> None:
    up, other, _ = ups
    for u in ups:
        u.reset()
    with redis_server() as redis:
        shared = f'[llm.responses]\nstore = "redis"\nredis_url = "{redis.url}"\n'
        toml = config(*ups) + shared
        with GatewayProcess(toml) as a, GatewayProcess(toml) as b:
            with openai.OpenAI(api_key=GATEWAY_KEY, base_url=a.url + "/v1",
                               max_retries=0) as ca:
                mod = ca.moderations.create(model="mod-other", input="x")
            with openai.OpenAI(api_key=GATEWAY_KEY, base_url=b.url + "/v1",
                               max_retries=0) as cb:
                cb.chat.completions.retrieve(mod.id)
    assert [r.path for r in other.requests] == ["/v1/moderations",
                                                f"/v1/chat/completions/{mod.id}"]
    assert not [r for r in up.requests if mod.id in r.path]
