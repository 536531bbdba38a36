"""E2B's quickstart, as its docs write it, run against the gateway: only E2B_API_URL,
E2B_SANDBOX_URL and E2B_API_KEY point it there (see the README's E2B section).

    E2B_API_URL=http://127.0.0.1:8080/e2b E2B_SANDBOX_URL=http://127.0.0.1:8080 \\
    E2B_API_KEY=<a gateway key> python examples/e2b_quickstart.py
"""

from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeInterpreter

# Code interpreter: state persists between run_code calls in one context.
sbx = CodeInterpreter.create()
sbx.run_code("x = 1")
execution = sbx.run_code("x += 1; x")
print(execution.text)  # outputs 2

# Files: write one, read it back.
sbx.files.write("/home/user/hello.txt", "hello from the gateway")
print(sbx.files.read("/home/user/hello.txt"))
sbx.kill()

# The plain e2b SDK: a shell command in a sandbox of its own.
sandbox = Sandbox.create()
result = sandbox.commands.run("uname -s")
print(result.stdout)
files = sandbox.files.list("/home/user")
print([f.name for f in files])
sandbox.kill()
