#!/usr/bin/env bash
# Wall time of N `opsctl health` runs against N `curl -sf` runs on the same /health endpoint, and
# their ratio (what monitoring pays per minute for a probe that also knows the exit-code contract).
#
# Usage: bench/health_vs_curl.sh [-n RUNS] [--url URL]
#   --url   a running proxy (e.g. http://127.0.0.1:4020); default: a recording upstream started on
#           a free loopback port for the run (it answers /health like optillm does).
#   OPSCTL  the opsctl to time (default: the checkout's .venv/bin/opsctl; `uv sync` creates it).
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

now_ns() {
    date +%s%N
}

# Prints the total nanoseconds of RUNS runs of the given command; fails if any run fails.
time_runs() {
    local start end i
    start="$(now_ns)"
    for ((i = 0; i < RUNS; i++)); do
        "$@" >/dev/null
    done
    end="$(now_ns)"
    echo $((end - start))
}

report() {
    local curl_ns="$1" opsctl_ns="$2"
    awk -v n="$RUNS" -v c="$curl_ns" -v o="$opsctl_ns" -v url="$URL" 'BEGIN {
        printf "endpoint %s/health, %d runs each\n", url, n
        printf "curl -sf       %8.1f ms/run\n", c / n / 1e6
        printf "opsctl health  %8.1f ms/run\n", o / n / 1e6
        printf "ratio opsctl/curl: %.1fx\n", o / c
    }'
}

main() {
    parse_args "$@"
    check_tools
    trap stop_endpoint EXIT
    start_endpoint
    "$OPSCTL" health --url "$URL" >/dev/null  # warm the page cache and fail early if unhealthy
    local curl_ns opsctl_ns
    curl_ns="$(time_runs curl -sf "$URL/health")"
    opsctl_ns="$(time_runs "$OPSCTL" health --url "$URL")"
    report "$curl_ns" "$opsctl_ns"
}

main "$@"
