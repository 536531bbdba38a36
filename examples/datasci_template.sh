#!/bin/sh
# {"template": "datasci"} runs `import pandas, matplotlib` and returns a matplotlib plot (PNG)
# through a context; the gateway serving examples/datasci_template.toml. Writes plot.png.
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
G=${G:-http://127.0.0.1:18931}
curl -s $G/v1/templates | python3 -c "import json,sys; [print(t['name'], t['state'], t['recipe_hash'], t['pool']) for t in json.load(sys.stdin)['data']]"
SB=$(curl -s -w '\n%{time_total}' -X POST $G/v1/sandboxes -d '{"runtime": "python", "template": "datasci"}')
echo "$SB" | tail -1 | sed 's/^/create seconds: /'
ID=$(echo "$SB" | head -1 | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['id']); print('template', d['template'], file=sys.stderr)")
CID=$(curl -s -X POST $G/v1/sandboxes/$ID/contexts -d '{"language": "python"}' | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
python3 - "$CID" > "$T/cell.json" <<'PY'
import json, sys
code = """import pandas as pd, matplotlib
import matplotlib.pyplot as plt
df = pd.DataFrame({'x': range(10), 'y': [v * v for v in range(10)]})
fig, ax = plt.subplots()
ax.plot(df.x, df.y)
ax.set_title(f'pandas {pd.__version__}, matplotlib {matplotlib.__version__}')
plt.show()
df.y.sum()"""
print(json.dumps({"code": code, "context_id": sys.argv[1]}))
PY
curl -s -w '\n%{time_total}' -X POST $G/v1/sandboxes/$ID/execute -d @"$T/cell.json" > "$T/cell.out"
tail -1 "$T/cell.out" | sed 's/^/execute seconds: /'
head -1 "$T/cell.out" | python3 -c "
import json, sys, base64
r = json.load(sys.stdin)
print('exit', r['exit_code'], 'duration_ms', r['duration_ms'], 'error', r.get('error'))
for o in r['results']:
    print(o['mime'], len(o['data']), o['data'][:40] if o['mime'] != 'image/png' else '(png)')
    if o['mime'] == 'image/png':
        open('plot.png', 'wb').write(base64.b64decode(o['data']))
"
file plot.png
curl -s -o /dev/null -w 'delete %{http_code}\n' -X DELETE $G/v1/sandboxes/$ID
