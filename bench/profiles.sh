#!/usr/bin/env bash
# Runtime profiles side by side, one run each: packages, venv size, install time, start, memory.
#
#   bench/profiles.sh [PROFILE...]      (default: lean full; needs uv, python3, curl; ~10 GB free)
#
# Per profile, from locks/py<X.Y>/<profile>.txt, as install.sh builds a runtime
# (`uv pip sync --require-hashes --compile-bytecode` into a new venv):
#   cold install: empty uv cache (everything downloaded from the registry uv is configured for),
#   warm install: a second new venv with that cache now filled (a profile switch on a box),
#   then a real server from the venv through launcher/optillm-proxy-launcher.py, as the unit
#   starts it (lean: PROXY_PLUGINS=none; full: PROXY_PLUGINS=all, stock behaviour), against the
#   recording upstream: seconds to the first 200 from /health and resident memory (VmRSS) then.
# Figures depend on the network and a shared machine: quote them with their date, not as limits.
# Exit codes: 0 figures printed, 1 a step failed, 2 usage.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launcher/optillm_proxy_launcher/layout.env
source "${REPO}/launcher/optillm_proxy_launcher/layout.env"
# The locks install.sh picks on this host: locks/py<X.Y>/ for /usr/bin/python3's version.
LOCKS="${REPO}/locks/py$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
readonly LOCKS
WORK=""
UPSTREAM_PID=""
FAKE_PORT=""
SERVER_PID=""
HEALTHY_SECONDS=""
RESULTS=()

usage() {
  echo "usage: bench/profiles.sh [lean|full ...] (see --help)" >&2
  exit 2
}

cleanup() {
  stop_pid "${SERVER_PID}"
  stop_pid "${UPSTREAM_PID}"
  if [[ -n "${WORK}" ]]; then rm -rf "${WORK}"; fi
}

stop_pid() {
  local pid="$1"
  if [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null; then
    kill "${pid}" 2>/dev/null || true
    wait "${pid}" 2>/dev/null || true
  fi
}

require_tools() {
  local tool
  for tool in uv python3 curl du; do
    command -v "${tool}" >/dev/null || { echo "profiles.sh: ${tool} is not on PATH (scripts/test.sh installs the tools)" >&2; exit 1; }
  done
}

check_profiles() {
  local profile
  for profile in "$@"; do
    [[ -f "${LOCKS}/${profile}.txt" ]] || { echo "profiles.sh: no lock ${LOCKS#"${REPO}"/}/${profile}.txt (profiles: lean, full)" >&2; usage; }
  done
}

make_workdir() {
  WORK="$(mktemp -d /var/tmp/bench-profiles.XXXXXX)"
  trap cleanup EXIT
}

now() {
  date +%s.%N
}

seconds_since() {
  python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$(now)"
}

# Prints the seconds a fresh venv + sync of the lock took with the given uv cache.
install_runtime() {
  local lock="$1" venv="$2" cache="$3" start
  start="$(now)"
  UV_CACHE_DIR="${cache}" uv venv -q --python /usr/bin/python3 "${venv}"
  UV_CACHE_DIR="${cache}" uv pip sync -q --python "${venv}/bin/python" --require-hashes --compile-bytecode "${lock}"
  seconds_since "${start}"
}

count_packages() {
  local venv="$1"
  find "${venv}"/lib/python3*/site-packages -maxdepth 1 -name '*.dist-info' | wc -l
}

venv_size() {
  du -sh "$1" | cut -f1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Sets UPSTREAM_PID and FAKE_PORT (globals: a $(...) subshell would lose the background pid).
start_upstream() {
  FAKE_PORT="$(free_port)"
  python3 "${REPO}/tools/fake_upstream.py" "${FAKE_PORT}" >/dev/null 2>&1 &
  UPSTREAM_PID=$!
}

plugins_for() {
  if [[ "$1" == "lean" ]]; then echo none; else echo all; fi
}

# The unit's $CREDENTIALS_DIRECTORY: the proxy key (throwaway) and the LiteLLM key (the recording
# upstream checks none), each in a 0600 file in a 0700 dir: never on a command line or in the env.
write_credentials() {
  local dir="$1"
  (
    umask 077
    mkdir -p "${dir}"
    python3 -c 'import secrets; print("opx-" + secrets.token_urlsafe(32))' >"${dir}/api-key"
    printf 'bench-upstream-key\n' >"${dir}/upstream-key"
  )
}

# The provider file install.sh writes (PROVIDER_FILE, from the same template), pointed at the
# recording upstream: the proxy plugin (PROXY_PLUGINS=all) reads it from ~/.optillm/, and without
# it falls back to a packaged list of public cloud providers.
write_provider_file() {
  local file="$1/${PROVIDER_FILE#"${STATE_DIR}"/}"
  mkdir -p "$(dirname "${file}")"
  sed -e "s|@OPTILLM_VERSION@|${OPTILLM_VERSION}|g" -e "s|@UPSTREAM_URL@|http://127.0.0.1:${FAKE_PORT}/v1|g" \
    "${REPO}/etc/optillm-proxy/proxy_config.yaml.in" >"${file}"
}

# Starts the server in the background; sets SERVER_PID and HEALTHY_SECONDS (to the first 200).
start_server() {
  local profile="$1" venv="$2" port home start
  port="$(free_port)"
  home="${WORK}/home-${profile}"
  mkdir -p "${home}/cwd"
  write_credentials "${home}/credentials"
  write_provider_file "${home}"
  start="$(now)"
  (cd "${home}/cwd" && exec env -i PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="${home}" \
      CREDENTIALS_DIRECTORY="${home}/credentials" PROXY_PLUGINS="$(plugins_for "${profile}")" \
      "${venv}/bin/python" -I "${REPO}/launcher/optillm-proxy-launcher.py" --host 127.0.0.1 \
      --port "${port}" --base-url "http://127.0.0.1:${FAKE_PORT}/v1" --model "${BASE_MODEL}" \
      >"${home}/server.log" 2>&1) &
  SERVER_PID=$!
  until curl -fsS -o /dev/null "http://127.0.0.1:${port}/health" 2>/dev/null; do
    kill -0 "${SERVER_PID}" 2>/dev/null || { echo "profiles.sh: the ${profile} server exited:" >&2; tail -20 "${home}/server.log" >&2; exit 1; }
    sleep 0.2
  done
  HEALTHY_SECONDS="$(seconds_since "${start}")"
}

# The server process is the python the subshell exec'd: SERVER_PID itself.
resident_mb() {
  awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/${SERVER_PID}/status"
}

measure_profile() {
  local profile="$1" lock="${LOCKS}/$1.txt" cache="${WORK}/uv-cache" cold warm packages size rss
  echo "== ${profile}: cold install (empty uv cache)" >&2
  cold="$(install_runtime "${lock}" "${WORK}/${profile}-cold" "${cache}")"
  echo "== ${profile}: warm install (cache filled)" >&2
  warm="$(install_runtime "${lock}" "${WORK}/${profile}" "${cache}")"
  rm -rf "${WORK}/${profile}-cold" "${cache}"
  packages="$(count_packages "${WORK}/${profile}")"
  size="$(venv_size "${WORK}/${profile}")"
  echo "== ${profile}: server start" >&2
  start_upstream
  start_server "${profile}" "${WORK}/${profile}"
  rss="$(resident_mb)"
  stop_pid "${SERVER_PID}"
  stop_pid "${UPSTREAM_PID}"
  SERVER_PID=""
  UPSTREAM_PID=""
  rm -rf "${WORK:?}/${profile}"
  RESULTS+=("$(printf '%-8s %8s %9s %10s %10s %10s %8s %s' "${profile}" "${packages}" "${size}" \
    "${cold}" "${warm}" "${HEALTHY_SECONDS}" "${rss}" "$(plugins_for "${profile}")")")
}

print_results() {
  echo "# bench/profiles.sh $(date -u +%Y-%m-%dT%H:%MZ), $(uv --version), $(nproc) cores"
  printf '%-8s %8s %9s %10s %10s %10s %8s %s\n' profile packages venv cold_s warm_s healthy_s rss_mb plugins
  printf '%s\n' "${RESULTS[@]}"
}

main() {
  local profiles=("$@") profile
  if [[ ${#profiles[@]} -eq 0 ]]; then profiles=(lean full); fi
  case "${profiles[0]}" in
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "profiles.sh: unknown argument '${profiles[0]}' (see --help)" >&2; exit 2 ;;
  esac
  require_tools
  check_profiles "${profiles[@]}"
  make_workdir
  for profile in "${profiles[@]}"; do
    measure_profile "${profile}"
  done
  print_results
}

main "$@"
