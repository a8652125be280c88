#!/usr/bin/env bash
# Container smoke test: build the Dockerfile, run the image as `fragment-connector run` against the
# embedded sandbox Fragment and a file source, wait for `healthy`, check /readyz and /metrics,
# send SIGTERM and expect exit 0 within 20 s. Prints the timings and the image size.
#
#   sudo bash scripts/container-smoke.sh         # a developer, alone
#   bash scripts/container-smoke.sh              # from .ci/run (CI runs as root)
#
# No image registry is needed: a debootstrap tree stands in
# for python:3.11-slim-bookworm, and a private dockerd (own socket, data-root, exec-root; no
# bridge, no iptables) is started for the run and stopped after it. Everything lives under
# $CTR_WORK (default /tmp/ctr-smoke); the rootfs and the image/layer cache are kept between runs,
# so a warm run only rebuilds what changed.
#
# Environment: CTR_WORK (work dir), CTR_IMAGE (tag built, default fragment-connector:smoke),
# DEBIAN_MIRROR (for debootstrap; default: the host's apt mirror), CTR_KEEP_RUN=1 (keep the
# run's temp dir with config, data and logs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${CTR_WORK:-/tmp/ctr-smoke}
IMG=${CTR_IMAGE:-fragment-connector:smoke}
BASE=python:3.11-slim-bookworm
NAME=fc-smoke-$$
STOP_LIMIT_S=20
HEALTHY_LIMIT_S=90
READY_LIMIT_S=60

say() { printf '[container-smoke] %s\n' "$*"; }
die() { say "FAIL: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f s", ms / 1000 }'; }

[ "$(id -u)" = 0 ] || { echo "container-smoke needs root (dockerd, debootstrap): sudo bash $0" >&2; exit 2; }

mkdir -p "$W"
exec 9>"$W/lock"
flock -w 600 9 || die "another smoke run holds $W/lock"

RUN=$(mktemp -d "$W/run.XXXXXX")
DPID=
CONTAINER_STARTED=
PHASE=setup

# --- cleanup and failure report ------------------------------------------------------------
on_exit() {
    local rc=$?
    set +e
    if [ "$rc" != 0 ]; then
        say "---- failure report (exit $rc) ----" >&2
        if [ -n "$CONTAINER_STARTED" ]; then
            say "container state: $(docker inspect -f '{{.State.Status}} exit={{.State.ExitCode}} health={{if .State.Health}}{{.State.Health.Status}}{{end}}' "$NAME" 2>&1)" >&2
            say "health log:" >&2
            docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}exit {{.ExitCode}}: {{.Output}}{{"\n"}}{{end}}{{end}}' "$NAME" 2>&1 | tail -n 10 >&2
            say "container logs (last 200 lines):" >&2
            docker logs --tail 200 "$NAME" >&2 2>&1
        fi
        case "$PHASE" in
            build) logs=("$RUN/build.log" "$W/dockerd.log") ;;
            run) logs=("$RUN/readyz.body" "$RUN/metrics.body") ;;
            *) logs=("$RUN/apt.log" "$W/debootstrap.log" "$W/dockerd.log") ;;
        esac
        for f in "${logs[@]}"; do
            [ -s "$f" ] || continue
            say "---- $f (last 40 lines)" >&2
            tail -n 40 "$f" >&2
            echo >&2
        done
    fi
    [ -n "$CONTAINER_STARTED" ] && docker rm -f "$NAME" >/dev/null 2>&1
    if [ -n "$DPID" ]; then
        docker image prune -f >/dev/null 2>&1      # old builds of the image; the cache stays
        kill -TERM "$DPID" 2>/dev/null
        for _ in $(seq 60); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$DPID" 2>/dev/null
        wait "$DPID" 2>/dev/null
    fi
    unmount_under "$W/exec"
    unmount_under "$W/data"
    if [ "${CTR_KEEP_RUN:-0}" = 1 ]; then say "run dir kept: $RUN"; else rm -rf "$RUN"; fi
    exit "$rc"
}
unmount_under() {  # what dockerd leaves mounted (the netns nsfs, a stray overlay), deepest first
    awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# --- tools ---------------------------------------------------------------------------------
t0=$(now_ms)
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$RUN/apt.log" 2>&1 ||
        { cat "$RUN/apt.log" >&2; die "apt-get install ${missing[*]}"; }
fi
command -v python3 >/dev/null || die "python3 is needed on the host (free port, HTTP checks)"

# --- the stand-in base image's root filesystem (cached) -------------------------------------
host_mirror() {  # the host's Debian mirror, from deb822 or one-line apt sources
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f"
    done | head -n 1
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }'
}
if [ ! -f "$W/rootfs.done" ]; then
    mirror=${DEBIAN_MIRROR:-}
    [ -n "$mirror" ] || mirror=$(host_mirror | head -n 1 || true)
    say "debootstrap: bookworm minbase + python3 into $W/rootfs (once; about 45 s)"
    rm -rf "$W/rootfs" "$W/rootfs.tmp"
    # shellcheck disable=SC2086  # an empty mirror means debootstrap's default
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$W/rootfs.tmp" $mirror >"$W/debootstrap.log" 2>&1 ||
        { tail -n 40 "$W/debootstrap.log" >&2; die "debootstrap"; }
    # Trust the same CAs as the host (an egress proxy may re-sign TLS), for urllib and pip.
    cp /usr/local/share/ca-certificates/*.crt "$W/rootfs.tmp/usr/local/share/ca-certificates/" 2>/dev/null || true
    chroot "$W/rootfs.tmp" update-ca-certificates >/dev/null 2>&1
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$W/rootfs.tmp/etc/pip.conf"
    ln -sf python3 "$W/rootfs.tmp/usr/bin/python"
    rm -rf "$W/rootfs.tmp/var/cache/apt/archives/"*.deb "$W/rootfs.tmp/var/lib/apt/lists/"*
    mv "$W/rootfs.tmp" "$W/rootfs"
    touch "$W/rootfs.done"
    rm -f "$W/base.imported"
fi

# --- a private dockerd ---------------------------------------------------------------------
if [ -s "$W/dockerd.pid" ]; then  # left by an interrupted run of this script: ours to stop
    old=$(cat "$W/dockerd.pid")
    if tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -q -- "--data-root $W/data"; then
        say "stopping the dockerd left by an earlier run (pid $old)"
        kill -TERM "$old" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$old" 2>/dev/null || break; sleep 0.25; done
    fi
    rm -f "$W/dockerd.pid"
    unmount_under "$W/exec"
fi
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
export DOCKER_HOST="unix://$W/docker.sock" DOCKER_BUILDKIT=0
dockerd --data-root "$W/data" --exec-root "$W/exec" -H "$DOCKER_HOST" --pidfile "$W/dockerd.pid" \
    --bridge=none --iptables=false >"$W/dockerd.log" 2>&1 9>&- &
DPID=$!
for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$DPID" 2>/dev/null || die "dockerd exited at start"
    sleep 0.5
done
docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s"
t_tools=$(now_ms)

if [ ! -f "$W/base.imported" ] || ! docker image inspect "$BASE" >/dev/null 2>&1; then
    say "importing the stand-in $BASE"
    tar -C "$W/rootfs" -c . | docker import -c 'CMD ["python3"]' - "$BASE" >/dev/null
    touch "$W/base.imported"
fi

# --- build ---------------------------------------------------------------------------------
PHASE=build
say "building $IMG from $ROOT (legacy builder)"
tb=$(now_ms)
# The build stage is tagged too, so that pruning old images at exit keeps its layer cache.
{ timeout 600 docker build --network host --target build -t "$IMG-build" "$ROOT" &&
    timeout 600 docker build --network host -t "$IMG" "$ROOT"; } >"$RUN/build.log" 2>&1 || die "docker build"
build_ms=$(( $(now_ms) - tb ))
size=$(docker image inspect -f '{{.Size}}' "$IMG")
user=$(docker image inspect -f '{{.Config.User}}' "$IMG")
case "$user" in "" | 0 | 0:* | root | root:*) die "the image runs as root (USER '$user')" ;; esac

# --- a config, a back-office file and a data dir for uid 10001 ------------------------------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$RUN/data"
cat >"$RUN/config.yaml" <<'EOF'
connector:
  instance: smoke
fragment:
  base_url: sandbox            # the embedded fake Fragment, in the same process
schedule:
  full_refresh: 10s
state:
  url: sqlite:////data/state.db
server:
  host: 127.0.0.1              # the port comes from FRAGMENT_CONNECTOR__SERVER__PORT
sources:
  - name: backoffice
    adapter: file
    options:
      path: /data/tickets.json
EOF
cat >"$RUN/data/tickets.json" <<'EOF'
[
  {"id": "T-1", "title": "Printer on fire", "url": "https://backoffice.example/t/1", "status": "open"},
  {"id": "T-2", "title": "Refund order 42", "url": "https://backoffice.example/t/2", "status": "open"},
  {"id": "T-3", "title": "Password reset", "url": "https://backoffice.example/t/3", "status": "open"},
  {"id": "T-4", "title": "Old question", "url": "https://backoffice.example/t/4", "status": "closed"}
]
EOF
OPEN_TICKETS=3
chown -R 10001:10001 "$RUN/data"
chmod 0755 "$RUN" && chmod 0644 "$RUN/config.yaml"

# --- run: healthy, ready, metrics ------------------------------------------------------------
say "running $NAME on 127.0.0.1:$PORT (read-only root, /data mounted)"
PHASE=run
tr0=$(now_ms)
CONTAINER_STARTED=1
docker run -d --name "$NAME" --network host --read-only --tmpfs /tmp \
    --health-interval 1s --health-timeout 3s --health-start-period 30s --health-retries 3 \
    -v "$RUN/config.yaml:/etc/fragment-connector/config.yaml:ro" -v "$RUN/data:/data" \
    -e FRAGMENT_CONNECTOR_CONFIG=/etc/fragment-connector/config.yaml \
    -e FRAGMENT_CONNECTOR__SERVER__PORT="$PORT" \
    "$IMG" >/dev/null

status=starting
for _ in $(seq $((HEALTHY_LIMIT_S * 4))); do
    status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$NAME")
    [ "$status" = healthy ] && break
    [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] || die "the container exited before it was healthy"
    [ "$status" = none ] && die "the image has no HEALTHCHECK"
    sleep 0.25
done
[ "$status" = healthy ] || die "not healthy within ${HEALTHY_LIMIT_S} s (status: $status)"
healthy_ms=$(( $(now_ms) - tr0 ))

http_get() {  # URL BODYFILE -> prints the status code (000 when nothing answered)
    python3 - "$1" "$2" <<'EOF'
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=5) as r:
        code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
except OSError as e:
    code, body = 0, str(e).encode()
open(sys.argv[2], "wb").write(body)
print(f"{code:03d}")
EOF
}

code=000
for _ in $(seq $((READY_LIMIT_S * 4))); do
    code=$(http_get "http://127.0.0.1:$PORT/readyz" "$RUN/readyz.body")
    [ "$code" = 200 ] && break
    [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] || die "the container exited before it was ready"
    sleep 0.25
done
[ "$code" = 200 ] || die "/readyz answered $code, not 200, within ${READY_LIMIT_S} s: $(cat "$RUN/readyz.body")"
ready_ms=$(( $(now_ms) - tr0 ))

code=$(http_get "http://127.0.0.1:$PORT/healthz" "$RUN/healthz.body")
[ "$code" = 200 ] || die "/healthz answered $code"
code=$(http_get "http://127.0.0.1:$PORT/metrics" "$RUN/metrics.body")
[ "$code" = 200 ] || die "/metrics answered $code"
grep -q '^fragment_connector_cycles_total{' "$RUN/metrics.body" || die "/metrics has no fragment_connector_cycles_total sample"
created=$(awk '/^fragment_connector_tasks_total\{/ && /action="create"/ { n += $NF } END { print n + 0 }' "$RUN/metrics.body")
awk -v c="$created" -v want="$OPEN_TICKETS" 'BEGIN { exit !(c >= want) }' ||
    die "/metrics counts $created created tasks, expected $OPEN_TICKETS (one per open ticket)"
[ -s "$RUN/data/state.db" ] || die "no state in /data/state.db (is /data writable by uid 10001?)"

# --- SIGTERM: drained, exit 0 -----------------------------------------------------------------
ts=$(now_ms)
docker stop -t "$STOP_LIMIT_S" "$NAME" >/dev/null
stop_ms=$(( $(now_ms) - ts ))
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$exit_code" = 0 ] || die "exit code $exit_code after SIGTERM (137: it ignored SIGTERM and was killed)"
[ "$stop_ms" -lt $((STOP_LIMIT_S * 1000)) ] || die "stop took $(secs "$stop_ms") (limit ${STOP_LIMIT_S} s)"

say "last log lines:"
docker logs --tail 5 "$NAME" 2>&1 | sed 's/^/    /'
cat <<EOF
container smoke: OK ($IMG, user $user)
  setup (apt, rootfs, dockerd) $(secs $((t_tools - t0)))
  build                        $(secs "$build_ms")
  run -> healthy               $(secs "$healthy_ms")
  run -> /readyz 200           $(secs "$ready_ms")   ($created tasks created in the sandbox)
  SIGTERM -> exit 0            $(secs "$stop_ms")
  image size                   $(awk -v b="$size" 'BEGIN { printf "%.0f MB (%d bytes)", b / 1e6, b }')
  total                        $(secs $(( $(now_ms) - t0 )))
EOF
