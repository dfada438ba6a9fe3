#!/usr/bin/env bash
# Wall time of `opsctl health` against `curl -sf` of the same /health endpoint: the median of N
# runs each, taken in one run of this script, and their ratio (what monitoring pays per minute for
# a probe that also knows the exit-code contract).
#
# Usage: bench/health_vs_curl.sh [-n RUNS] [--url URL | --box]
#   --url   a running proxy (e.g. http://127.0.0.1:4020); default: a recording upstream started on
#           a free loopback port for the run (it answers /health like optillm does).
#   --box   boot a box (python -m tests.box serve; root, the box lock, ports 4000/4020), install
#           the checkout with install.sh and time the box's own curl and /usr/local/bin/opsctl
#           against its optillm-proxy, inside the box.
#   OPSCTL  the opsctl to time outside the box (default: the checkout's .venv/bin/opsctl).
# Timed with bytecode cached, as a deployed opsctl runs (install compiles its venv): the runs ignore
# PYTHONDONTWRITEBYTECODE and a warm-up run writes the .pyc files.
# Not a test: quote its output in bench/README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launcher/optillm_proxy_launcher/layout.env
source "${REPO}/launcher/optillm_proxy_launcher/layout.env"
RUNS=20
URL=""
BOX=0
OPSCTL="${OPSCTL:-$REPO/.venv/bin/opsctl}"
SERVER_PID=""
BOX_PID=""
WORK=""
PID1=""
readonly BOX_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

die() { echo "health_vs_curl: $*" >&2; exit 1; }

parse_args() {
    while (($#)); do
        case "$1" in
            -n) RUNS="$2"; shift 2 ;;
            --url) URL="$2"; shift 2 ;;
            --box) BOX=1; shift ;;
            -h|--help) sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 0 ;;
            *) echo "unknown argument: $1 (see $0 --help)" >&2; exit 2 ;;
        esac
    done
    if ! [[ "$RUNS" =~ ^[1-9][0-9]*$ ]]; then
        echo "-n wants a positive integer, got '$RUNS'" >&2
        exit 2
    fi
}

check_tools() {
    command -v curl >/dev/null || { echo "curl is missing: apt-get install curl" >&2; exit 2; }
    if ((BOX)); then
        [[ $EUID -eq 0 ]] || { echo "--box boots a systemd-nspawn box: run as root" >&2; exit 2; }
    else
        [[ -x "$OPSCTL" ]] || { echo "no opsctl at $OPSCTL: run 'uv sync' in $REPO or set OPSCTL" >&2; exit 2; }
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for_health() {
    local _
    for _ in $(seq 100); do
        curl -sf "$URL/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "nothing healthy answered on $URL/health"
}

start_endpoint() {
    [[ -n "$URL" ]] && return 0
    local port
    port="$(free_port)"
    python3 "$REPO/tools/fake_upstream.py" "$port" >/dev/null 2>&1 &
    SERVER_PID=$!
    URL="http://127.0.0.1:$port"
    wait_for_health
}

# The box's ports are fixed: one box at a time on this machine (same lock as tests/fixtures/box.py).
lock_ports() {
    local cache="${OPTILLM_PROXY_TEST_CACHE:-/var/cache/optillm-proxy-ops}"
    mkdir -p "${cache}"
    exec 9>"${cache}/.box-ports.lock"
    flock -w 1800 9 || die "another box session held ${cache}/.box-ports.lock for 30 min (ports ${UPSTREAM_PORT}/${LISTEN_PORT})"
}

start_box() {
    WORK="$(mktemp -d)"
    lock_ports
    (cd "$REPO" && exec python3 tools/fake_upstream.py "${UPSTREAM_PORT}") >"$WORK/upstream.log" 2>&1 &
    SERVER_PID=$!
    (cd "$REPO" && exec uv run --frozen python -m tests.box serve --state "$WORK/box.json") >"$WORK/box.log" 2>&1 &
    BOX_PID=$!
    until [[ -s "$WORK/box.json" ]]; do
        kill -0 "$BOX_PID" 2>/dev/null || die "the box did not come up: $(tail -20 "$WORK/box.log")"
        sleep 1
    done
    PID1="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid1"])' "$WORK/box.json")"
    URL="http://${LISTEN_HOST}:${LISTEN_PORT}"
}

stop_all() {
    local pid
    for pid in "$BOX_PID" "$SERVER_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            wait "$pid" 2>/dev/null || true
        fi
    done
    [[ -n "$WORK" ]] && rm -rf "$WORK"
    return 0
}

# Where the timed commands run: here, or inside the box (its curl, its installed opsctl).
here() {
    if ((BOX)); then
        nsenter -t "$PID1" -a -- /usr/bin/env -i PATH="$BOX_PATH" LANG=C.UTF-8 /bin/bash -c "$1"
    else
        env -u PYTHONDONTWRITEBYTECODE bash -c "$1"
    fi
}

# Prints one wall time per run, in ms; fails if any run fails. Runs where the commands run, so
# entering the box is not timed.
timed_runs() {
    local runs="$1"; shift
    local i start end
    for ((i = 0; i < runs; i++)); do
        start="$(date +%s%N)"
        "$@" >/dev/null 2>&1 || { echo "run $i failed: $*" >&2; return 1; }
        end="$(date +%s%N)"
        echo $(((end - start) / 1000))
    done
}

opsctl_cmd() {
    if ((BOX)); then echo "${OPSCTL_LINK}"; else printf '%q' "$OPSCTL"; fi
}

# Writes opsctl's bytecode (install compiles the deployed one anyway), warms caches, fails early.
warm_up() {
    here "$(opsctl_cmd) health --url $URL >/dev/null" || die "opsctl health against $URL failed: nothing to time"
}

measure() {
    here "$(declare -f timed_runs); timed_runs $RUNS $1"
}

median_ms() {
    sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f", m / 1000 }'
}

main() {
    parse_args "$@"
    check_tools
    trap stop_all EXIT
    trap 'exit 143' TERM INT
    if ((BOX)); then start_box; else start_endpoint; fi
    warm_up
    local curl_ms opsctl_ms where
    curl_ms="$(measure "curl -sf $URL/health" | median_ms)"
    opsctl_ms="$(measure "$(opsctl_cmd) health --url $URL" | median_ms)"
    where="$( ((BOX)) && echo "in the box" || echo "on $(hostname)")"
    echo "endpoint $URL/health $where, median of $RUNS runs each (nproc $(nproc), load $(cut -d' ' -f1 /proc/loadavg))"
    printf '%-32s %8s ms\n' "curl -sf" "$curl_ms" "opsctl health" "$opsctl_ms"
    awk -v c="$curl_ms" -v o="$opsctl_ms" 'BEGIN { printf "ratio opsctl/curl: %.1fx\n", o / c }'
}

main "$@"
