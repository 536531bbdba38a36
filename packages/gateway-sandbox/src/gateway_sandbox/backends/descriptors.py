"""Keep the gateway's own descriptors out of the guests it starts. uvloop's subprocess_exec
does not honour ``close_fds`` for inheritable descriptors, and hypercorn makes its listening
sockets inheritable, so a jail would hold the gateway's listening socket (and could accept
its clients' connections). The backends' preexec functions call this in the child."""

from __future__ import annotations

import contextlib
import fcntl
import os

__all__ = ["cloexec_above_stderr"]


def cloexec_above_stderr() -> None:
    """In a forked child before exec: mark every descriptor above 2 close-on-exec, so only
    stdin, stdout and stderr reach the program whatever the event loop passed down."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
