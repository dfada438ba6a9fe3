#!/usr/bin/env bash
# Downtime of a validated upgrade and of a rollback (one restart each), on an installed host.
#
#   sudo bench/upgrade_downtime.sh [ROUNDS]      (default 3 rounds)
#
# Builds a variant of the current profile's lock (same pins plus a comment line, so a new runtime
# directory) once, then per round: install.sh --upgrade VARIANT, install.sh --rollback, while
# /health is polled every 50 ms. Prints, per operation, the wall time and the longest stretch
# during which /health did not answer (the downtime clients see). Ends where it started (the
# variant runtime stays on disk as `previous`; `opsctl runtime prune --keep 0` removes it after
# another upgrade). Measurements only: nothing here asserts a number.
# Exit codes: 0 figures printed, 2 usage or a prerequisite missing (root, an installed healthy
# service, curl) or an operation failed (its log's tail is printed).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
# shellcheck source=launcher/optillm_proxy_launcher/layout.env
source "${REPO}/launcher/optillm_proxy_launcher/layout.env"
# The locks install.sh picks on this host: locks/py<X.Y>/ for /usr/bin/python3's version.
LOCKS="${REPO}/locks/py$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
readonly LOCKS
readonly HEALTH_URL="http://${LISTEN_HOST}:${LISTEN_PORT}/health"
readonly POLL_SECONDS="0.05"
WORK=""
POLLER=""

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'upgrade_downtime.sh: %s\n' "$*" >&2; exit 2; }

cleanup() {
  if [[ -n "${POLLER}" ]]; then kill "${POLLER}" 2>/dev/null || true; fi
  if [[ -n "${WORK}" ]]; then rm -rf "${WORK}"; fi
}

check_prereqs() {
  ((EUID == 0)) || die "run as root: sudo $0"
  [[ -L "${CURRENT_LINK}" ]] || die "no ${CURRENT_LINK}: install first (sudo ./install.sh)"
  command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
  curl -sf -m 3 "${HEALTH_URL}" >/dev/null || die "${HEALTH_URL} does not answer: the service must be healthy before measuring"
}

# Through the one manifest reader, with the runtime's own python.
current_profile() {
  "${CURRENT_LINK}/bin/python" -I "${CURRENT_LINK}/libexec/optillm_proxy_launcher/manifest.py" "${CURRENT_LINK}" profile
}

make_variant_lock() {
  local profile="$1"
  # A fixed comment: the same variant hash every run, so the runtime is built only once.
  { cat "${LOCKS}/${profile}.txt"; echo "# bench/upgrade_downtime.sh variant"; } >"${WORK}/${profile}-variant.txt"
  echo "${WORK}/${profile}-variant.txt"
}

start_poller() {
  local out="$1"
  (
    while :; do
      if curl -sf -m 2 -o /dev/null "${HEALTH_URL}"; then s=up; else s=down; fi
      printf '%s %s\n' "$(date +%s.%N)" "${s}"
      sleep "${POLL_SECONDS}"
    done
  ) >"${out}" &
  POLLER=$!
}

stop_poller() {
  kill "${POLLER}" 2>/dev/null || true
  wait "${POLLER}" 2>/dev/null || true
  POLLER=""
}

# Longest run of `down` samples, from the first down sample to the next up one, seconds.
longest_outage() {
  awk '$2 == "down" && !d { d = $1 } $2 == "up" && d { o = $1 - d; if (o > m) m = o; d = 0 }
       END { if (d) print "still-down"; else printf "%.2f\n", m }' "$1"
}

measure() {
  local label="$1" samples start end rc=0
  shift
  samples="${WORK}/${label// /-}.samples"
  start_poller "${samples}"
  sleep 0.3
  start="$(date +%s.%N)"
  "$@" >"${WORK}/last.log" 2>&1 || rc=$?
  end="$(date +%s.%N)"
  sleep 0.3
  stop_poller
  if ((rc != 0)); then
    tail -5 "${WORK}/last.log" >&2
    die "${label} exited ${rc}"
  fi
  printf '%-28s wall %6.1f s   downtime %s s\n' "${label}" \
    "$(awk -v a="${start}" -v b="${end}" 'BEGIN { print b - a }')" "$(longest_outage "${samples}")"
}

main() {
  local rounds="${1:-3}" profile variant i
  case "${rounds}" in
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
  (($# <= 1)) || die "one argument at most (ROUNDS), got $# (see --help)"
  [[ "${rounds}" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number, not '${rounds}' (see --help)"
  check_prereqs
  WORK="$(mktemp -d)"
  trap cleanup EXIT
  profile="$(current_profile)"
  variant="$(make_variant_lock "${profile}")"
  log "profile ${profile}; first upgrade builds the variant runtime (its wall time includes the build)"
  for ((i = 1; i <= rounds; i++)); do
    measure "upgrade (round ${i})" bash "${REPO}/install.sh" --upgrade "${variant}"
    measure "rollback (round ${i})" bash "${REPO}/install.sh" --rollback
  done
}

main "$@"
