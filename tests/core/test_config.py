"""Config loading: the seed's file, env expansion, and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_core.config import ConfigError, load_config

SEED = """\
[server]
host = "0.0.0.0"
port = 8080
[llm.providers.openai]
api_key = "${OPENAI_API_KEY}"
enabled = true
[llm.providers.anthropic]
api_key = "${ANTHROPIC_API_KEY}"
enabled = true
[llm.models.gpt-4o]
provider = "openai"
fallbacks = ["anthropic"]
[sandbox]
firecracker_path = "/usr/bin/firecracker"
kernel_path = "/var/lib/firecracker/vmlinux"
rootfs_path = "/var/lib/firecracker/rootfs.ext4"
[sandbox.pool]
min_ready = 2
max_total = 10
[rate_limit]
enabled = true
requests_per_minute = 60
tokens_per_minute = 100000
"""

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_seed_config_loads_unchanged(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED), env={"OPENAI_API_KEY": "sk-1",
                                                  "ANTHROPIC_API_KEY": "sk-ant-2"})
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 8080
    openai = cfg.llm.providers["openai"]
    assert openai.kind == "openai" and openai.base_url == "https://api.openai.com/v1"
    assert openai.api_key == "sk-1"
    anthropic = cfg.llm.providers["anthropic"]
    assert anthropic.kind == "anthropic" and anthropic.api_key == "sk-ant-2"
    # The bare fallback resolves to the provider's default model.
    assert anthropic.default_model
    assert cfg.llm.models["gpt-4o"].fallbacks == ["anthropic"]
    assert cfg.sandbox.pool.min_ready == 2 and cfg.sandbox.pool.max_total == 10
    assert cfg.rate_limit.enabled and cfg.rate_limit.requests_per_minute == 60


def test_example_config_loads() -> None:
    cfg = load_config(ROOT / "config.example.toml", env={})
    assert cfg.server.host == "127.0.0.1"
    assert "gpt-4o" in cfg.llm.models


def test_env_expansion_with_defaults(tmp_path: Path) -> None:
    text = """
[server]
port = "${PORT:-9000}"
api_keys = ["${KEY}", "literal-$${NOT_A_VAR}"]
"""
    cfg = load_config(write(tmp_path, text), env={"KEY": "k1"})
    assert cfg.server.port == 9000
    assert cfg.server.api_keys == ["k1", "literal-${NOT_A_VAR}"]
    cfg = load_config(write(tmp_path, text), env={"KEY": "k1", "PORT": "7000"})
    assert cfg.server.port == 7000


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("min_ready = 2", "min_ready = 20"),
         "`sandbox.pool`: min_ready = 20 is greater than max_total = 10"),
        (("port = 8080", 'port = "eighty"'), "`server.port` = 'eighty': Expected `int`"),
        (("max_total = 10", "max_total = 10\nmax_totl = 3"), "unknown field `max_totl`"),
        (('fallbacks = ["anthropic"]', 'fallbacks = ["nobody"]'),
         "`llm.models.gpt-4o.fallbacks[0]`: 'nobody' is neither"),
        (('provider = "openai"', 'provider = "opneai"'),
         "`llm.models.gpt-4o.provider`: 'opneai' is not a configured provider"),
        (('backend = "x"' if False else "[rate_limit]", '[rate_limit]\nbackend = "mysql"'),
         "`rate_limit.backend` = 'mysql': expected one of ['memory', 'redis']"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, SEED.replace(*change)), env={})
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_bare_fallback_needs_default_model(tmp_path: Path) -> None:
    text = """
[llm.providers.local]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
[llm.providers.openai]
[llm.models.m]
provider = "openai"
fallbacks = ["local"]
"""
    with pytest.raises(ConfigError, match=r"`llm.models.m.fallbacks\[0\]`.*default_model"):
        load_config(write(tmp_path, text), env={})


def test_custom_provider_needs_kind_and_base_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"`llm.providers.vllm.kind`: missing"):
        load_config(write(tmp_path, "[llm.providers.vllm]\napi_key='x'\n"), env={})
    with pytest.raises(ConfigError, match=r"`llm.providers.vllm.base_url`: missing"):
        load_config(write(tmp_path, "[llm.providers.vllm]\nkind='openai'\n"), env={})


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[server\nport=1"))


def test_secrets_do_not_show_in_repr(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED), env={"OPENAI_API_KEY": "sk-secret-value"})
    assert "sk-secret-value" not in repr(cfg)
    assert "sk-secret-value" not in repr(cfg.llm.providers["openai"])


TEMPLATES = """\
[sandbox.templates.datasci]
apt = ["python3-numpy", "python3-pandas"]
pip = ["polars==1.*"]
files = { "/etc/motd" = "hello" }
runtimes = ["python", "node"]
[sandbox.templates.datasci.pool]
min_ready = 1
"""


def test_templates_load_and_default_to_none(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, SEED), env={}).sandbox.templates == {}
    t = load_config(write(tmp_path, SEED + TEMPLATES), env={}).sandbox.templates["datasci"]
    assert (t.base, t.apt, t.pip, t.files, t.runtimes, t.pool.min_ready) == (
        "debian-bookworm", ["python3-numpy", "python3-pandas"], ["polars==1.*"],
        {"/etc/motd": "hello"}, ["python", "node"], 1)
    bare = load_config(write(tmp_path, "[sandbox.templates.t]\n"), env={}).sandbox.templates
    assert (bare["t"].runtimes, bare["t"].apt, bare["t"].pool.min_ready) == (["python"], [], 0)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('apt = ["python3-numpy"', 'aptt = ["python3-numpy"'),
         "unknown field `aptt` at `sandbox.templates.datasci`"),
        (('"python3-pandas"]', '"Pandas Please"]'),
         "`sandbox.templates.datasci.apt[1]` = 'Pandas Please': Expected `str` matching"),
        (('["polars==1.*"]', '["--index-url=http://evil"]'),
         "`sandbox.templates.datasci.pip[0]` = '--index-url=http://evil'"),
        (('"node"]', '"perl"]'),
         "`sandbox.templates.datasci.runtimes[1]` = 'perl': expected one of"),
        (("[sandbox.templates.datasci]\n", '[sandbox.templates.datasci]\nbase = "alpine"\n'),
         "`sandbox.templates.datasci.base` = 'alpine': expected one of ['debian-bookworm']"),
        (('"/etc/motd"', '"/work/motd"'),
         "`sandbox.templates.datasci.files`: '/work/motd': /work is mounted over"),
        (('"/etc/motd"', '"/etc/../motd"'),
         "`sandbox.templates.datasci.files`: '/etc/../motd': expected a normalised"),
        (('"/etc/motd"', '"etc/motd"'), "`sandbox.templates.datasci.files`: a key: Expected"),
        (("min_ready = 1\n", "min_ready = -1\n"),
         "`sandbox.templates.datasci.pool.min_ready` = -1: Expected `int` >= 0"),
        (("min_ready = 1\n", "min_ready = 9\n"),
         "pool.min_ready of the templates and of sandbox.pool add up to 11, more than "
         "sandbox.pool.max_total = 10"),
        (("min_ready = 1\n", "min_ready = 1\nmax_total = 3\n"),
         "unknown field `max_total` at `sandbox.templates.datasci.pool`"),
        (('runtimes = ["python", "node"]', "runtimes = []"),
         "`sandbox.templates.datasci.runtimes`: empty"),
        (("templates.datasci]", "templates.default]"),
         "`sandbox.templates.default`: the name 'default' is reserved"),
        (("templates.datasci]", "templates.Data_Sci]"),
         "`sandbox.templates`: a key: Expected `str` matching"),
    ],
)
def test_bad_template_names_the_key(tmp_path: Path, change: tuple[str, str],
                                    expected: str) -> None:
    text = SEED + TEMPLATES.replace(*change)
    if "Data_Sci" in text:
        text = text.replace("datasci.pool", "Data_Sci.pool")
    if "templates.default]" in text:
        text = text.replace("datasci.pool", "default.pool")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message


def test_telemetry_is_off_by_default_and_checked(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[server]\nport = 1\n"), env={})
    assert cfg.telemetry.enabled is False and cfg.telemetry.capture_content is False
    cfg = load_config(write(tmp_path, """
[telemetry]
enabled = true
protocol = "grpc"
endpoint = "http://collector:4317"
headers = { authorization = "Bearer ${OTLP_TOKEN}" }
sample_ratio = 0.25
"""), env={"OTLP_TOKEN": "tok-secret"})
    t = cfg.telemetry
    assert t.enabled and t.protocol == "grpc" and t.sample_ratio == 0.25
    assert t.headers == {"authorization": "Bearer tok-secret"}
    assert "tok-secret" not in repr(t)
    for bad, where in (('protocol = "http/json"', "telemetry.protocol"),
                       ("sample_ratio = 2.0", "telemetry.sample_ratio"),
                       ("capture_contents = true", "capture_contents")):
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            load_config(write(tmp_path, f"[telemetry]\n{bad}\n"), env={})
