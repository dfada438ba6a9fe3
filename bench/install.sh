#!/usr/bin/env bash
# Benchmark install.sh and the runtime it builds, all in one run (figures, not a test):
#   - fresh install time (install.sh --root into an empty temp root; uv cache as it is)
#   - idempotent re-run time (the same command again: nothing changes)
#   - start to healthy (first 200 from /health) of real optillm 0.3.12 through the staged launcher,
#     with the precompiled bytecode install.sh ships and without any (-X pycache_prefix=<empty dir>
#     plus -B: what a read-only venv without precompiled bytecode pays on every start)
# Usage: bench/install.sh [--profile lean|full] [--plugins none|all|LIST] [--runs N]
# Needs: uv 0.13.9 on PATH (or install.sh bootstraps it), curl, python3. No root needed.
set -Eeuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
# shellcheck source=launcher/optillm_proxy_launcher/layout.env
source "${REPO}/launcher/optillm_proxy_launcher/layout.env"
PROFILE="full"
PLUGINS=""
RUNS=2
WORK=""
PIDS=()

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

parse_args() {
  while (($#)); do
    case "$1" in
      --profile) PROFILE="${2:?--profile needs lean or full}"; shift 2 ;;
      --plugins) PLUGINS="${2:?--plugins needs none, all or a list}"; shift 2 ;;
      --runs) RUNS="${2:?--runs needs a number}"; shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) echo "bench/install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
  done
  [[ "${RUNS}" =~ ^[1-9][0-9]*$ ]] || { echo "bench/install.sh: --runs must be a positive number" >&2; exit 2; }
  # Stock behaviour on the full profile; the lean profile has no plugin dependencies to load.
  if [[ -z "${PLUGINS}" ]]; then
    if [[ "${PROFILE}" == full ]]; then PLUGINS=all; else PLUGINS=none; fi
  fi
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "${pid}" 2>/dev/null || true
    wait "${pid}" 2>/dev/null || true
  done
  [[ -n "${WORK}" ]] && rm -rf "${WORK}"
}

now() { printf '%s' "${EPOCHREALTIME}"; }

elapsed() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$2"; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

start_upstream() {
  FAKE_PORT="$(free_port)"
  (cd "${REPO}" && exec python3 -m tools.fake_upstream "${FAKE_PORT}") >"${WORK}/upstream.log" 2>&1 &
  PIDS+=("$!")
  local i
  for i in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:${FAKE_PORT}/v1/models" 2>/dev/null && return
    sleep 0.1
  done
  echo "bench/install.sh: the recording upstream did not start (see ${WORK}/upstream.log)" >&2
  exit 1
}

# The provider file install.sh staged, pointed at the recording upstream instead of LiteLLM, and
# a key in the staged upstream-key credential (install.sh leaves it empty for the operator).
write_home() {
  printf 'bench-upstream-key\n' >"${WORK}/root${UPSTREAM_KEY_FILE}"
  mkdir -p "${WORK}/home/.optillm"
  sed "s|base_url: ${UPSTREAM_URL}\$|base_url: http://127.0.0.1:${FAKE_PORT}/v1|" "${WORK}/root${PROVIDER_FILE}" \
    >"${WORK}/home/.optillm/proxy_config.yaml"
  grep -q "base_url: http://127.0.0.1:${FAKE_PORT}/v1" "${WORK}/home/.optillm/proxy_config.yaml" || {
    echo "bench/install.sh: ${PROVIDER_FILE} as install.sh staged it names no base_url ${UPSTREAM_URL}" >&2
    exit 1
  }
}

timed_install() {
  local label="$1" start end
  start="$(now)"
  if ! "${REPO}/install.sh" --root "${WORK}/root" --profile "${PROFILE}" >"${WORK}/${label}.log" 2>&1; then
    echo "bench/install.sh: install.sh failed (${label}); its output:" >&2
    cat "${WORK}/${label}.log" >&2
    exit 1
  fi
  end="$(now)"
  elapsed "${start}" "${end}"
}

# Seconds from exec to the first 200 from /health; extra python flags in "$@".
start_to_healthy() {
  local port runtime pid start i
  port="$(free_port)"
  runtime="${WORK}/root${CURRENT_LINK}"
  start="$(now)"
  env -i PATH=/usr/bin:/bin HOME="${WORK}/home" LANG=C.UTF-8 \
    PROXY_PLUGINS="${PLUGINS}" CREDENTIALS_DIRECTORY="${WORK}/root${CONF_DIR}" \
    "${runtime}/bin/python" -I "$@" "${runtime}/${LAUNCHER_REL}" \
    --host 127.0.0.1 --port "${port}" --base-url "http://127.0.0.1:${FAKE_PORT}/v1" --model "${BASE_MODEL}" \
    >"${WORK}/optillm-${port}.log" 2>&1 &
  pid="$!"
  PIDS+=("${pid}")
  for i in $(seq 3000); do
    if curl -fsS -o /dev/null "http://127.0.0.1:${port}/health" 2>/dev/null; then
      elapsed "${start}" "$(now)"
      kill "${pid}"
      wait "${pid}" 2>/dev/null || true
      return
    fi
    if ! kill -0 "${pid}" 2>/dev/null; then
      echo "bench/install.sh: optillm exited before /health answered; last lines:" >&2
      tail -20 "${WORK}/optillm-${port}.log" >&2
      exit 1
    fi
    : "${i}"
    sleep 0.05
  done
  echo "bench/install.sh: optillm not healthy after 150 s (${WORK}/optillm-${port}.log)" >&2
  exit 1
}

main() {
  parse_args "$@"
  command -v curl >/dev/null || { echo "bench/install.sh: needs curl (apt-get install curl)" >&2; exit 2; }
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-install.XXXXXX")"
  trap cleanup EXIT
  echo "bench/install.sh: profile=${PROFILE} plugins=${PLUGINS} runs=${RUNS} cores=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%FT%TZ)"
  echo "  uv cache: ${UV_CACHE_DIR:-uv default} (a warm cache makes the install hardlink, not download)"

  local fresh rerun
  fresh="$(timed_install fresh)"
  echo "  fresh install (install.sh --root, bytecode compiled):  ${fresh} s"
  rerun="$(timed_install rerun)"
  grep -q 'changed:   nothing' "${WORK}/rerun.log" || echo "  warning: the re-run reported changes (see the output of install.sh)"
  echo "  idempotent re-run:                                      ${rerun} s"
  echo "  venv size: $(du -sh "${WORK}/root${RUNTIMES_DIR}" | cut -f1)"

  start_upstream
  write_home
  mkdir -p "${WORK}/no-pycache"
  local with=() without=() r
  for r in $(seq "${RUNS}"); do
    with+=("$(start_to_healthy)")
    without+=("$(start_to_healthy -B -X "pycache_prefix=${WORK}/no-pycache")")
    : "${r}"
  done
  echo "  start to healthy, precompiled bytecode:  ${with[*]} s (median $(median "${with[@]}"))"
  echo "  start to healthy, no bytecode:           ${without[*]} s (median $(median "${without[@]}"))"
}

main "$@"
