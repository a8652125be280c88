#!/usr/bin/env bash
# The example plug-ins as a user installs them: pip install, listed by `fragment-connector
# adapters`, their own tests (the conformance kit), mypy --strict against the connector's
# editable install (adapters.* must be found and typed), and one reconcile against the sandbox
# through each. examples/capped-search-plugin's fake caps every search at 300 results and holds
# more open tickets than that: the reconcile must create a task for every one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
PY="$ROOT/$VENV/bin/python"
"$VENV/bin/pip" install --quiet -e examples/adapter-plugin -e examples/capped-search-plugin

"$VENV/bin/fragment-connector" adapters | tee /tmp/plugin-adapters.txt
grep -q "^ok      helpdesk .*fragment-connector-helpdesk" /tmp/plugin-adapters.txt
grep -q "^ok      searchdesk .*fragment-connector-searchdesk" /tmp/plugin-adapters.txt

for example in adapter-plugin capped-search-plugin; do
    (cd "examples/$example" && "$ROOT/$VENV/bin/mypy" && "$ROOT/$VENV/bin/pytest" -q -p no:cacheprovider)
done

work=$(mktemp -d)
fake_pid=
trap 'rm -rf "$work"; [ -z "$fake_pid" ] || kill "$fake_pid" 2>/dev/null || true' EXIT

# reconcile ADAPTER FAKE_MODULE FAKE_CLASS TICKETS OPTIONS: twice, the second run a no-op; the
# first creates exactly one task per open ticket of the fake.
reconcile() {
    local adapter=$1 module=$2 cls=$3 tickets=$4 options=$5 dir="$work/$1"
    mkdir -p "$dir"
    "$PY" - "$dir" "$module" "$cls" "$tickets" <<'PY' &
import importlib, sys, time, pathlib
dir, module, cls, tickets = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
with getattr(importlib.import_module(module), cls)(tickets=tickets) as fake:
    (dir / "open").write_text(str(len(fake.open_ids())))
    (dir / "url").write_text(fake.url)
    time.sleep(120)
PY
    fake_pid=$!
    for _ in $(seq 100); do [ -s "$dir/url" ] && break; sleep 0.1; done
    cat > "$dir/config.yaml" <<YAML
fragment: {base_url: sandbox}
state: {url: "sqlite:///$dir/state.db"}
sources:
  - name: $adapter
    adapter: $adapter
    options: {base_url: "$(cat "$dir/url")", $options}
YAML
    (cd "$dir" && "$ROOT/$VENV/bin/fragment-connector" reconcile --config config.yaml \
        --output json > first.json)
    "$PY" -c "
import json, sys; r = json.load(open('$dir/first.json')); expected = int(open('$dir/open').read())
assert r['exit_code'] == 0 and r['counts']['create'] == expected, (r['counts'], expected)
print('reconcile through $adapter:', r['counts'], 'for', expected, 'open tickets')"
    set +e
    (cd "$dir" && "$ROOT/$VENV/bin/fragment-connector" reconcile --config config.yaml \
        --dry-run > /dev/null)
    local code=$?
    set -e
    [ "$code" = 0 ] || { echo "second $adapter run was not a no-op (exit $code)"; exit 1; }
    kill "$fake_pid" 2>/dev/null || true
    wait "$fake_pid" 2>/dev/null || true
    fake_pid=
}

reconcile helpdesk fc_helpdesk.fake HelpdeskBackoffice 30 "token: helpdesk-token-1234"
reconcile searchdesk fc_searchdesk.fake SearchdeskBackoffice 1000 "api_key: searchdesk-key-8842"
echo "plug-in check: ok"
