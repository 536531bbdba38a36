"""Types shared by every Agentic Gateway package: wire formats, config and errors. No I/O."""

from gateway_core.__about__ import __version__
from gateway_core.config import Config, ConfigError, load_config, parse_config
from gateway_core.errors import (
    AuthenticationError,
    ErrorBody,
    ErrorDetail,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)

__all__ = [
    "__version__",
    "AuthenticationError",
    "Config",
    "ConfigError",
    "ErrorBody",
    "ErrorDetail",
    "GatewayError",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "ServiceUnavailable",
    "UpstreamError",
    "UpstreamTimeout",
    "load_config",
    "parse_config",
]
