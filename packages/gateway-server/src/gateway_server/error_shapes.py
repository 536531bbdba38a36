"""Errors in each front door's own shape: Anthropic's on the Messages routes (what the
anthropic SDK and Claude Code parse), OpenAI's everywhere else."""

from __future__ import annotations

from gateway_core.errors import GatewayError
from gateway_llm.dialects.messages import error_body as anthropic_error_body
from gateway_llm.dialects.messages import error_status as anthropic_error_status

__all__ = ["ANTHROPIC_PREFIX", "render_error"]

ANTHROPIC_PREFIX = "/v1/messages"


def render_error(path: str, error: GatewayError) -> tuple[int, bytes]:
    """(HTTP status, JSON body) for an error answered on ``path``."""
    if path.startswith(ANTHROPIC_PREFIX):
        return anthropic_error_status(error), anthropic_error_body(error)
    return error.status, error.to_json()
