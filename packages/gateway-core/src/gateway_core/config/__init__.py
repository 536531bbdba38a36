"""The gateway's configuration: TOML decoded with msgspec into Structs, ``${VAR}`` and
``${VAR:-default}`` read from the environment, cross-field checks done once at start.

Every problem raises :class:`ConfigError` with one line naming the key path, the value and
what was expected.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec
import msgspec.inspect

from gateway_core.config.llm import (
    CooldownConfig,
    DeploymentConfig,
    LLMConfig,
    ModelConfig,
    PassthroughConfig,
    ProviderConfig,
    ProviderKind,
    RateLimitConfig,
    ResponsesConfig,
    Routing,
)
from gateway_core.config.sandbox import (
    EgressConfig,
    PoolConfig,
    SandboxConfig,
    SandboxLimits,
    TemplateConfig,
    TemplatePoolConfig,
)
from gateway_core.config.server import LoggingConfig, ServerConfig
from gateway_core.config.storage import StorageConfig
from gateway_core.config.telemetry import TelemetryConfig, TraceProtocol
from gateway_core.errors import ConfigError
from gateway_core.host_patterns import parse_pattern, within_any

__all__ = [
    "Config",
    "ConfigError",
    "CooldownConfig",
    "DeploymentConfig",
    "EgressConfig",
    "LLMConfig",
    "LoggingConfig",
    "ModelConfig",
    "PassthroughConfig",
    "PoolConfig",
    "ProviderConfig",
    "ProviderKind",
    "RateLimitConfig",
    "ResponsesConfig",
    "Routing",
    "SandboxConfig",
    "SandboxLimits",
    "ServerConfig",
    "StorageConfig",
    "TelemetryConfig",
    "TemplateConfig",
    "TemplatePoolConfig",
    "TraceProtocol",
    "KNOWN_PROVIDERS",
    "load_config",
    "parse_config",
]

# Defaults by provider name: (kind, base_url, default_model). The default model is what a
# bare fallback such as the seed's ``fallbacks = ["anthropic"]`` asks that provider for.
KNOWN_PROVIDERS: dict[str, tuple[ProviderKind, str, str]] = {
    "openai": ("openai", "https://api.openai.com/v1", "gpt-4o-mini"),
    "groq": ("openai", "https://api.groq.com/openai/v1", "llama-3.3-70b-versatile"),
    "anthropic": ("anthropic", "https://api.anthropic.com", "claude-sonnet-4-5"),
}


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    llm: LLMConfig = msgspec.field(default_factory=LLMConfig)
    rate_limit: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    sandbox: SandboxConfig = msgspec.field(default_factory=SandboxConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    # Virtual keys, teams and usage records; on when present or when admin_keys are set.
    storage: StorageConfig | None = None

    @property
    def key_store(self) -> StorageConfig | None:
        """The storage config in force: [storage], or its defaults once admin keys exist."""
        if self.storage is None and self.server.admin_keys:
            return StorageConfig()
        return self.storage


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: str, env: Mapping[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        found = env.get(name)
        if found is None or (found == "" and default is not None):
            return default if default is not None else ""
        return found

    return _VAR.sub(repl, value)


def _expand_tree(node: object, env: Mapping[str, str]) -> object:
    if isinstance(node, str):
        return _expand(node, env)
    if isinstance(node, dict):
        return {k: _expand_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_tree(v, env) for v in node]
    return node


_PATH = re.compile(r" - at `\$(.*)`$")


def _lookup(tree: object, path: str) -> object:
    """Find the value at a msgspec error path like ``.server.port`` or ``.a[0].b``."""
    node = tree
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        try:
            node = node[int(index)] if index else node[key]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _choices(path: str) -> list[object] | None:
    """The allowed values of the Literal field at a dotted path of Config, if it is one."""
    info: msgspec.inspect.Type = msgspec.inspect.type_info(Config)
    # Keys of a struct (".name"), of a dict (".name", or "[...]" where msgspec leaves the
    # key out) and list indexes ("[0]").
    for key, _ in re.findall(r"\.?([^.\[\]]+)|\[([^\]]*)\]", "." + path):
        while isinstance(info, msgspec.inspect.UnionType):
            info = next((t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)),
                        info.types[0])
        if isinstance(info, msgspec.inspect.StructType) and key:
            field = next((f for f in info.fields if f.name == key), None)
            if field is None:
                return None
            info = field.type
        elif isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        elif isinstance(info, msgspec.inspect.ListType) and not key:
            info = info.item_type
        else:
            return None
    if isinstance(info, msgspec.inspect.LiteralType):
        return list(info.values)
    return None


def _unwrap(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    while isinstance(info, msgspec.inspect.UnionType):
        info = next((t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)),
                    info.types[0])
    return info


def _named_path(tree: object, path: str) -> str:
    """msgspec writes a dict's key as ``[...]``: put back the key of the entry that fails
    (``sandbox.templates[...].apt[0]`` -> ``sandbox.templates.datasci.apt[0]``)."""
    if "[...]" not in path:
        return path
    info = msgspec.inspect.type_info(Config)
    node, out = tree, ""
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]", "." + path):
        info = _unwrap(info)
        if key and isinstance(info, msgspec.inspect.StructType) and isinstance(node, dict):
            field = next((f for f in info.fields if f.name == key), None)
            if field is None:
                return path
            info, node, out = field.type, node.get(key), f"{out}.{key}"
        elif index == "..." and isinstance(info, msgspec.inspect.DictType) \
                and isinstance(node, dict):
            value_type = _unwrap(info.value_type)
            if not isinstance(value_type, msgspec.inspect.StructType):
                return path
            bad = None
            for k, v in node.items():
                try:
                    msgspec.convert(v, value_type.cls, strict=False)
                except msgspec.ValidationError:
                    bad = k
                    break
            if bad is None:
                return path
            info, node, out = value_type, node[bad], f"{out}.{bad}"
        elif index.isdigit() and isinstance(info, msgspec.inspect.ListType) \
                and isinstance(node, list) and int(index) < len(node):
            info, node, out = info.item_type, node[int(index)], f"{out}[{index}]"
        else:
            return path
    return out.lstrip(".")


_KEY = re.compile(r" - at `key` in `\$(.*)`$")


def _describe(value: object) -> str:
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return repr(value)


def parse_config(
    data: Mapping[str, object], *, source: str = "config", env: Mapping[str, str] | None = None
) -> Config:
    """Build a validated Config from already-parsed TOML data."""
    tree = _expand_tree(dict(data), os.environ if env is None else env)
    try:
        # strict=False lets "${PORT}" (a string after expansion) fill an int field.
        config = msgspec.convert(tree, Config, strict=False)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        key = _KEY.search(msg)
        if key is not None:
            where = _named_path(tree, key.group(1).lstrip("."))
            raise ConfigError(f"{source}: `{where}`: a key: {msg[: key.start()]}") from None
        m = _PATH.search(msg)
        if m is None:
            raise ConfigError(f"{source}: {msg}") from None
        path = _named_path(tree, m.group(1).lstrip("."))
        what = msg[: m.start()]
        if what.startswith("Object contains unknown field"):
            raise ConfigError(f"{source}: {what} at `{path or '<top level>'}`") from None
        value = _lookup(tree, "." + path)
        shown = "" if value is None else f" = {_describe(value)}"
        choices = _choices(path)
        if what.startswith("Invalid enum value") and choices:
            what = f"expected one of {choices}"
        raise ConfigError(f"{source}: `{path}`{shown}: {what}") from None
    _check(config, source)
    return config


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate a TOML config file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_config(data, source=str(p), env=env)


def _check(config: Config, source: str) -> None:
    def fail(path: str, problem: str) -> ConfigError:
        return _fail(source, path, problem)

    s = config.server
    if not 0 <= s.port <= 65535:
        raise fail("server.port", f"port = {s.port}; expected 0..65535")
    if s.workers < 1:
        raise fail("server.workers", f"workers = {s.workers}; expected >= 1")
    if s.max_body_bytes < 1024:
        raise fail("server.max_body_bytes", f"{s.max_body_bytes}; expected >= 1024")
    for i, key in enumerate(s.api_keys):
        if not key.strip():
            raise fail(f"server.api_keys[{i}]", "empty key (an unset ${VAR}?); expected a key")
    for i, key in enumerate(s.admin_keys):
        if not key.strip():
            raise fail(f"server.admin_keys[{i}]",
                       "empty key (an unset ${VAR}?); expected a key")

    llm = config.llm
    if llm.max_retries < 0:
        raise fail("llm.max_retries", f"{llm.max_retries}; expected >= 0")
    if llm.request_timeout_s <= 0:
        raise fail("llm.request_timeout_s", f"{llm.request_timeout_s}; expected > 0")
    for name, p in llm.providers.items():
        where = f"llm.providers.{name}"
        if "/" in name:
            raise fail(where, "provider names may not contain '/'")
        known = KNOWN_PROVIDERS.get(name)
        if p.kind is None:
            if known is None:
                raise fail(
                    f"{where}.kind",
                    "missing; a provider not named openai, groq or anthropic needs "
                    'kind = "openai" or "anthropic" and a base_url',
                )
            p.kind = known[0]
        if p.base_url is None:
            if known is None or known[0] != p.kind:
                raise fail(f"{where}.base_url", "missing; expected the provider's API base URL")
            p.base_url = known[1]
        if p.default_model is None and known is not None and known[0] == p.kind:
            p.default_model = known[2]
        if not p.base_url.startswith(("http://", "https://")):
            raise fail(f"{where}.base_url", f"{p.base_url!r}; expected an http(s) URL")
        p.base_url = p.base_url.rstrip("/")
        for key in ("connect_timeout_s", "first_byte_timeout_s", "total_timeout_s"):
            if getattr(p, key) <= 0:
                raise fail(f"{where}.{key}", f"{getattr(p, key)}; expected > 0")
        for key in ("rpm", "tpm", "tpd"):
            v = getattr(p, key)
            if v is not None and v < 1:
                raise fail(f"{where}.{key}", f"{v}; expected >= 1 (leave it out for no limit)")
        if p.max_retries is not None and p.max_retries < 0:
            raise fail(f"{where}.max_retries", f"{p.max_retries}; expected >= 0")
        if p.responses is None:
            p.responses = "native" if name == "openai" and p.kind == "openai" else "translate"
        elif p.responses == "native" and p.kind != "openai":
            raise fail(f"{where}.responses", '"native"; only OpenAI-kind providers serve the '
                       'Responses API natively; expected "translate"')
    # Deployment name -> (alias, its settings): one name is one deployment everywhere.
    seen: dict[str, tuple[str, DeploymentConfig]] = {}
    for alias, m in llm.models.items():
        where = f"llm.models.{alias}"
        for key in ("rpm", "tpm", "tpd"):
            v = getattr(m, key)
            if v is not None and v < 1:
                raise fail(f"{where}.{key}", f"{v}; expected >= 1 (leave it out for no limit)")
        if m.max_output_tokens is not None and m.max_output_tokens < 1:
            raise fail(f"{where}.max_output_tokens", f"{m.max_output_tokens}; expected >= 1")
        _check_deployments(config, source, alias, m, seen)
        for i, fb in enumerate(m.fallbacks):
            _check_fallback(config, source, f"{where}.fallbacks[{i}]", fb)

    _check_passthrough(config, source)

    rs = llm.responses
    if rs.max_items < 1 or rs.max_age_s <= 0:
        raise fail("llm.responses", f"max_items = {rs.max_items}, max_age_s = {rs.max_age_s}; "
                   "expected max_items >= 1 and max_age_s > 0")

    rl = config.rate_limit
    for key in ("requests_per_minute", "tokens_per_minute", "tokens_per_day"):
        v = getattr(rl, key)
        if v is not None and v < 1:
            raise fail(f"rate_limit.{key}", f"{v}; expected >= 1 (leave it out for no limit)")

    sb = config.sandbox
    pool = sb.pool
    if pool.min_ready < 0 or pool.max_total < 1:
        raise fail("sandbox.pool", f"min_ready = {pool.min_ready}, max_total = {pool.max_total}; "
                   "expected min_ready >= 0 and max_total >= 1")
    if pool.min_ready > pool.max_total:
        raise fail(
            "sandbox.pool",
            f"min_ready = {pool.min_ready} is greater than max_total = {pool.max_total}; "
            "expected min_ready <= max_total",
        )
    if pool.refill_concurrency < 1:
        raise fail("sandbox.pool.refill_concurrency", f"{pool.refill_concurrency}; expected >= 1")
    if sb.idle_ttl_s <= 0 or sb.max_lifetime_s <= 0:
        raise fail("sandbox", "idle_ttl_s and max_lifetime_s must be > 0")
    lim = sb.limits
    if not 0 < lim.default_exec_timeout_s <= lim.max_exec_timeout_s:
        raise fail(
            "sandbox.limits.default_exec_timeout_s",
            f"{lim.default_exec_timeout_s}; expected > 0 and <= max_exec_timeout_s "
            f"({lim.max_exec_timeout_s})",
        )
    for key, default, cap in (("memory_mb", lim.memory_mb, lim.max_memory_mb),
                              ("disk_mb", lim.disk_mb, lim.max_disk_mb)):
        if not 0 < default <= cap:
            raise fail(f"sandbox.limits.{key}", f"{default}; expected > 0 and <= max_{key} "
                       f"({cap})")
    if not 0 < sb.vcpus <= lim.max_cpus:
        raise fail("sandbox.vcpus", f"{sb.vcpus}; expected > 0 and <= limits.max_cpus "
                   f"({lim.max_cpus})")
    if sb.max_paused_s <= 0 or lim.interrupt_grace_s <= 0:
        raise fail("sandbox", "max_paused_s and limits.interrupt_grace_s must be > 0")
    _check_egress(sb.egress, fail)
    _check_templates(sb, source)
    for name, t in sb.templates.items():
        _check_allow_entries(f"sandbox.templates.{name}.network_allow", t.network_allow or [],
                             sb.egress, fail)


def _check_egress(eg: EgressConfig, fail: Callable[[str, str], ConfigError]) -> None:
    where = "sandbox.egress"
    for i, entry in enumerate(eg.allow_cap or []):
        if parse_pattern(entry) is None:
            raise fail(f"{where}.allow_cap[{i}]", f"{entry!r} is not a host name or a '*.' "
                       "wildcard (e.g. 'pypi.org', '*.githubusercontent.com')")
    _check_allow_entries(f"{where}.default_allow", eg.default_allow, eg, fail)
    for key in ("max_allow_entries", "max_connections", "max_bytes"):
        if getattr(eg, key) < 1:
            raise fail(f"{where}.{key}", f"{getattr(eg, key)}; expected >= 1")
    if eg.connect_timeout_s <= 0 or eg.idle_timeout_s <= 0:
        raise fail(where, "connect_timeout_s and idle_timeout_s must be > 0")
    if eg.resolve is not None:
        # A resolver override would let an allowed name reach any address: tests only.
        if not eg.allow_private_for_tests:
            raise fail(f"{where}.resolve", "a resolver override is for tests only; it needs "
                       "allow_private_for_tests = true")
        for name, address in eg.resolve.items():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise fail(f"{where}.resolve.{name}", f"{address!r} is not an IP address") \
                    from None



# Guest paths a template's file would be hidden under (mounted over in every guest).
_MOUNTED_OVER = ("/proc", "/sys", "/dev", "/work", "/tmp", "/run")
_MAX_TEMPLATE_FILES_BYTES = 1024 * 1024


def _check_allow_entries(where: str, entries: list[str], eg: EgressConfig,
                         fail: Callable[[str, str], ConfigError]) -> None:
    """A configured allow-list: host names or '*.' wildcards, each within allow_cap."""
    caps = [p for p in map(parse_pattern, eg.allow_cap or []) if p is not None]
    for i, entry in enumerate(entries):
        pattern = parse_pattern(entry)
        if pattern is None:
            raise fail(f"{where}[{i}]", f"{entry!r} is not a host name or a '*.' wildcard "
                       "(e.g. 'pypi.org', '*.githubusercontent.com')")
        if eg.allow_cap is not None and not within_any(pattern, caps):
            raise fail(f"{where}[{i}]", f"{entry!r} is outside sandbox.egress.allow_cap")


def _check_templates(sb: SandboxConfig, source: str) -> None:
    warm = sb.pool.min_ready
    for name, t in sb.templates.items():
        where = f"sandbox.templates.{name}"
        if name == "default":
            raise _fail(source, where, "the name 'default' is reserved for the backend's own "
                        "root (what a create without a template gets); choose another name")
        if not t.runtimes:
            raise _fail(source, f"{where}.runtimes", "empty; expected at least one runtime")
        for path in t.files:
            parts = path.split("/")
            if ".." in parts or "." in parts or "" in parts[1:]:
                raise _fail(source, f"{where}.files", f"{path!r}: expected a normalised "
                            "absolute path (no '.', '..', '//' or trailing '/')")
            hidden = next((m for m in _MOUNTED_OVER if path == m or path.startswith(m + "/")),
                          None)
            if hidden is not None:
                raise _fail(source, f"{where}.files", f"{path!r}: {hidden} is mounted over in "
                            "every sandbox, so the file would not be seen; put it elsewhere")
        size = sum(len(c.encode()) for c in t.files.values())
        if size > _MAX_TEMPLATE_FILES_BYTES:
            raise _fail(source, f"{where}.files", f"{size} bytes in all; expected <= "
                        f"{_MAX_TEMPLATE_FILES_BYTES} (files are for small things; install "
                        "packages with apt or pip)")
        warm += t.pool.min_ready
    if warm > sb.pool.max_total:
        raise _fail(source, "sandbox.templates", f"pool.min_ready of the templates and of "
                    f"sandbox.pool add up to {warm}, more than sandbox.pool.max_total = "
                    f"{sb.pool.max_total}; expected at most max_total warm sandboxes in all")


def _fail(source: str, path: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: `{path}`: {problem}")


def _check_deployments(config: Config, source: str, alias: str, m: ModelConfig,
                       seen: dict[str, tuple[str, DeploymentConfig]]) -> None:
    providers = config.llm.providers
    where = f"llm.models.{alias}"
    if m.deployments and (m.provider is not None or m.model is not None):
        raise _fail(source, f"{where}.deployments", "set with provider/model; expected either "
                    "provider (and model) for one deployment or deployments, not both")
    if not m.deployments and m.provider is None:
        raise _fail(source, f"{where}.provider",
                    "missing; expected a configured provider or a deployments list")
    names: set[str] = set()
    resolved = m.resolved_deployments(alias)
    for i, d in enumerate(resolved):
        at = f"{where}.deployments[{i}]" if m.deployments else where
        if d.provider not in providers:
            raise _fail(source, f"{at}.provider",
                        f"{d.provider!r} is not a configured provider; expected one of "
                        f"{sorted(providers)}")
        assert d.name is not None  # filled in by resolved_deployments
        if not d.name.strip():
            raise _fail(source, f"{at}.name", "empty; expected a name or none")
        if d.name in names:
            raise _fail(source, f"{at}.name", f"{d.name!r} names two deployments of this "
                        "alias; give each a distinct name")
        names.add(d.name)
        same = msgspec.structs.replace(d, weight=1.0)
        other = seen.setdefault(d.name, (alias, same))
        if other[1] != same:
            raise _fail(source, at, f"deployment {d.name!r} is also in alias {other[0]!r} "
                        "with other settings; the same name is the same deployment "
                        "everywhere: give one of them another name")
    if resolved and all(d.weight == 0 for d in resolved):
        raise _fail(source, f"{where}.deployments",
                    "every weight is 0; expected at least one deployment with weight > 0")


def _check_passthrough(config: Config, source: str) -> None:
    pt = config.llm.passthrough
    providers = config.llm.providers
    if pt.provider is not None:
        p = providers.get(pt.provider)
        if p is None or p.kind != "openai" or not p.enabled:
            openai_kind = sorted(n for n, c in providers.items()
                                 if c.kind == "openai" and c.enabled)
            raise _fail(source, "llm.passthrough.provider",
                        f"{pt.provider!r} is not an enabled OpenAI-kind provider; expected "
                        f"one of {openai_kind}")
    for key in ("allow", "deny"):
        for i, prefix in enumerate(getattr(pt, key)):
            if not prefix.startswith("/") or prefix.startswith("/v1/") or prefix == "/":
                raise _fail(source, f"llm.passthrough.{key}[{i}]",
                            f"{prefix!r}; expected a route prefix relative to /v1 such as "
                            '"/files"')
    if pt.admin and not pt.admin_key:
        raise _fail(source, "llm.passthrough.admin_key",
                    "empty while admin = true; expected an OpenAI admin key (never the "
                    "provider's own key)")
    if pt.admin and any(pt.admin_key == p.api_key for p in providers.values()):
        raise _fail(source, "llm.passthrough.admin_key",
                    "is a provider's api_key; expected a separate admin key")


def _check_fallback(config: Config, source: str, where: str, fb: str) -> None:
    llm = config.llm

    def fail(path: str, problem: str) -> ConfigError:
        return _fail(source, path, problem)
    if fb in llm.models:
        return
    if "/" in fb:
        provider = fb.split("/", 1)[0]
        if provider not in llm.providers:
            raise fail(where, f"{fb!r} names provider {provider!r}, which is not configured; "
                       f"expected one of {sorted(llm.providers)}")
        return
    if fb in llm.providers:
        if not llm.providers[fb].default_model:
            raise fail(
                where,
                f"{fb!r} is a bare provider fallback but llm.providers.{fb}.default_model is "
                "not set; set default_model or write the fallback as 'provider/model'",
            )
        return
    raise fail(
        where,
        f"{fb!r} is neither a model alias, a 'provider/model' nor a configured provider",
    )
