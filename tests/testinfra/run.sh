#!/usr/bin/env bash
# Run the deployed-host checks (tests/testinfra/) from a checkout, as the RUNBOOK prints it:
#
#   sudo tests/testinfra/run.sh --hosts=local://        # on the host itself, as root
#   tests/testinfra/run.sh --hosts=ssh://root@HOST      # from a checkout elsewhere, over ssh
#   tests/testinfra/run.sh --ansible-inventory=ansible/inventory.yml --hosts=ansible://optillm_proxy
#
# Needs no uv on PATH and writes nothing into the checkout (it may be read-only): the suite's venv
# (uv.lock's dev group: pytest, pytest-testinfra, PyYAML) is built by the uv that install.sh put in
# /opt/optillm-proxy/tools (else the uv 0.13.9 on PATH) in $TESTINFRA_VENV, no bytecode and no
# pytest cache are written. CI runs exactly this in the booted box (tests/test_box_testinfra.py)
# and against the fleet (tests/test_fleet.py).
set -Eeuo pipefail

INSTALLED_UV=/opt/optillm-proxy/tools/uv/bin/uv
VENV="${TESTINFRA_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/optillm-proxy-testinfra/venv}"

usage() {
  cat <<USAGE
Usage: $0 --hosts=HOSTS [PYTEST ARGS...]

Checks a host after install.sh (tests/testinfra/test_deployed_host.py). Root is needed on the
target (the key files are root 0600): run it as root with --hosts=local://, or over ssh as
root@HOST. Other arguments go to pytest (-q, -x, -k EXPR, -rA).

  --hosts=local://          this host
  --hosts=ssh://root@HOST   another host, over ssh (the ssh client's own config and keys)
  --ansible-inventory=FILE --hosts=ansible://optillm_proxy
                            every host of the fleet's Ansible inventory (ansible/), over ssh
                            with the inventory's user, key and ssh arguments

The suite's venv: ${VENV} (set TESTINFRA_VENV to put it elsewhere), built from uv.lock by
${INSTALLED_UV} (else the uv on PATH); the first run downloads from the package index
(or uses UV_CACHE_DIR / UV_INDEX_URL as uv does).

Exit codes: pytest's: 0 every check passed, 1 a check failed, 2-5 pytest could not run the
suite; 2 also for a missing --hosts (without it the suite would check nothing).
USAGE
}

hosts=""
for arg in "$@"; do
  case "${arg}" in
    -h|--help) usage; exit 0 ;;
    --hosts=?*) hosts="${arg#--hosts=}" ;;
    --hosts) echo "$0: write --hosts=HOSTS (one argument), e.g. --hosts=local://" >&2; exit 2 ;;
  esac
done
if [[ -z "${hosts}" ]]; then
  echo "$0: no --hosts: name the host to check, e.g. sudo $0 --hosts=local:// (see --help)" >&2
  exit 2
fi

repo="$(cd "$(dirname -- "$(realpath -- "${BASH_SOURCE[0]}")")/../.." && pwd)"
if [[ -x "${INSTALLED_UV}" ]]; then
  uv="${INSTALLED_UV}"
elif uv="$(command -v uv)"; then
  :
else
  echo "$0: no uv: run install.sh on this host (it puts uv in ${INSTALLED_UV%/bin/uv}), or put uv 0.13.9 on PATH" >&2
  exit 2
fi

export PYTHONDONTWRITEBYTECODE=1
mkdir -p "$(dirname -- "${VENV}")"
if ! (cd "${repo}" && UV_PROJECT_ENVIRONMENT="${VENV}" "${uv}" sync --frozen --group dev --no-install-project -q); then
  echo "$0: building the suite's venv ${VENV} with ${uv} failed (see above)" >&2
  exit 2
fi
cd "${repo}"
# The ansible:// backend runs ansible-inventory: the venv's (ansible-core is in the dev group).
export PATH="${VENV}/bin:${PATH}"
# ops reads the layout and the launcher's checks from launcher/optillm_proxy_launcher (no project install).
PYTHONPATH="${repo}:${repo}/launcher" exec "${VENV}/bin/python" -m pytest -p no:cacheprovider tests/testinfra "$@"
