#!/usr/bin/env bash
# The project's one test command (README, .ci/run): sets up everything from nothing, then runs
# every test, the real parts included (real optillm from the lock, a booted systemd box, LiteLLM).
# Needs root (the box is a systemd-nspawn container) and the host's apt and PyPI access.
# Caches (documented in docs/testing.md): $OPTILLM_PROXY_TEST_CACHE, default /var/cache/optillm-proxy-ops.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
readonly CACHE="${OPTILLM_PROXY_TEST_CACHE:-/var/cache/optillm-proxy-ops}"
readonly DEBIAN_PACKAGES=(systemd-container debootstrap shellcheck iproute2 procps curl python3 python3-venv prometheus openssh-client)

log() { printf '==> %s\n' "$*" >&2; }

require_root() {
  if [[ ${EUID} -ne 0 ]]; then
    echo "scripts/test.sh: must run as root (it boots a systemd-nspawn test box); run: sudo $0" >&2
    exit 2
  fi
}

install_debian_packages() {
  local missing=() pkg
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' || missing+=("${pkg}")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_uv() {
  local want
  want="$(sed -n 's/^uv==\([0-9.]*\).*/\1/p' "${REPO}/locks/uv.txt")"
  if [[ -x "${CACHE}/tools/bin/uv" ]] && [[ "$("${CACHE}/tools/bin/uv" --version)" == "uv ${want} "* ]]; then
    return
  fi
  log "bootstrapping uv ${want} into ${CACHE}/tools (pip, hashes required)"
  mkdir -p "${CACHE}"
  rm -rf "${CACHE}/tools"
  /usr/bin/python3 -m venv "${CACHE}/tools"
  "${CACHE}/tools/bin/pip" install -q --disable-pip-version-check --require-hashes -r "${REPO}/locks/uv.txt"
}

sync_dev_env() {
  log "syncing the dev environment from uv.lock"
  (cd "${REPO}" && uv sync --frozen -q)
}

run_tests() {
  log "running pytest $*"
  (cd "${REPO}" && uv run --frozen pytest "$@")
}

# The default run boots the box with the lean profile; the full profile (stock, every plugin)
# gets its own box so that the unit proofs, smoke --all and the testinfra suite pass on both.
run_full_profile_box_tests() {
  log "running the box tests again with install.sh --profile full"
  (cd "${REPO}" && OPTILLM_PROXY_BOX_INSTALL_ARGS="--profile full" \
    uv run --frozen pytest -m box tests/test_box_unit.py tests/test_box_testinfra.py \
      tests/test_box_printed_commands.py::test_runs_as_printed \
      tests/test_box_printed_commands.py::test_every_box_command_of_this_profile_ran)
}

# The box suite on Debian 13 (trixie: Python 3.13, systemd 257), lean profile (the full profile
# cannot be built for 3.13: locks/py3.13/full.unavailable); every printed command runs there too.
run_trixie_box_tests() {
  log "running the box suite again on Debian 13 (trixie), lean profile"
  (cd "${REPO}" && OPTILLM_PROXY_BOX_RELEASE=trixie \
    uv run --frozen pytest -m box tests/test_box_unit.py tests/test_box_testinfra.py tests/test_box_faults.py \
      tests/test_box_upgrade.py tests/test_box_printed_commands.py tests/test_box_reload.py)
}

# The fast tier promises developers no root and no network: shown by running it so.
run_fast_tier_unprivileged() {
  log "running the fast tier again as nobody, without network"
  "${REPO}/scripts/test-fast-unprivileged.sh" -q
}

main() {
  require_root
  install_debian_packages
  install_uv
  export PATH="${CACHE}/tools/bin:${PATH}"
  export OPTILLM_PROXY_TEST_CACHE="${CACHE}"
  sync_dev_env
  if (($#)); then
    run_tests "$@"
  else
    run_tests
    run_fast_tier_unprivileged
    run_full_profile_box_tests
    run_trixie_box_tests
  fi
}

main "$@"
