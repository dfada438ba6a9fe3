#!/usr/bin/env bash
# Proves the fast test tier needs neither root nor the network: runs `pytest -m fast` as the user
# nobody, in a network namespace of its own (loopback only), on a copy of the committed files.
#
#   sudo scripts/test-fast-unprivileged.sh [PYTEST ARGS...]
#
# As root because only root can drop to nobody and make the namespace; the dev environment is
# built first (as root: nobody has no uv cache; copied, not hardlinked, so chown leaves uv's cache
# alone; on /usr/bin/python3, which nobody can read, unlike a python under /root). Everything runs
# in a temp dir removed at the end. Exit codes: pytest's; 2 usage or not root.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
readonly CACHE="${OPTILLM_PROXY_TEST_CACHE:-/var/cache/optillm-proxy-ops}"
readonly RUN_AS=nobody
WORK=""

log() { printf '==> %s\n' "$*" >&2; }

cleanup() {
  if [[ -n "${WORK}" ]]; then rm -rf "${WORK}"; fi
}

check_prereqs() {
  if [[ ${EUID} -ne 0 ]]; then
    echo "test-fast-unprivileged.sh: must run as root (it drops to ${RUN_AS} in a new network namespace): sudo $0" >&2
    exit 2
  fi
  local tool
  for tool in unshare setpriv ip git "${CACHE}/tools/bin/uv"; do
    command -v "${tool}" >/dev/null || {
      echo "test-fast-unprivileged.sh: ${tool} is missing (run sudo scripts/test.sh once: it installs uv)" >&2
      exit 2
    }
  done
}

copy_checkout() {
  WORK="$(mktemp -d /tmp/opx-fast.XXXXXX)"
  trap cleanup EXIT
  log "copying the committed files to ${WORK}/repo"
  mkdir "${WORK}/repo" "${WORK}/home"
  git -C "${REPO}" archive HEAD | tar -x -C "${WORK}/repo"
  # A git repository of its own: some tests ask git about the checkout.
  git -C "${WORK}/repo" init -q
  git -C "${WORK}/repo" add -A
  git -C "${WORK}/repo" -c user.name=t -c user.email=t@localhost commit -q -m snapshot
}

sync_dev_env() {
  log "building the dev environment (uv sync --frozen, copies, /usr/bin/python3)"
  (cd "${WORK}/repo" && UV_LINK_MODE=copy "${CACHE}/tools/bin/uv" sync --frozen -q --python /usr/bin/python3)
  chown -R "${RUN_AS}:" "${WORK}"
}

run_fast_tier() {
  log "pytest -m fast $* as ${RUN_AS}, no network"
  # shellcheck disable=SC2016  # expanded by the inner shell, inside the namespace
  unshare --net sh -c 'ip link set lo up && exec "$@"' sh \
    setpriv --reuid="${RUN_AS}" --regid="$(id -g "${RUN_AS}")" --clear-groups \
    env -i HOME="${WORK}/home" LANG=C.UTF-8 PATH="${CACHE}/tools/bin:/usr/bin:/bin" \
    UV_CACHE_DIR="${WORK}/home/uv" \
    sh -c 'cd "$1" && shift && exec uv run --frozen --no-sync pytest -m fast -n auto -p no:cacheprovider "$@"' sh \
    "${WORK}/repo" "$@"
}

main() {
  check_prereqs
  copy_checkout
  sync_dev_env
  run_fast_tier "$@"
}

main "$@"
