"""The runtime table: how to write, build and run code of each language, declared as data
and sent with every execute request (the guest agent has no table of its own)."""

from __future__ import annotations

import os
import shutil

import msgspec

__all__ = ["RUNTIMES", "Runtime", "SHELL", "available_runtimes", "find_tool"]


class Runtime(msgspec.Struct, frozen=True, kw_only=True):
    """``{file}`` is the code's path, ``{dir}`` its private temp dir, ``{workdir}`` the
    sandbox's working directory (where state persists between executions)."""

    name: str
    file: str
    run: list[str]
    build: list[str] | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    # The program that must exist in the guest for this runtime to work.
    tool: str = ""
    # How to start a persistent context (a long-lived interpreter); None: the language has
    # none. ``{agent}`` is the agent file, ``{in}``/``{out}`` its control pipes, ``{token}``
    # the end-of-cell mark, ``{node_runner}`` the agent's Node cell runner source.
    context: list[str] | None = None


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime(name="python", file="main.py", run=["python3", "-u", "{file}"],
                env={"PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"}, tool="python3",
                context=["python3", "-u", "{agent}", "--cell-runner", "{in}", "{out}",
                         "{token}"]),
        Runtime(name="node", file="main.js", run=["node", "{file}"], tool="node",
                context=["node", "-e", "{node_runner}", "{token}", "{in}", "{out}"]),
        Runtime(name="rust", file="main.rs",
                build=["rustc", "--edition", "2021", "-o", "{dir}/main", "{file}"],
                run=["{dir}/main"], tool="rustc"),
    )
}


#: Shell commands (POST .../commands): ``/bin/sh -c <cmd>``.
SHELL = Runtime(name="sh", file="cmd.sh", run=["/bin/sh", "-c", "{code}"], tool="sh")


def find_tool(tool: str, search_path: str, root: str = "/") -> str | None:
    """Where ``tool`` is under ``root`` on the guest's PATH, as the guest will see it."""
    for d in search_path.split(os.pathsep):
        if not d:
            continue
        host = os.path.join(root, d.lstrip("/"), tool)
        if os.path.isfile(host) and os.access(host, os.X_OK):
            return os.path.join(d, tool)
    if root == "/":
        return shutil.which(tool, path=search_path)
    return None


def available_runtimes(search_path: str, root: str = "/") -> dict[str, str | None]:
    """Runtime name -> None when usable, else the reason it is not."""
    out: dict[str, str | None] = {}
    for name, rt in RUNTIMES.items():
        if find_tool(rt.tool, search_path, root) is None:
            out[name] = f"`{rt.tool}` is not on the guest PATH {search_path}"
        else:
            out[name] = None
    return out
