#!/usr/bin/env bash
# Restart and memory figures of the optillm-proxy unit in the booted systemd test box (issues 8, 10).
#
#   sudo bench/box_restart.sh [--profile lean|full] [--rounds N]
#
# Boots the test box (tests/box: cached Debian base of OPTILLM_PROXY_BOX_RELEASE, default bookworm, real systemd under systemd-nspawn),
# runs the real install.sh in it with the profile, and measures for the default plugin set
# (PROXY_PLUGINS=none) and, on the full profile, PROXY_PLUGINS=all:
#   - kill -9 of the main process -> systemd restarts it -> active and /health 200 (N rounds)
#   - systemctl restart -> active and /health 200 (N rounds)
#   - resident memory (VmRSS) of the main process once healthy, and the unit's STATUS= line
#   - the runtime's size on disk and package count; the in-box install.sh time (uv cache warm)
# Prints one line per figure. Needs root and ports 127.0.0.1:4000/4020 free (it runs the
# recording upstream on 4000; the box's proxy listens on 4020). Quoted in bench/README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
# shellcheck source=launcher/optillm_proxy_launcher/layout.env
source "${REPO}/launcher/optillm_proxy_launcher/layout.env"
readonly HEALTH_URL="http://${LISTEN_HOST}:${LISTEN_PORT}/health"
readonly BOX_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PROFILE="lean"
ROUNDS=3
WORK=""
UPSTREAM_PID=""
BOX_SERVER_PID=""
PID1=""

usage() {
  sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
  echo "box_restart.sh: $*" >&2
  exit 1
}

parse_args() {
  while (($#)); do
    case "$1" in
      --profile) PROFILE="${2:?--profile needs lean or full}"; shift 2 ;;
      --rounds) ROUNDS="${2:?--rounds needs a number}"; shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) echo "box_restart.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
  done
  [[ "${PROFILE}" == lean || "${PROFILE}" == full ]] || { echo "box_restart.sh: --profile must be lean or full" >&2; exit 2; }
  [[ "${ROUNDS}" =~ ^[1-9][0-9]*$ ]] || { echo "box_restart.sh: --rounds must be a positive number" >&2; exit 2; }
}

require_root() {
  [[ ${EUID} -eq 0 ]] || die "must run as root (it boots a systemd-nspawn box): sudo $0"
  command -v systemd-nspawn >/dev/null || die "systemd-nspawn missing: apt-get install systemd-container debootstrap"
}

# The box's ports are fixed: one box at a time on this machine (same lock as tests/fixtures/box.py).
lock_ports() {
  local cache="${OPTILLM_PROXY_TEST_CACHE:-/var/cache/optillm-proxy-ops}"
  mkdir -p "${cache}"
  exec 9>"${cache}/.box-ports.lock"
  flock -w 1800 9 || die "another box session held ${cache}/.box-ports.lock for 30 min (ports ${UPSTREAM_PORT}/${LISTEN_PORT})"
}

cleanup() {
  if [[ -n "${BOX_SERVER_PID}" ]] && kill -0 "${BOX_SERVER_PID}" 2>/dev/null; then
    kill -TERM "${BOX_SERVER_PID}"
    wait "${BOX_SERVER_PID}" 2>/dev/null || true
  fi
  if [[ -n "${UPSTREAM_PID}" ]] && kill -0 "${UPSTREAM_PID}" 2>/dev/null; then
    kill -TERM "${UPSTREAM_PID}"
    wait "${UPSTREAM_PID}" 2>/dev/null || true
  fi
  [[ -n "${WORK}" ]] && rm -rf "${WORK}"
}

now() { date +%s.%N; }

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

start_upstream() {
  (cd "${REPO}" && exec python3 -m tools.fake_upstream "${UPSTREAM_PORT}") >"${WORK}/upstream.log" 2>&1 &
  UPSTREAM_PID=$!
}

start_box() {
  local state="${WORK}/box.json" started
  started="$(now)"
  (cd "${REPO}" && exec uv run --frozen python -m tests.box serve --state "${state}" -- --profile "${PROFILE}") \
    >"${WORK}/box.log" 2>&1 &
  BOX_SERVER_PID=$!
  until [[ -s "${state}" ]]; do
    kill -0 "${BOX_SERVER_PID}" 2>/dev/null || die "the box did not come up: $(tail -20 "${WORK}/box.log")"
    sleep 1
  done
  PID1="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid1"])' "${state}")"
  echo "box up (base build, copy, boot, install.sh --profile ${PROFILE}, healthy) in $(elapsed "${started}" "$(now)") s: $(cat "${state}")"
}

in_box() {
  nsenter -t "${PID1}" -a -- /usr/bin/env -i PATH="${BOX_PATH}" LANG=C.UTF-8 /bin/bash -c "$1"
}

main_pid() { in_box "systemctl show ${SERVICE} -p MainPID --value"; }

# Every measured start counts against the unit's StartLimitBurst= (5 in 5 min): a benchmark
# makes more starts than that on purpose, so it clears the counter before each one.
reset_start_limit() { in_box "systemctl reset-failed ${SERVICE}"; }

# Active in systemd (READY=1 seen), a main PID other than $1, and /health answering.
wait_healthy() {
  local not_pid="$1" deadline=$((SECONDS + 300)) state pid
  while ((SECONDS < deadline)); do
    state="$(in_box "systemctl show ${SERVICE} -p ActiveState --value")"
    [[ "${state}" != failed ]] || die "${SERVICE} failed: $(in_box "journalctl -u ${SERVICE} -n 10 --no-pager -o cat")"
    if curl -fsS -m 2 -o /dev/null "${HEALTH_URL}" 2>/dev/null; then
      pid="$(main_pid)"
      if [[ "${state}" == active && "${pid}" != 0 && "${pid}" != "${not_pid}" ]]; then
        return 0
      fi
    fi
    sleep 0.1
  done
  die "${SERVICE} not healthy within 300 s: $(in_box "journalctl -u ${SERVICE} -n 20 --no-pager -o cat")"
}

# One figure: ROUNDS times, ACTION on the running main process, then time until a new one serves.
measure_recovery() {
  local label="$1" action="$2" i old t0 times=()
  for ((i = 0; i < ROUNDS; i++)); do
    reset_start_limit
    old="$(main_pid)"
    t0="$(now)"
    in_box "${action//\{pid\}/${old}}"
    wait_healthy "${old}"
    times+=("$(elapsed "${t0}" "$(now)")")
  done
  echo "  ${label} -> healthy (s): ${times[*]}"
}

measure_kill9() {
  measure_recovery "kill -9" "kill -9 {pid}"
}

measure_restart() {
  measure_recovery "systemctl restart" "systemctl restart ${SERVICE}"
}

measure_memory() {
  local pid rss_kb
  pid="$(main_pid)"
  rss_kb="$(in_box "awk '/^VmRSS:/ {print \$2}' /proc/${pid}/status")"
  echo "  resident memory of the main process: $((rss_kb / 1024)) MB"
  echo "  status: $(in_box "systemctl show ${SERVICE} -p StatusText --value")"
}

measure_runtime() {
  local runtime
  runtime="$(in_box "readlink -f ${CURRENT_LINK}")"
  echo "runtime ${runtime##*/}: $(in_box "du -sm ${runtime} | cut -f1") MB on disk, $(in_box "ls ${runtime}/${SITE_PACKAGES_REL}/ | grep -c '[.]dist-info\$'") packages"
}

use_plugins() {
  local setting="$1"
  in_box "sed -i 's/^PROXY_PLUGINS=.*/PROXY_PLUGINS=${setting}/' ${ENV_FILE} && grep -q '^PROXY_PLUGINS=${setting}\$' ${ENV_FILE}" ||
    die "could not set PROXY_PLUGINS=${setting} in the box's ${ENV_FILE}"
  local old
  reset_start_limit
  old="$(main_pid)"
  in_box "systemctl restart ${SERVICE}" || die "restart with PROXY_PLUGINS=${setting} failed: $(in_box "journalctl -u ${SERVICE} -n 5 --no-pager -o cat")"
  wait_healthy "${old}"
}

measure_plugin_set() {
  local setting="$1"
  echo "profile ${PROFILE}, PROXY_PLUGINS=${setting}:"
  use_plugins "${setting}"
  measure_memory
  measure_kill9
  measure_restart
}

main() {
  parse_args "$@"
  require_root
  WORK="$(mktemp -d)"
  trap cleanup EXIT
  trap 'exit 143' TERM INT
  lock_ports
  start_upstream
  start_box
  measure_runtime
  measure_plugin_set none
  if [[ "${PROFILE}" == full ]]; then
    measure_plugin_set all
  else
    echo "profile lean, PROXY_PLUGINS=all: not measured (the lean runtime cannot import every plugin; the launcher refuses it, exit 78)"
  fi
}

main "$@"
