// E2B's quickstart for its JS SDK (`npm install e2b`), as its docs write it, run against the
// gateway: only E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY point it there.
//
//   E2B_API_URL=http://127.0.0.1:8080/e2b E2B_SANDBOX_URL=http://127.0.0.1:8080 \
//   E2B_API_KEY=<a gateway key> node examples/e2b_quickstart.mjs
import { Sandbox } from 'e2b'

const sandbox = await Sandbox.create()

// Files: write one, read it back.
await sandbox.files.write('/home/user/hello.txt', 'hello from the gateway')
console.log(await sandbox.files.read('/home/user/hello.txt'))

// A shell command, then the same interpreter twice.
const result = await sandbox.commands.run('uname -s')
console.log(result.stdout)
const py = await sandbox.commands.run('python3 -c "print(1 + 1)"')
console.log(py.stdout)

const files = await sandbox.files.list('/home/user')
console.log(files.map((f) => f.name))

await sandbox.kill()
