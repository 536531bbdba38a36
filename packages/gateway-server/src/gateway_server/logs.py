"""structlog set-up: one JSON object per line in production, readable console output in
development. The request id is bound once per request through contextvars."""

from __future__ import annotations

import logging
import sys

import msgspec
import structlog

from gateway_core.config import LoggingConfig

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

_json = msgspec.json.Encoder()


def _serialize(event: object, **_: object) -> bytes:
    # msgspec encodes the event dict straight to bytes for the bytes logger; anything it
    # cannot encode (an exception object, a path) falls back to str().
    return _json.encode(event) if _plain(event) else msgspec.json.encode(event, enc_hook=str)


def _plain(event: object) -> bool:
    return isinstance(event, dict) and all(
        v is None or isinstance(v, (str, int, float, bool)) for v in event.values()
    )


def configure_logging(cfg: LoggingConfig) -> None:
    level = _LEVELS[cfg.level]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    processors: list[structlog.typing.Processor]
    if cfg.format == "json":
        processors = [
            *shared,
            # Tracebacks without local variables: locals would print API keys.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(serializer=_serialize),
        ]
        factory: structlog.typing.WrappedLogger = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        processors = [
            *shared,
            # plain_traceback: the rich formatter would print local variables (keys).
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                          exception_formatter=structlog.dev.plain_traceback),
        ]
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # hypercorn writes its own error log to stderr; everything else on the standard logging
    # module below WARNING is noise here.
    logging.getLogger().setLevel(max(level, logging.WARNING))
