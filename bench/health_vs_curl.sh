#!/usr/bin/env bash
# Wall time of N `opsctl health` runs against N `curl -sf` runs on the same /health endpoint, and
# their ratio (what monitoring pays per minute for a probe that also knows the exit-code contract).
#
# Usage: bench/health_vs_curl.sh [-n RUNS] [--url URL]
#   --url   a running proxy (e.g. http://127.0.0.1:4020); default: a recording upstream started on
#           a free loopback port for the run (it answers /health like optillm does).
#   OPSCTL  the opsctl to time (default: the checkout's .venv/bin/opsctl; `uv sync` creates it).
# Timed with bytecode cached, as a deployed opsctl runs (install compiles its venv): the runs ignore
# PYTHONDONTWRITEBYTECODE and a warm-up run writes the .pyc files. Without them every run compiles
# click and httpx from source (measured here: about 0.3 s of CPU per run).
# Not a test: quote its output in the README.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS=50
URL=""
OPSCTL="${OPSCTL:-$REPO/.venv/bin/opsctl}"
SERVER_PID=""

parse_args() {
    while (($#)); do
        case "$1" in
            -n) RUNS="$2"; shift 2 ;;
            --url) URL="$2"; shift 2 ;;
            -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
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
    [[ -x "$OPSCTL" ]] || { echo "no opsctl at $OPSCTL: run 'uv sync' in $REPO or set OPSCTL" >&2; exit 2; }
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_endpoint() {
    [[ -n "$URL" ]] && return 0
    local port
    port="$(free_port)"
    python3 "$REPO/ops/fake_upstream.py" "$port" &
    SERVER_PID=$!
    URL="http://127.0.0.1:$port"
    local _
    for _ in $(seq 50); do
        curl -sf "$URL/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the recording upstream did not answer on $URL" >&2
    exit 1
}

stop_endpoint() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}

# Writes opsctl's bytecode (as install does for the deployed one), warms caches, fails early.
warm_up() {
    unset PYTHONDONTWRITEBYTECODE
    local line
    if ! line="$("$OPSCTL" health --url "$URL")"; then
        echo "endpoint not healthy, nothing to time: $line" >&2
        exit 1
    fi
}

run_loop() {
    local i
    for ((i = 0; i < RUNS; i++)); do
        "$@" >/dev/null 2>&1 || { echo "run $i failed: $*" >&2; return 1; }
    done
}

# Prints "wall user sys" seconds of RUNS runs of the given command (CPU counts its children too:
# on a busy machine, CPU time is the steadier figure). Fails if any run fails.
time_runs() {
    local TIMEFORMAT='%R %U %S'
    { time run_loop "$@"; } 2>&1
}

report() {
    local curl_times="$1" opsctl_times="$2"
    awk -v n="$RUNS" -v url="$URL" -v c="$curl_times" -v o="$opsctl_times" 'BEGIN {
        split(c, ct, " "); split(o, ot, " ")
        printf "endpoint %s/health, %d runs each (nproc %s, load %s)\n", url, n, ENVIRON["NPROC"], ENVIRON["LOAD"]
        printf "%-14s %10s %14s\n", "", "wall/run", "cpu(u+s)/run"
        printf "%-14s %8.1fms %12.1fms\n", "curl -sf", ct[1] / n * 1000, (ct[2] + ct[3]) / n * 1000
        printf "%-14s %8.1fms %12.1fms\n", "opsctl health", ot[1] / n * 1000, (ot[2] + ot[3]) / n * 1000
        printf "ratio opsctl/curl: wall %.1fx, cpu %.1fx\n", ot[1] / ct[1], (ot[2] + ot[3]) / (ct[2] + ct[3])
    }'
}

main() {
    parse_args "$@"
    check_tools
    trap stop_endpoint EXIT
    start_endpoint
    warm_up
    local curl_times opsctl_times
    curl_times="$(time_runs curl -sf "$URL/health")"
    opsctl_times="$(time_runs "$OPSCTL" health --url "$URL")"
    NPROC="$(nproc)" LOAD="$(cut -d' ' -f1 /proc/loadavg)" report "$curl_times" "$opsctl_times"
}

main "$@"
