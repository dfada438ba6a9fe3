#!/usr/bin/env bash
# install.sh: install, re-run (idempotently) or uninstall the optillm-proxy service.
#
# A stock OptiLLM, from a hashed lock, runs as a systemd service on loopback in front of LiteLLM
# (addresses, paths and versions: launcher/optillm_proxy_launcher/layout.env). Run
# `./install.sh --help` for flags and exit codes. Re-running it is safe: it changes only what
# differs, never overwrites the operator's env or key file, and reloads or restarts the service once.
# This bootstrap checks the flags, root and the system Python, installs uv and opsctl from their
# hashed locks, then hands over to `opsctl install` (ops/install/), which plans and applies the rest.
set -Eeuo pipefail
shopt -s inherit_errexit

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly REPO
# The deployed layout: the one file it is written in (Python reads it too).
# shellcheck source=launcher/optillm_proxy_launcher/layout.env
source "${REPO}/launcher/optillm_proxy_launcher/layout.env"

# The exit codes are listed in --help (ops/install/options.py); the bootstrap uses two of them.
readonly EXIT_STEP_FAILED=1 EXIT_PREREQ=5
readonly SYSTEM_PYTHON="/usr/bin/python3"
readonly DEBIAN_PACKAGES=(python3 python3-venv ca-certificates systemd)

# What ops/install/options.py made of the arguments.
MODE=""
ROOT=""
DRY_RUN=""
JSON=""

CURRENT_STEP="start"
CURRENT_HINT=""
BOOTSTRAPPED=()  # what the bootstrap changed, for opsctl install's summary
UV=""

die() {
  local code="$1"
  shift
  printf 'install.sh: %s\n' "$*" >&2
  exit "${code}"
}

# Names the step that is running and what an operator should do if it fails (used by on_error).
step() {
  CURRENT_STEP="$1"
  CURRENT_HINT="$2"
}

report() { printf '==> %s: %s\n' "${CURRENT_STEP}" "$*"; }

on_error() {
  local code="$1" line="$2"
  # In a $(...) the trap runs too (set -E): leave quietly, and the caller's step reports it once.
  ((BASH_SUBSHELL == 0)) || exit "${code}"
  trap - ERR
  printf 'install.sh: step "%s" failed (exit %s, install.sh line %s).\n' "${CURRENT_STEP}" "${code}" "${line}" >&2
  [[ -n "${CURRENT_HINT}" ]] && printf 'install.sh: what to do: %s\n' "${CURRENT_HINT}" >&2
  printf 'install.sh: nothing half-built is made current; fix the cause and re-run install.sh.\n' >&2
  exit "${EXIT_STEP_FAILED}"
}

# `apply TODO DONE CMD...` runs CMD and records DONE, or, in a dry run, records TODO and runs nothing.
apply() {
  local todo="$1" done="$2"
  shift 2
  if [[ -n "${DRY_RUN}" ]]; then
    BOOTSTRAPPED+=("${todo}")
    report "would ${todo}"
    return 0
  fi
  "$@"
  BOOTSTRAPPED+=("${done}")
  report "${done}"
}

# A deployed path, staged under --root when given.
R() { printf '%s%s' "${ROOT}" "$1"; }

real_install() { [[ -z "${ROOT}" && -z "${DRY_RUN}" ]]; }

# ops/install/ with the system Python and the checkout's stdlib-only modules (nothing installed yet).
checkout_python() {
  "${SYSTEM_PYTHON}" -I -B -c 'import runpy, sys; repo = sys.argv.pop(1); sys.path[:0] = [repo, repo + "/launcher"]
sys.argv[0] = "install.sh"; runpy.run_module(sys.argv.pop(1), run_name="__main__")' "${REPO}" "$@"
}

# A host without python3 gets Debian's (as root); the flags are read with it.
ensure_system_python() {
  step "debian packages" "install them yourself (apt-get install ${DEBIAN_PACKAGES[*]}), then re-run"
  [[ ! -x "${SYSTEM_PYTHON}" ]] || return 0
  if ((EUID != 0)) || ! command -v apt-get >/dev/null; then
    die "${EXIT_PREREQ}" "${SYSTEM_PYTHON} is missing: install python3 with venv support (Debian: apt-get install python3 python3-venv), then re-run"
  fi
  apt_install "${DEBIAN_PACKAGES[@]}" || die "${EXIT_PREREQ}" "apt-get could not install ${DEBIAN_PACKAGES[*]}: install them yourself, then re-run"
}

# ops/install/options.py answers --help, usage errors (exit 2), --uninstall and the missing
# prerequisites it can see before anything is written (its output streams through); otherwise it
# writes MODE ROOT DRY_RUN JSON to descriptor 3, the only thing captured here.
read_arguments() {
  local out rc=0 dry json
  { out="$(checkout_python ops.install.options "$@" 3>&1 1>&4)" || rc=$?; } 4>&1
  ((rc == 0)) && [[ -n "${out}" ]] || exit "${rc}"
  read -r MODE ROOT dry json <<<"${out}"
  [[ "${ROOT}" != - ]] || ROOT=""
  [[ "${dry}" == 0 ]] || DRY_RUN=1
  [[ "${json}" == 0 ]] || JSON=1
}

install_debian_packages() {
  step "debian packages" "install them yourself (apt-get install ${DEBIAN_PACKAGES[*]}), then re-run"
  local missing=() pkg
  if ! command -v dpkg-query >/dev/null; then
    report "not Debian/Ubuntu: skipped (needs ${SYSTEM_PYTHON} with venv, and systemd)"
    return
  fi
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' || missing+=("${pkg}")
  done
  if ((${#missing[@]} == 0)); then
    report "present (${DEBIAN_PACKAGES[*]})"
  elif [[ -n "${ROOT}" ]]; then
    report "missing ${missing[*]}: not installed (--root)"
  else
    apply "install Debian packages: ${missing[*]}" "installed Debian packages: ${missing[*]}" apt_install "${missing[@]}"
  fi
}

apt_install() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Builds a directory under a temporary name with BUILDER DIR ARGS..., then renames it into place,
# so a half-built tool is never what a path points at.
build_dir() {
  local dest="$1" builder="$2" tmp
  shift 2
  tmp="$(dirname "${dest}")/.$(basename "${dest}").partial"
  mkdir -p "$(dirname "${dest}")"
  rm -rf "${tmp}"
  "${builder}" "${tmp}" "$@"
  chmod -R go-w "${tmp}"
  if real_install; then chown -R root:root "${tmp}"; fi
  rm -rf "${dest}"
  mv -T "${tmp}" "${dest}"
}

uv_version_wanted() { sed -n 's/^uv==\([0-9.]*\).*/\1/p' "${REPO}/locks/uv.txt"; }

is_wanted_uv() { [[ -x "$1" ]] && [[ "$("$1" --version 2>/dev/null)" == "uv $(uv_version_wanted)"* ]]; }

bootstrap_uv() {
  step "uv" "check that pip can reach the package index (pip config / PIP_INDEX_URL), then re-run"
  local want tools_uv on_path
  want="$(uv_version_wanted)"
  tools_uv="$(R "${TOOLS_DIR}")/uv/bin/uv"
  on_path="$(command -v uv || true)"
  UV="${tools_uv}"
  if is_wanted_uv "${tools_uv}"; then
    report "uv ${want} in ${TOOLS_DIR}/uv"
  elif [[ -n "${on_path}" ]] && is_wanted_uv "${on_path}"; then
    UV="${on_path}"
    report "uv ${want} found at ${on_path}"
  else
    apply "bootstrap uv ${want} into ${TOOLS_DIR}/uv (python3 -m venv, pip --require-hashes)" \
      "bootstrapped uv ${want} into ${TOOLS_DIR}/uv" build_dir "$(R "${TOOLS_DIR}")/uv" build_uv
  fi
}

build_uv() {
  "${SYSTEM_PYTHON}" -c 'import ensurepip' 2>/dev/null ||
    die "${EXIT_PREREQ}" "Python's venv support is missing: apt-get install python3-venv, then re-run"
  "${SYSTEM_PYTHON}" -m venv "$1"
  "$1/bin/pip" install -q --disable-pip-version-check --no-input --require-hashes -r "${REPO}/locks/uv.txt"
}

# --system-certs: the host's trust store (a company CA in it works as for curl and apt), not the
# Mozilla roots uv bundles.
uv_cmd() { "${UV}" --no-config --system-certs -q "$@"; }

# The checkout's files opsctl's venv carries: ops/ and the launcher package (lint calls the
# launcher's own checks; ops.from_launcher.layout reads its layout.env).
opsctl_sources() {
  (cd "${REPO}" && find ops -name '*.py' -type f &&
    find launcher/optillm_proxy_launcher -type f \( -name '*.py' -o -name '*.json' -o -name '*.env' \) \
      -not -path '*/__pycache__/*') | LC_ALL=C sort
}

# What opsctl's venv is built from: its lock, its sources, the interpreter its bin/python links to
# (another Python has another site-packages) and the script naming both. Not where it lives: a
# --root staging is not movable (its opsctl names its python there).
opsctl_build_id() {
  {
    readlink -f "${SYSTEM_PYTHON}"
    declare -f write_opsctl_script
    sha256sum "${REPO}/locks/opsctl.txt" | cut -d' ' -f1
    (cd "${REPO}" && opsctl_sources | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

# opsctl: its locked dependencies plus a copy of ops/ and the launcher package (no build backend
# needed), in its own venv under tools/, linked from OPSCTL_LINK.
install_opsctl() {
  step "opsctl" "check locks/opsctl.txt and the package index access, then re-run"
  local venv link_target
  venv="$(R "${TOOLS_DIR}")/opsctl"
  link_target="../../../${TOOLS_DIR#/}/opsctl/bin/opsctl"
  if [[ "$(cat "${venv}/.build-id" 2>/dev/null || true)" != "$(opsctl_build_id)" ]]; then
    apply "install opsctl into ${TOOLS_DIR}/opsctl" "installed opsctl into ${TOOLS_DIR}/opsctl" \
      build_dir "${venv}" build_opsctl "${venv}"
  else
    report "${TOOLS_DIR}/opsctl unchanged"
  fi
  if [[ ! -L "$(R "${OPSCTL_LINK}")" || "$(readlink "$(R "${OPSCTL_LINK}")")" != "${link_target}" ]]; then
    apply "link ${OPSCTL_LINK} -> ${TOOLS_DIR}/opsctl/bin/opsctl" "linked ${OPSCTL_LINK} -> ${TOOLS_DIR}/opsctl/bin/opsctl" \
      make_link "${link_target}" "$(R "${OPSCTL_LINK}")"
  fi
}

# build_opsctl DIR FINAL: the venv in DIR, its opsctl script naming FINAL (where DIR is renamed to).
build_opsctl() {
  local tmp="$1" final="$2" site
  uv_cmd venv --relocatable --python "${SYSTEM_PYTHON}" "${tmp}"
  uv_cmd pip sync --python "${tmp}/bin/python" --require-hashes --compile-bytecode "${REPO}/locks/opsctl.txt"
  site="$("${tmp}/bin/python" -I -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  (cd "${REPO}" && find ops -name '*.py' -type f -print0 | xargs -0 cp --parents -t "${site}")
  (cd "${REPO}/launcher" && find optillm_proxy_launcher -type f \( -name '*.py' -o -name '*.json' -o -name '*.env' \) \
    -not -path '*/__pycache__/*' -print0 | xargs -0 cp --parents -t "${site}")
  "${tmp}/bin/python" -I -m compileall -q "${site}/ops" "${site}/optillm_proxy_launcher" >/dev/null
  write_opsctl_script "${tmp}/bin/opsctl" "${final}" "${site#"${tmp}"/}"
  opsctl_build_id >"${tmp}/.build-id"
}

# A python script, not a shell wrapper: monitoring runs `opsctl health` every minute, and a
# wrapper's sh, realpath and dirname cost more than the probe itself. -I ignores the caller's
# environment; -S skips the site module, so the venv's packages are named here (none of the
# locked ones needs a .pth file). Paths are the venv's final ones (it is built under another name).
write_opsctl_script() {
  local dest="$1" venv="$2" site_rel="$3"
  cat >"${dest}" <<EOF
#!${venv}/bin/python -IS
# opsctl, installed by install.sh: ops.cli with this venv's packages only.
import sys
sys.path.append("${venv}/${site_rel}")
sys.argv[0] = "opsctl"
from ops.cli import main
main()
EOF
  chmod 0755 "${dest}"
}

# Point LINK at TARGET by atomic rename (relative targets keep a --root staging self-contained).
make_link() {
  local target="$1" link="$2"
  mkdir -p "$(dirname "${link}")"
  ln -sfn "${target}" "${link}.install-tmp.$$"
  if real_install; then chown -h root:root "${link}.install-tmp.$$"; fi
  mv -fT "${link}.install-tmp.$$" "${link}"
}

# `opsctl install` with the same arguments, told where the checkout is and what was bootstrapped;
# its exit code is install.sh's and its stdout the invoker's (the --json object goes there). A dry
# run plans with the system Python from the checkout (ops.install is stdlib only): it writes nothing,
# not even opsctl's venv.
hand_over() {
  local args=("--toolkit=${REPO}") item
  for item in "${BOOTSTRAPPED[@]}"; do args+=("--bootstrapped=${item}"); done
  trap - ERR
  if [[ -n "${DRY_RUN}" ]]; then
    checkout_python ops.install.main "${args[@]}" "$@" >&3 3>&-
  else
    exec "$(R "${TOOLS_DIR}")/opsctl/bin/opsctl" install "${args[@]}" "$@" >&3 3>&-
  fi
}

main() {
  umask 022
  ensure_system_python
  read_arguments "$@"
  # fd 3 is the invoker's stdout; with --json only the object goes there.
  exec 3>&1
  [[ -z "${JSON}" ]] || exec 1>&2
  trap 'on_error $? $LINENO' ERR
  if [[ "${MODE}" == rollback ]]; then
    # Back to the previous runtime: opsctl runtime rollback (validation, switch, checks) decides.
    exec "${TOOLS_DIR}/opsctl/bin/opsctl" runtime rollback ${JSON:+--json} >&3 3>&-
  fi
  install_debian_packages
  bootstrap_uv
  install_opsctl
  hand_over "$@"
}

# Sourcing defines everything and runs nothing.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
