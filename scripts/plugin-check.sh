#!/usr/bin/env bash
# The example plug-in as a user installs it: pip install, listed by `fragment-connector adapters`,
# its own tests (the conformance kit), and one reconcile against the sandbox through it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/pip" install --quiet -e examples/adapter-plugin

"$VENV/bin/fragment-connector" adapters | tee /tmp/plugin-adapters.txt
grep -q "^ok      helpdesk .*fragment-connector-helpdesk" /tmp/plugin-adapters.txt

(cd examples/adapter-plugin && "../../$VENV/bin/pytest" -q -p no:cacheprovider)

work=$(mktemp -d)
trap 'rm -rf "$work"; kill "$fake_pid" 2>/dev/null || true' EXIT
"$VENV/bin/python" - "$work" <<'PY' &
import sys, time, pathlib
from fc_helpdesk.fake import HelpdeskBackoffice
work = pathlib.Path(sys.argv[1])
with HelpdeskBackoffice(tickets=30) as fake:
    (work / "url").write_text(fake.url)
    time.sleep(120)
PY
fake_pid=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.1; done
cat > "$work/config.yaml" <<YAML
fragment: {base_url: sandbox}
state: {url: "sqlite:///$work/state.db"}
sources:
  - name: helpdesk
    adapter: helpdesk
    options: {base_url: "$(cat "$work/url")", token: helpdesk-token-1234}
YAML
cd "$work"
"$OLDPWD/$VENV/bin/fragment-connector" reconcile --config config.yaml --output json > first.json
"$OLDPWD/$VENV/bin/python" -c "
import json; r = json.load(open('first.json'))
assert r['exit_code'] == 0 and r['counts']['create'] > 0, r['counts']
print('reconcile through the plug-in:', r['counts'])"
set +e
"$OLDPWD/$VENV/bin/fragment-connector" reconcile --config config.yaml --dry-run > /dev/null
code=$?
set -e
[ "$code" = 0 ] || { echo "second run was not a no-op (exit $code)"; exit 1; }
echo "plug-in check: ok"
