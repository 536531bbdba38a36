"""structlog set-up: one JSON object per line in production, readable console output in
development. The request id is bound once per request through contextvars. The access line,
written once per request, skips structlog's processor chain when logs are JSON: the same
fields, encoded by msgspec straight to stderr."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import BinaryIO

import msgspec
import structlog

from gateway_core.config import LoggingConfig

__all__ = ["access_line", "configure_logging"]

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


class _AccessWriter:
    """Where access lines go: ``stream`` when it is set (JSON logs at info level or below),
    through structlog otherwise (console format, or info filtered out)."""

    __slots__ = ("_flush_due", "_second", "_stamp", "stream")

    def __init__(self) -> None:
        self.stream: BinaryIO | None = None
        self._second = -1
        self._stamp = ""
        self._flush_due = False

    def write(self, stream: BinaryIO, line: bytes) -> None:
        # Lines written in one turn of the event loop go out in one flush at its end (one
        # write(2) for many requests under load, the same one per request at c=1).
        stream.write(line)
        if self._flush_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            stream.flush()
            return
        self._flush_due = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        if self.stream is not None:
            self.stream.flush()

    def timestamp(self) -> str:
        # structlog's TimeStamper(fmt="iso", utc=True) format; the seconds part is formatted
        # once a second.
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1_000_000):06d}Z"


_access = _AccessWriter()
_access_log = structlog.get_logger("gateway.access")


def access_line(fields: dict[str, object]) -> None:
    """Log one ``request`` event with ``fields`` (str, int, float, bool or None values) and
    the request's bound context, as the structlog JSON line would have it."""
    stream = _access.stream
    if stream is None:
        _access_log.info("request", **fields)
        return
    line = dict(fields)
    line["event"] = "request"
    for key, value in structlog.contextvars.get_contextvars().items():
        line.setdefault(key, value)
    line["level"] = "info"
    line["timestamp"] = _access.timestamp()
    _access.write(stream, _serialize(line) + b"\n")


def configure_logging(cfg: LoggingConfig) -> None:
    level = _LEVELS[cfg.level]
    _access.stream = (sys.stderr.buffer if cfg.format == "json" and level <= logging.INFO
                      else None)
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
