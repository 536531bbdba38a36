"""The guest agent: one stdlib-only file, ``agent.py``, copied into every guest image."""

from __future__ import annotations

from pathlib import Path

#: The single file to copy into a guest and run with ``python3 agent.py --unix/--vsock/...``.
AGENT_PATH = Path(__file__).with_name("agent.py")

__all__ = ["AGENT_PATH"]
