#!/usr/bin/env bash
# install.sh: install, re-run (idempotently) or uninstall the optillm-proxy service.
#
# A stock OptiLLM 0.3.12, from a hashed lock, runs as the systemd service optillm-proxy on
# 127.0.0.1:4020 in front of LiteLLM at 127.0.0.1:4000. Run `./install.sh --help` for flags,
# environment variables and exit codes. Re-running it is safe: it changes only what differs,
# never overwrites the operator's env or key file, and restarts the service at most once.
set -Eeuo pipefail
shopt -s inherit_errexit

# --- Deployed layout: must equal ops/layout.py (tests/test_layout_matches_install.py) ---------
readonly SERVICE="optillm-proxy"
readonly SERVICE_USER="optillm-proxy"
readonly OPTILLM_VERSION="0.3.12"
readonly PROFILES="lean full"
readonly DEFAULT_PROFILE="lean"
readonly LISTEN_HOST="127.0.0.1"
readonly LISTEN_PORT="4020"
readonly UPSTREAM_URL="http://127.0.0.1:4000/v1"
readonly PREFIX_DIR="/opt/optillm-proxy"
readonly RUNTIMES_DIR="/opt/optillm-proxy/runtimes"
readonly CURRENT_LINK="/opt/optillm-proxy/current"
readonly PREVIOUS_LINK="/opt/optillm-proxy/previous"
readonly TOOLS_DIR="/opt/optillm-proxy/tools"
readonly INSTALL_STATE_FILE="/opt/optillm-proxy/install-state"
readonly UNINSTALL_SCRIPT="/opt/optillm-proxy/uninstall.sh"
readonly CONF_DIR="/etc/optillm-proxy"
readonly ENV_FILE="/etc/optillm-proxy/env"
readonly KEY_FILE="/etc/optillm-proxy/api-key"
readonly UPSTREAM_KEY_FILE="/etc/optillm-proxy/upstream-key"
readonly STATE_DIR="/var/lib/optillm-proxy"
readonly PROVIDER_FILE="/var/lib/optillm-proxy/.optillm/proxy_config.yaml"
readonly UNIT_FILE="/etc/systemd/system/optillm-proxy.service"
readonly SOCKET_FILE="/etc/systemd/system/optillm-proxy.socket"
readonly SOCKET_UNIT="optillm-proxy.socket"
readonly DROPIN_DIR="/etc/systemd/system/optillm-proxy.service.d"
readonly OPSCTL_LINK="/usr/local/bin/opsctl"
readonly LAUNCHER_REL="libexec/optillm-proxy-launcher.py"
readonly MANIFEST_REL="optillm-proxy-runtime.json"
readonly SITE_PACKAGES_REL="site-packages"

# --- Exit codes (also in --help) -------------------------------------------------------------
readonly EXIT_OK=0            # installed and healthy; or nothing to do; or staged (--root); or dry run
readonly EXIT_STEP_FAILED=1   # a step failed; the message names it and what to do
readonly EXIT_USAGE=2         # bad flag or value
readonly EXIT_NO_SYSTEMD=3    # installed everything, but systemd is not PID 1: service not started
readonly EXIT_UNHEALTHY=4     # service (re)started but /health did not answer in time
readonly EXIT_PREREQ=5        # prerequisite missing: not root, no lock for python3's version or the profile, unit absent, no LiteLLM key
readonly EXIT_CONFIG_REFUSED=6 # the launcher would refuse the new configuration: nothing restarted

readonly SYSTEM_PYTHON="/usr/bin/python3"
readonly DEBIAN_PACKAGES=(python3 python3-venv ca-certificates)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly REPO

# Settings: flags override these environment variables (see --help).
PROFILE="${OPX_INSTALL_PROFILE:-${DEFAULT_PROFILE}}"
PROFILE_GIVEN="${OPX_INSTALL_PROFILE:+1}"
ROOT="${OPX_INSTALL_ROOT:-}"
HEALTH_TIMEOUT="${OPX_INSTALL_HEALTH_TIMEOUT:-120}"
SKIP_START="${OPX_INSTALL_SKIP_START:-}"
DRY_RUN=""
UNINSTALL=""
PURGE=""
UPGRADE=""
UPGRADE_LOCK=""
ROLLBACK=""

# Run state.
CURRENT_STEP="start"
CURRENT_HINT=""
CHANGES=()
RESTART_REASONS=()
NOTES=()
UV=""
LOCK_FILE=""
LOCK_SHOWN=""
LOCK_SHA=""
RUNTIME_NAME=""
SERVICE_STATE=""
HAS_SYSTEMD=""
UPSTREAM_KEY_MISSING=""
CONFIG_REFUSED=""
KEPT_RUNTIME=""

usage() {
  cat <<EOF
Usage: sudo ./install.sh [--profile lean|full] [--root DIR] [--dry-run] [--no-start]
       sudo ./install.sh --uninstall [--purge] [--root DIR] [--dry-run]
       sudo ./install.sh --upgrade [LOCK] [--profile lean|full]
       sudo ./install.sh --rollback

Installs OptiLLM ${OPTILLM_VERSION} from locks/py<X.Y>/<profile>.txt, X.Y being ${SYSTEM_PYTHON}'s version
(hashes required, bytecode compiled), as the systemd service ${SERVICE} on ${LISTEN_HOST}:${LISTEN_PORT},
upstream ${UPSTREAM_URL}.
Re-running changes only what differs and restarts the service at most once (only if the unit,
launcher, runtime, env, key, provider file or a drop-in changed, or it was not running).
It never overwrites ${ENV_FILE} or ${KEY_FILE} (it only moves an OPENAI_API_KEY= line of the env
file into ${UPSTREAM_KEY_FILE}).

Options:
  --profile P     runtime profile: lean (default; core approaches, no torch) or full (stock,
                  every bundled plugin). Env: OPX_INSTALL_PROFILE. A re-run without it keeps
                  the installed profile; switching is an upgrade (--upgrade --profile P)
  --root DIR      stage the whole layout under DIR without root: no user, chown, apt or
                  systemctl (used by the tests). Env: OPX_INSTALL_ROOT
  --dry-run       print each step and what it would change; write nothing
  --no-start      install everything but do not (re)start the service. Env: OPX_INSTALL_SKIP_START=1
  --uninstall     stop and remove the unit, runtimes, tools, opsctl link and service user;
                  keeps ${CONF_DIR} and ${STATE_DIR}
  --purge         with --uninstall: also remove ${CONF_DIR}, ${STATE_DIR} and unit drop-ins
  --upgrade [LOCK]  build a runtime from LOCK (default locks/py<X.Y>/<profile>.txt; profile: --profile,
                  else the current runtime's) beside the running one, validate it on a spare
                  port under the unit's own settings (opsctl lint, opsctl smoke --all), then
                  switch to it with one restart; switches back by itself if it fails after.
                  Switching profiles (--upgrade --profile full) is an upgrade.
  --rollback      back to the previous runtime, one restart (opsctl runtime rollback)
  -h, --help      this text
Environment:
  OPX_INSTALL_HEALTH_TIMEOUT  seconds to wait for /health after a (re)start (default 120)
  UV_CACHE_DIR                uv's cache (honoured; uv hardlinks the runtime from it)

Layout: runtimes in ${RUNTIMES_DIR}/<version>-<profile>-<lock sha256[:12]>/, ${CURRENT_LINK}
(and ${PREVIOUS_LINK}) link to one; uv and opsctl in ${TOOLS_DIR}/; ${OPSCTL_LINK};
env file ${ENV_FILE}, key files ${KEY_FILE} and ${UPSTREAM_KEY_FILE} (root 0600); units ${UNIT_FILE}
and ${SOCKET_FILE};
uninstall script ${UNINSTALL_SCRIPT}.

Exit codes:
  0  installed and healthy, nothing to do, staged with --root, or dry run
  1  a step failed (the message names the step and what to do)
  2  usage error (unknown flag, bad value)
  3  installed, but systemd is not PID 1 here: the service was not started
  4  the service was (re)started but did not become healthy in time
  5  prerequisite missing (not root, no lock for ${SYSTEM_PYTHON}'s version ($(supported_pythons)) or for
     the profile on it, lock or unit file absent, no LiteLLM key in ${UPSTREAM_KEY_FILE}: everything
     else installed, the service not started)
  6  the launcher would refuse the new configuration (opsctl runtime check): the running service
     was not restarted and keeps the previous configuration; the summary quotes the refusal
With --upgrade/--rollback, once the runtime is built, the exit code is opsctl runtime's:
  0  switched (or already current)   1  refused at validation: nothing switched, service untouched
  2  installation problem or busy    3  failed after the switch: switched back, healthy again
  4  failed after the switch and still unhealthy after switching back: act now
EOF
}

# --- output helpers ----------------------------------------------------------------------------

log() { printf '==> %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
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

# One progress line per step.
report() { log "${CURRENT_STEP}: $*"; }

changed() {
  if [[ -n "${DRY_RUN}" ]]; then
    CHANGES+=("would: $*")
  else
    CHANGES+=("$*")
  fi
}

on_error() {
  local code="$1" line="$2"
  trap - ERR
  printf 'install.sh: step "%s" failed (exit %s, install.sh line %s).\n' "${CURRENT_STEP}" "${code}" "${line}" >&2
  [[ -n "${CURRENT_HINT}" ]] && printf 'install.sh: what to do: %s\n' "${CURRENT_HINT}" >&2
  printf 'install.sh: nothing half-built is made current; fix the cause and re-run install.sh.\n' >&2
  exit "${EXIT_STEP_FAILED}"
}

# A deployed path, staged under --root when given.
R() { printf '%s%s' "${ROOT}" "$1"; }

real_install() { [[ -z "${ROOT}" && -z "${DRY_RUN}" ]]; }

sha256_of() {
  if [[ -e "$1" ]]; then
    sha256sum "$1" | cut -d' ' -f1
  else
    echo absent
  fi
}

mode_of() { stat -c '%a' "$1"; }

# Ownership only when installing for real (staging under --root keeps the invoker's ownership).
chown_root() { if real_install; then chown -h root:root "$@"; fi; }

# Predicates (no side effects) are kept apart from actions: bash ignores errexit inside a
# function used as an `if` condition, so an action must never be one.
file_differs() {
  local src="$1" dest="$2" mode="$3"
  ! { [[ -f "${dest}" && ! -L "${dest}" ]] && cmp -s "${src}" "${dest}" && [[ "$(mode_of "${dest}")" == "${mode#0}" ]]; }
}

# Copy SRC to DEST with MODE, root-owned, by atomic rename (nothing in a dry run).
copy_file() {
  local src="$1" dest="$2" mode="$3"
  [[ -n "${DRY_RUN}" ]] && return 0
  mkdir -p "$(dirname "${dest}")"
  local tmp="${dest}.install-tmp.$$"
  cp "${src}" "${tmp}"
  chmod "${mode}" "${tmp}"
  chown_root "${tmp}"
  mv -f "${tmp}" "${dest}"
}

dir_differs() {
  local dir="$1" mode="$2" owner="${3:-root}"
  [[ ! -d "${dir}" ]] && return 0
  [[ "$(mode_of "${dir}")" != "${mode#0}" ]] && return 0
  real_install && [[ "$(stat -c '%U:%G' "${dir}")" != "${owner}:${owner}" ]]
}

# DIR with MODE (and OWNER when installing for real).
make_dir() {
  local dir="$1" mode="$2" owner="${3:-root}"
  [[ -n "${DRY_RUN}" ]] && return 0
  mkdir -p "${dir}"
  chmod "${mode}" "${dir}"
  if real_install; then chown "${owner}:${owner}" "${dir}"; fi
}

link_differs() { ! { [[ -L "$2" ]] && [[ "$(readlink "$2")" == "$1" ]]; }; }

# Point LINK at TARGET by atomic rename (relative targets keep a --root staging self-contained).
make_link() {
  local target="$1" link="$2"
  [[ -n "${DRY_RUN}" ]] && return 0
  mkdir -p "$(dirname "${link}")"
  ln -sfn "${target}" "${link}.install-tmp.$$"
  chown_root "${link}.install-tmp.$$"
  mv -fT "${link}.install-tmp.$$" "${link}"
}

uv_cmd() { "${UV}" --no-config -q "$@"; }

# --- arguments ---------------------------------------------------------------------------------

parse_args() {
  while (($#)); do
    case "$1" in
      --profile) [[ $# -ge 2 ]] || die "${EXIT_USAGE}" "--profile needs a value: lean or full"
        PROFILE="$2"; PROFILE_GIVEN=1; shift 2 ;;
      --profile=*) PROFILE="${1#*=}"; PROFILE_GIVEN=1; shift ;;
      --upgrade) UPGRADE=1; shift
        if (($#)) && [[ "$1" != -* ]]; then UPGRADE_LOCK="$1"; shift; fi ;;
      --upgrade=*) UPGRADE=1; UPGRADE_LOCK="${1#*=}"; shift ;;
      --rollback) ROLLBACK=1; shift ;;
      --root) [[ $# -ge 2 ]] || die "${EXIT_USAGE}" "--root needs a directory"
        ROOT="$2"; shift 2 ;;
      --root=*) ROOT="${1#*=}"; shift ;;
      --dry-run) DRY_RUN=1; shift ;;
      --no-start) SKIP_START=1; shift ;;
      --uninstall) UNINSTALL=1; shift ;;
      --purge) PURGE=1; shift ;;
      -h | --help) usage; exit "${EXIT_OK}" ;;
      *) die "${EXIT_USAGE}" "unknown argument '$1' (see ./install.sh --help)" ;;
    esac
  done
  case " ${PROFILES} " in
    *" ${PROFILE} "*) ;;
    *) die "${EXIT_USAGE}" "unknown profile '${PROFILE}': use --profile lean or --profile full" ;;
  esac
  [[ "${HEALTH_TIMEOUT}" =~ ^[0-9]+$ ]] ||
    die "${EXIT_USAGE}" "OPX_INSTALL_HEALTH_TIMEOUT must be a number of seconds, not '${HEALTH_TIMEOUT}'"
  if [[ -n "${PURGE}" && -z "${UNINSTALL}" ]]; then
    die "${EXIT_USAGE}" "--purge only goes with --uninstall"
  fi
  if [[ -n "${UPGRADE}${ROLLBACK}" ]]; then
    [[ -n "${UPGRADE}" && -n "${ROLLBACK}" ]] && die "${EXIT_USAGE}" "--upgrade and --rollback are two separate runs"
    [[ -n "${ROOT}${DRY_RUN}${UNINSTALL}${SKIP_START}" ]] &&
      die "${EXIT_USAGE}" "--upgrade/--rollback start and switch the real service: they do not combine with --root, --dry-run, --no-start or --uninstall"
    if [[ -n "${UPGRADE_LOCK}" && "${UPGRADE_LOCK}" != /* ]]; then UPGRADE_LOCK="${PWD}/${UPGRADE_LOCK}"; fi
  fi
  if [[ -n "${ROOT}" ]]; then
    [[ "${ROOT}" == /* ]] || ROOT="${PWD}/${ROOT}"
    ROOT="${ROOT%/}"
  fi
}

# --- install steps -----------------------------------------------------------------------------

check_system() {
  step "check system" "run as root (sudo ./install.sh), or stage with --root DIR"
  if [[ -z "${ROOT}" && -z "${DRY_RUN}" && ${EUID} -ne 0 ]]; then
    die "${EXIT_PREREQ}" "must run as root: sudo ./install.sh (or stage without root: ./install.sh --root DIR)"
  fi
  if [[ -z "${ROOT}" && -d /run/systemd/system ]]; then
    HAS_SYSTEMD=1
  fi
  local where="this host"
  [[ -n "${ROOT}" ]] && where="staging under ${ROOT} (no user, chown, apt or systemctl)"
  [[ -n "${DRY_RUN}" ]] && where="${where}; dry run: nothing is written"
  report "profile ${PROFILE}, ${where}"
}

install_debian_packages() {
  step "debian packages" "install them yourself (apt-get install ${DEBIAN_PACKAGES[*]}), then re-run"
  local missing=() pkg
  if ! command -v dpkg-query >/dev/null; then
    [[ -x "${SYSTEM_PYTHON}" ]] ||
      die "${EXIT_PREREQ}" "${SYSTEM_PYTHON} is missing and this is not a Debian/Ubuntu system: install Python $(supported_pythons) with venv support"
    report "not Debian/Ubuntu: skipped (needs ${SYSTEM_PYTHON} $(supported_pythons) with venv)"
    return
  fi
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' || missing+=("${pkg}")
  done
  if ((${#missing[@]} == 0)); then
    report "present (${DEBIAN_PACKAGES[*]})"
    return
  fi
  if ! real_install; then
    report "missing ${missing[*]}: not installed ($([[ -n "${DRY_RUN}" ]] && echo 'dry run' || echo '--root'))"
    return
  fi
  report "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  changed "installed Debian packages: ${missing[*]}"
}

# The Pythons this checkout has locks for: one directory locks/py<X.Y>/ each (tools/derive_locks.py).
supported_pythons() {
  local dir versions=()
  for dir in "${REPO}"/locks/py[0-9]*.[0-9]*/; do
    [[ -d "${dir}" ]] && versions+=("$(basename "${dir}")")
  done
  local IFS=, joined
  joined="${versions[*]#py}"
  echo "${joined//,/, }"
}

# Picks the lock from the host's python3 (locks/py<X.Y>/<profile>.txt), or --upgrade's LOCK.
# Where a profile cannot be built for that Python, locks/py<X.Y>/<profile>.unavailable says why.
check_python() {
  step "check python" "install a supported Python ($(supported_pythons)) as ${SYSTEM_PYTHON}: Debian 12 and 13 ship one"
  [[ -x "${SYSTEM_PYTHON}" ]] || die "${EXIT_PREREQ}" "${SYSTEM_PYTHON} is missing: install python3 ($(supported_pythons))"
  local version dir
  version="$("${SYSTEM_PYTHON}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  dir="${REPO}/locks/py${version}"
  if [[ -z "${UPGRADE_LOCK}" && ! -d "${dir}" ]]; then
    die "${EXIT_PREREQ}" "${SYSTEM_PYTHON} is Python ${version}; locks exist for Python $(supported_pythons) (locks/py<X.Y>/): use Debian 12 (3.11), Debian 13 (3.13) or another system whose python3 is one of them"
  fi
  if [[ -z "${UPGRADE_LOCK}" && ! -f "${dir}/${PROFILE}.txt" && -f "${dir}/${PROFILE}.unavailable" ]]; then
    die "${EXIT_PREREQ}" "no ${PROFILE} profile for Python ${version}: $(head -n1 "${dir}/${PROFILE}.unavailable")"
  fi
  LOCK_FILE="${UPGRADE_LOCK:-${dir}/${PROFILE}.txt}"
  LOCK_SHOWN="${LOCK_FILE#"${REPO}"/}"  # the lock actually used, as the operator named it
  if [[ ! -f "${LOCK_FILE}" ]]; then
    if [[ "${PROFILE}" == lean ]]; then
      die "${EXIT_PREREQ}" "no lean lock (${LOCK_FILE}) in this checkout: install the stock runtime with --profile full, or update the checkout"
    fi
    die "${EXIT_PREREQ}" "lock file ${LOCK_FILE} is missing from this checkout"
  fi
  LOCK_SHA="$(sha256_of "${LOCK_FILE}")"
  RUNTIME_NAME="${OPTILLM_VERSION}-${PROFILE}-${LOCK_SHA:0:12}"
  report "${SYSTEM_PYTHON} is Python ${version}: ${LOCK_SHOWN}, runtime ${RUNTIME_NAME}"
}

uv_version_wanted() { sed -n 's/^uv==\([0-9.]*\).*/\1/p' "${REPO}/locks/uv.txt"; }

is_wanted_uv() {
  local candidate="$1"
  [[ -x "${candidate}" ]] && [[ "$("${candidate}" --version 2>/dev/null)" == "uv $(uv_version_wanted)"* ]]
}

bootstrap_uv() {
  step "uv" "check that pip can reach the package index (pip config / PIP_INDEX_URL), then re-run"
  local want tools_uv on_path
  want="$(uv_version_wanted)"
  tools_uv="$(R "${TOOLS_DIR}")/uv/bin/uv"
  on_path="$(command -v uv || true)"
  if is_wanted_uv "${tools_uv}"; then
    UV="${tools_uv}"
    report "uv ${want} in ${TOOLS_DIR}/uv"
    return
  fi
  if [[ -n "${on_path}" ]] && is_wanted_uv "${on_path}"; then
    UV="${on_path}"
    report "uv ${want} found at ${on_path}"
    return
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    UV=""
    changed "bootstrap uv ${want} into ${TOOLS_DIR}/uv (python3 -m venv, pip --require-hashes)"
    report "would bootstrap uv ${want} into ${TOOLS_DIR}/uv"
    return
  fi
  report "bootstrapping uv ${want} into ${TOOLS_DIR}/uv (pip, hashes required)"
  "${SYSTEM_PYTHON}" -c 'import ensurepip' 2>/dev/null ||
    die "${EXIT_PREREQ}" "Python's venv support is missing: apt-get install python3-venv, then re-run"
  local dest
  dest="$(R "${TOOLS_DIR}")/uv"
  mkdir -p "$(R "${TOOLS_DIR}")"
  rm -rf "${dest}.partial"
  "${SYSTEM_PYTHON}" -m venv "${dest}.partial"
  "${dest}.partial/bin/pip" install -q --disable-pip-version-check --no-input --require-hashes -r "${REPO}/locks/uv.txt"
  rm -rf "${dest}"
  mv "${dest}.partial" "${dest}"
  chown_root -R "${dest}"
  UV="${dest}/bin/uv"
  changed "bootstrapped uv ${want} into ${TOOLS_DIR}/uv"
}

runtime_is_complete() {
  local dir="$1"
  [[ -f "${dir}/${MANIFEST_REL}" ]] && grep -q "\"lock_sha256\": \"${LOCK_SHA}\"" "${dir}/${MANIFEST_REL}"
}

write_manifest() {
  local dir="$1" python
  python="$("${dir}/bin/python" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  printf '{"profile": "%s", "optillm_version": "%s", "lock_sha256": "%s", "lock_file": "libexec/%s.txt", "lock_source": "%s", "python": "%s"}\n' \
    "${PROFILE}" "${OPTILLM_VERSION}" "${LOCK_SHA}" "${PROFILE}" "${LOCK_SHOWN}" "${python}" >"${dir}/${MANIFEST_REL}"
}

# Builds into a temporary name and renames only when complete, so a half-built runtime is never
# what `current` points at. The venv is relocatable (uv writes relative script launchers).
build_runtime() {
  step "runtime" "check the uv cache/index access and disk space (full needs ~9 GB), then re-run"
  local runtimes dest tmp
  runtimes="$(R "${RUNTIMES_DIR}")"
  dest="${runtimes}/${RUNTIME_NAME}"
  if [[ -n "${KEPT_RUNTIME}" ]]; then
    report "${RUNTIME_NAME} is current and kept (built from another lock)"
    return
  fi
  if runtime_is_complete "${dest}"; then
    report "${RUNTIME_NAME} already built (lock unchanged)"
    return
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    changed "build runtime ${RUNTIME_NAME} from ${LOCK_SHOWN}"
    report "would build ${RUNTIME_NAME} from ${LOCK_SHOWN}"
    return
  fi
  report "building ${RUNTIME_NAME} from ${LOCK_SHOWN} (hashes required, bytecode compiled)"
  mkdir -p "${runtimes}"
  chmod 0755 "$(R "${PREFIX_DIR}")" "${runtimes}"
  tmp="${runtimes}/.${RUNTIME_NAME}.partial"
  rm -rf "${tmp}" "${dest}"
  uv_cmd venv --relocatable --python "${SYSTEM_PYTHON}" "${tmp}"
  uv_cmd pip sync --python "${tmp}/bin/python" --require-hashes --compile-bytecode "${LOCK_FILE}"
  local got
  got="$("${tmp}/bin/python" -I -c 'import importlib.metadata as m; print(m.version("optillm"))')"
  [[ "${got}" == "${OPTILLM_VERSION}" ]] ||
    die "${EXIT_STEP_FAILED}" "${LOCK_SHOWN} installed optillm ${got}, expected ${OPTILLM_VERSION}: fix the lock"
  mkdir -p "${tmp}/libexec"
  cp "${LOCK_FILE}" "${tmp}/libexec/${PROFILE}.txt"
  link_site_packages "${tmp}"
  write_manifest "${tmp}"
  chmod -R go-w "${tmp}"
  chown_root -R "${tmp}"
  mv -T "${tmp}" "${dest}"
  changed "built runtime ${RUNTIME_NAME}"
}

# <runtime>/site-packages -> lib/python3.X/site-packages: the unit names paths inside the runtime
# (spl's data, BindPaths=) without naming the Python version.
link_site_packages() {
  local runtime="$1" found
  found="$(cd "${runtime}" && compgen -G 'lib/python3.*/site-packages' | head -n1)" || return 0
  [[ -n "${found}" ]] || return 0
  link_differs "${found}" "${runtime}/${SITE_PACKAGES_REL}" || return 0
  ln -sfn "${found}" "${runtime}/${SITE_PACKAGES_REL}"
  chown_root "${runtime}/${SITE_PACKAGES_REL}"
}

# Runtimes built by an earlier install.sh lack the link; current, previous or a rollback target
# must have it before the unit that names it starts.
link_runtimes_site_packages() {
  step "runtime links" "check ${RUNTIMES_DIR} by hand, then re-run"
  local runtime added=()
  [[ -n "${DRY_RUN}" ]] && return 0
  for runtime in "$(R "${RUNTIMES_DIR}")"/*/; do
    runtime="${runtime%/}"
    [[ -f "${runtime}/${MANIFEST_REL}" ]] || continue
    if link_differs "$(cd "${runtime}" && compgen -G 'lib/python3.*/site-packages' | head -n1)" "${runtime}/${SITE_PACKAGES_REL}"; then
      link_site_packages "${runtime}"
      added+=("${runtime##*/}")
    fi
  done
  if ((${#added[@]})); then
    changed "linked ${SITE_PACKAGES_REL} in ${added[*]}"
  fi
}

# Copies the repo's launcher/ (entry script, plugin table, the optillm_proxy_launcher package) into
# <runtime>/libexec, keeping subdirectories; an existing runtime gets them updated. The package's
# bytecode is compiled here: the service cannot write the root-owned runtime.
install_launcher() {
  step "launcher" "check the repo's launcher/ directory, then re-run"
  local libexec rel files=() updated=()
  libexec="$(R "${RUNTIMES_DIR}")/${RUNTIME_NAME}/libexec"
  mapfile -t files < <(cd "${REPO}/launcher" && find . -type f \( -name '*.py' -o -name '*.json' \) \
    -not -path '*/__pycache__/*' | sed 's|^\./||' | LC_ALL=C sort)
  if ((${#files[@]} == 0)); then
    warn "launcher/ is empty: ${LAUNCHER_REL} is missing, so the unit cannot start"
    NOTES+=("launcher/ was empty: ${LAUNCHER_REL} is missing")
    report "nothing to install (launcher/ is empty)"
    return
  fi
  for rel in "${files[@]}"; do
    if file_differs "${REPO}/launcher/${rel}" "${libexec}/${rel}" 0644; then
      copy_file "${REPO}/launcher/${rel}" "${libexec}/${rel}" 0644
      updated+=("${rel}")
    fi
  done
  if ((${#updated[@]})); then
    changed "launcher files in ${RUNTIME_NAME}/libexec: ${updated[*]}"
    if [[ -n "${DRY_RUN}" ]]; then
      report "would install ${updated[*]}"
    else
      "${libexec}/../bin/python" -I -m compileall -q "${libexec}" >/dev/null
      report "installed ${updated[*]}"
    fi
  else
    report "unchanged"
  fi
}

switch_current() {
  step "current runtime" "check ${CURRENT_LINK} by hand (ls -l), then re-run"
  local current previous_target
  current="$(R "${CURRENT_LINK}")"
  previous_target=""
  if [[ -L "${current}" ]]; then
    previous_target="$(readlink "${current}")"
  fi
  if [[ "${previous_target}" == "runtimes/${RUNTIME_NAME}" ]]; then
    report "current -> runtimes/${RUNTIME_NAME} (unchanged)"
    return
  fi
  if [[ -n "${previous_target}" ]]; then
    make_link "${previous_target}" "$(R "${PREVIOUS_LINK}")"
  fi
  make_link "runtimes/${RUNTIME_NAME}" "${current}"
  if [[ -n "${previous_target}" ]]; then
    changed "current runtime ${previous_target#runtimes/} -> ${RUNTIME_NAME} (previous kept for rollback)"
  else
    changed "current -> runtimes/${RUNTIME_NAME}"
  fi
  report "${DRY_RUN:+would point }current -> runtimes/${RUNTIME_NAME}"
}

opsctl_build_id() {
  {
    sha256_of "${REPO}/locks/opsctl.txt"
    (cd "${REPO}" && find ops launcher/optillm_proxy_launcher -name '*.py' -type f | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

# opsctl for the box: its locked dependencies plus a copy of ops/ and the launcher package (no
# build backend needed), in its own venv under tools/, linked from /usr/local/bin/opsctl.
install_opsctl() {
  step "opsctl" "check locks/opsctl.txt and the package index access, then re-run"
  local venv id link_target
  venv="$(R "${TOOLS_DIR}")/opsctl"
  id="$(opsctl_build_id)"
  link_target="../../../${TOOLS_DIR#/}/opsctl/bin/opsctl"
  local did=""
  if [[ "$(cat "${venv}/.build-id" 2>/dev/null || true)" != "${id}" ]]; then
    if [[ -n "${DRY_RUN}" ]]; then
      changed "install opsctl into ${TOOLS_DIR}/opsctl"
    else
      local tmp="${venv}.partial"
      rm -rf "${tmp}"
      mkdir -p "$(R "${TOOLS_DIR}")"
      chmod 0755 "$(R "${TOOLS_DIR}")"
      uv_cmd venv --relocatable --python "${SYSTEM_PYTHON}" "${tmp}"
      uv_cmd pip sync --python "${tmp}/bin/python" --require-hashes --compile-bytecode "${REPO}/locks/opsctl.txt"
      local site
      site="$("${tmp}/bin/python" -I -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
      (cd "${REPO}" && find ops -name '*.py' -type f -print0 | xargs -0 cp --parents -t "${site}")
      # lint calls the launcher's own configuration checks (stdlib-only modules of its package).
      (cd "${REPO}/launcher" && find optillm_proxy_launcher -name '*.py' -type f -print0 | xargs -0 cp --parents -t "${site}")
      "${tmp}/bin/python" -I -m compileall -q "${site}/ops" "${site}/optillm_proxy_launcher" >/dev/null
      cat >"${tmp}/bin/opsctl" <<'EOF'
#!/bin/sh
# opsctl, installed by install.sh: runs ops.cli in this venv (isolated from the caller's environment).
exec "$(dirname -- "$(realpath -- "$0")")/python" -I -c 'import sys; sys.argv[0] = "opsctl"; from ops.cli import main; main()' "$@"
EOF
      chmod 0755 "${tmp}/bin/opsctl"
      echo "${id}" >"${tmp}/.build-id"
      chmod -R go-w "${tmp}"
      chown_root -R "${tmp}"
      rm -rf "${venv}"
      mv -T "${tmp}" "${venv}"
      changed "installed opsctl into ${TOOLS_DIR}/opsctl"
    fi
    did=1
  fi
  if link_differs "${link_target}" "$(R "${OPSCTL_LINK}")"; then
    make_link "${link_target}" "$(R "${OPSCTL_LINK}")"
    changed "linked ${OPSCTL_LINK} -> ${TOOLS_DIR}/opsctl/bin/opsctl"
    did=1
  fi
  if [[ -n "${did}" ]]; then
    report "${DRY_RUN:+would install }${TOOLS_DIR}/opsctl, ${OPSCTL_LINK}"
  else
    report "unchanged"
  fi
}

create_service_user() {
  step "service user" "create it by hand: useradd --system --user-group --home-dir ${STATE_DIR} --no-create-home --shell /usr/sbin/nologin ${SERVICE_USER}"
  if [[ -n "${ROOT}" ]]; then
    report "skipped under --root (would create system user ${SERVICE_USER})"
    return
  fi
  if getent passwd "${SERVICE_USER}" >/dev/null; then
    report "${SERVICE_USER} exists"
    return
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    changed "create system user ${SERVICE_USER}"
    report "would create system user ${SERVICE_USER}"
    return
  fi
  useradd --system --user-group --home-dir "${STATE_DIR}" --no-create-home \
    --shell /usr/sbin/nologin --comment "optillm-proxy service" "${SERVICE_USER}"
  changed "created system user ${SERVICE_USER}"
  report "created system user ${SERVICE_USER}"
}

# The service user's home (StateDirectory=, mode as the unit's StateDirectoryMode=) with a
# root-owned .optillm/ holding the provider file:
# without it, 0.3.12's proxy plugin loads a packaged example that routes to public clouds.
write_provider_file() {
  step "provider file" "check ${PROVIDER_FILE} by hand, then re-run"
  local state optillm_dir dest tmp did=""
  state="$(R "${STATE_DIR}")"
  optillm_dir="${state}/.optillm"
  dest="$(R "${PROVIDER_FILE}")"
  if dir_differs "${state}" 0700 "${SERVICE_USER}"; then
    make_dir "${state}" 0700 "${SERVICE_USER}"
    changed "state directory ${STATE_DIR}"
    did=1
  fi
  if dir_differs "${optillm_dir}" 0755 root; then
    make_dir "${optillm_dir}" 0755 root
    changed "directory ${STATE_DIR}/.optillm"
    did=1
  fi
  # Mount point for the unit's BindPaths= (the mcp plugin writes ~/.optillm/logs).
  if dir_differs "${optillm_dir}/logs" 0755 root; then
    make_dir "${optillm_dir}/logs" 0755 root
    changed "directory ${STATE_DIR}/.optillm/logs"
    did=1
  fi
  if [[ -e "${dest}" ]]; then
    if ! grep -q "base_url: ${UPSTREAM_URL}" "${dest}"; then
      NOTES+=("${PROVIDER_FILE} exists and does not point at ${UPSTREAM_URL}: left as is (yours)")
    fi
    report "${PROVIDER_FILE} exists${did:+ (directories fixed)}"
    return
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    changed "write ${PROVIDER_FILE} (LiteLLM on loopback only)"
    report "would write ${PROVIDER_FILE}"
    return
  fi
  tmp="$(mktemp)"
  cat >"${tmp}" <<EOF
# Written by install.sh. optillm 0.3.12's proxy plugin reads this file; without it the plugin
# falls back to a packaged example listing public cloud providers. Loopback LiteLLM only.
providers:
  - name: litellm
    base_url: ${UPSTREAM_URL}
    api_key: \${OPENAI_API_KEY}
routing:
  strategy: failover
  health_check:
    enabled: false
EOF
  copy_file "${tmp}" "${dest}" 0644
  rm -f "${tmp}"
  changed "wrote ${PROVIDER_FILE}"
  report "wrote ${PROVIDER_FILE}"
}

write_env_file() {
  step "env file" "check ${CONF_DIR} by hand (it must be a directory), then re-run"
  local conf dest
  conf="$(R "${CONF_DIR}")"
  dest="$(R "${ENV_FILE}")"
  if dir_differs "${conf}" 0755 root; then
    make_dir "${conf}" 0755 root
    changed "directory ${CONF_DIR}"
  fi
  if [[ -e "${dest}" ]]; then
    tighten_mode "${dest}" "${ENV_FILE}"
    report "${ENV_FILE} exists: kept as is"
    return
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    changed "write ${ENV_FILE} from etc/optillm-proxy/env.example"
    report "would write ${ENV_FILE} from etc/optillm-proxy/env.example"
    return
  fi
  (umask 077 && copy_file "${REPO}/etc/optillm-proxy/env.example" "${dest}" 0600)
  changed "wrote ${ENV_FILE} from env.example"
  report "wrote ${ENV_FILE} (mode 0600)"
}

# The LiteLLM key is a credential of its own (LoadCredential=upstream-key), never in the env file.
# An env file from an earlier install that still holds OPENAI_API_KEY= is migrated: the value goes
# into the key file and each such line becomes a comment. Python does it, so the value never
# passes argv, the environment or this script's output.
write_upstream_key_file() {
  step "upstream key" "check ${UPSTREAM_KEY_FILE} and the OPENAI_API_KEY lines of ${ENV_FILE} by hand, then re-run"
  local dest env outcome
  dest="$(R "${UPSTREAM_KEY_FILE}")"
  env="$(R "${ENV_FILE}")"
  if [[ -e "${dest}" ]]; then
    tighten_mode "${dest}" "${UPSTREAM_KEY_FILE}"
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    if [[ -f "${env}" ]] && grep -qE '^[[:space:]]*OPENAI_API_KEY=' "${env}"; then
      changed "move OPENAI_API_KEY from ${ENV_FILE} into ${UPSTREAM_KEY_FILE}"
      report "would move OPENAI_API_KEY from ${ENV_FILE} into ${UPSTREAM_KEY_FILE}"
    elif [[ ! -s "${dest}" ]]; then
      report "would need ${UPSTREAM_KEY_FILE}: the service is not started without it"
    fi
    return
  fi
  outcome="$(migrate_upstream_key "${env}" "${dest}")"
  case "${outcome}" in
    moved) changed "moved OPENAI_API_KEY from ${ENV_FILE} into ${UPSTREAM_KEY_FILE} (the env file holds no secret now)" ;;
    dropped) changed "removed the OPENAI_API_KEY lines from ${ENV_FILE} (${UPSTREAM_KEY_FILE} is the key)" ;;
    conflict)
      NOTES+=("${ENV_FILE} has an OPENAI_API_KEY different from ${UPSTREAM_KEY_FILE}: keep the right key in ${UPSTREAM_KEY_FILE} and delete the line (the launcher refuses to start while it is there)")
      ;;
    *) ;;
  esac
  if [[ ! -e "${dest}" ]]; then
    # Empty and 0600 already, so that `sudoedit` fills a file nobody else could ever read.
    (umask 077 && : >"${dest}")
    chown_root "${dest}"
    changed "created ${UPSTREAM_KEY_FILE} (empty, mode 0600) for the LiteLLM key"
  fi
  if [[ -s "${dest}" ]]; then
    chown_root "${dest}"
    report "${UPSTREAM_KEY_FILE} (mode 0600)${outcome:+: ${outcome} from ${ENV_FILE}}"
  else
    UPSTREAM_KEY_MISSING=1
    NOTES+=("no LiteLLM key: write it into ${UPSTREAM_KEY_FILE} (sudoedit ${UPSTREAM_KEY_FILE}; one line), then re-run install.sh")
    report "${UPSTREAM_KEY_FILE} is missing or empty: the service will not be started"
  fi
}

# Prints `moved` (the env file's value filled the absent or empty key file), `dropped` (the env
# lines were removed: the key file already held the same key, or the value was empty or the old
# placeholder), `conflict` (the key file holds another key: nothing touched) or nothing.
migrate_upstream_key() {
  [[ -f "$1" ]] || return 0
  (
    umask 077
    "${SYSTEM_PYTHON}" -I - "$1" "$2" <<'PY'
import os, re, sys
env_path, key_path = sys.argv[1], sys.argv[2]
pattern = re.compile(r"^\s*OPENAI_API_KEY=(.*)$")
lines = open(env_path, encoding="utf-8").read().splitlines(keepends=True)
values = [pattern.match(line).group(1).strip().strip("'\"") for line in lines if pattern.match(line)]
if not values:
    sys.exit(0)
value = values[-1]  # systemd applies the last assignment
outcome = "dropped"
existing = open(key_path, encoding="utf-8").read().strip() if os.path.exists(key_path) else ""
if value and value != "replace-with-the-litellm-key":
    if existing and existing != value:
        print("conflict")  # two different keys: keep both where they are, the operator decides
        sys.exit(0)
    if not existing:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(value + "\n")
        outcome = "moved"
note = "# OPENAI_API_KEY: moved to /etc/optillm-proxy/upstream-key by install.sh (a credential, not a variable)\n"
kept = [note if pattern.match(line) else line for line in lines]
tmp = env_path + ".install-tmp"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as out:
    out.write("".join(kept))
os.replace(tmp, env_path)
print(outcome)
PY
  )
}

# Secrets are never group/world readable: an operator's file keeps its content, not a loose mode.
tighten_mode() {
  local path="$1" shown="$2"
  if [[ "$(mode_of "${path}")" != 600 ]]; then
    [[ -z "${DRY_RUN}" ]] && chmod 0600 "${path}"
    changed "mode of ${shown} set to 0600"
  fi
}

# The key never passes through argv or the environment: Python writes it straight into a 0600
# file it creates exclusively.
generate_key_file() {
  local dest="$1"
  (
    umask 077
    "${SYSTEM_PYTHON}" -I -c '
import os, secrets, sys
key = "opx-" + secrets.token_urlsafe(32)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as out:
    out.write(key + "\n")
' "${dest}"
  )
}

write_key_file() {
  step "key file" "check ${KEY_FILE} by hand (remove a broken one to regenerate), then re-run"
  local dest
  dest="$(R "${KEY_FILE}")"
  if [[ -e "${dest}" ]]; then
    tighten_mode "${dest}" "${KEY_FILE}"
    if [[ "$(head -c 3 "${dest}")" == "sk-" ]]; then
      NOTES+=("${KEY_FILE} starts with 'sk-': optillm 0.3.12 forwards such bearers upstream; replace it (delete it and re-run to generate one)")
    fi
    report "${KEY_FILE} exists: kept as is"
    return
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    changed "generate the proxy key into ${KEY_FILE}"
    report "would generate ${KEY_FILE}"
    return
  fi
  generate_key_file "${dest}"
  chown_root "${dest}"
  changed "generated the proxy key into ${KEY_FILE}"
  report "generated ${KEY_FILE} (mode 0600)"
}

# The service and its socket, from systemd/ in the repo.
install_unit() {
  step "unit" "check systemd/${SERVICE}.service and .socket in the repo (systemd-analyze verify), then re-run"
  local src dest
  for dest in "${UNIT_FILE}" "${SOCKET_FILE}"; do
    src="${REPO}/systemd/$(basename "${dest}")"
    if [[ ! -f "${src}" ]]; then
      if real_install; then
        die "${EXIT_PREREQ}" "systemd/$(basename "${dest}") is missing from this checkout: update the checkout"
      fi
      warn "systemd/$(basename "${dest}") is missing from this checkout: not staged"
      NOTES+=("systemd/$(basename "${dest}") was missing: not installed")
      report "skipped $(basename "${dest}") (not in the repo)"
      continue
    fi
    if file_differs "${src}" "$(R "${dest}")" 0644; then
      copy_file "${src}" "$(R "${dest}")" 0644
      changed "installed ${dest}"
      report "${DRY_RUN:+would install }${dest}"
    else
      report "${dest} unchanged"
    fi
  done
}

# --- uninstall (these functions are also written into the generated uninstall script) ---------

uninstall_stop_unit() {
  step "stop service" "stop it by hand: systemctl disable --now ${SERVICE}"
  if [[ -n "${ROOT}" || ! -d /run/systemd/system ]]; then
    report "no systemd here${ROOT:+ (--root)}: nothing to stop"
    return
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    report "would run: systemctl disable --now ${SERVICE}"
    return
  fi
  systemctl disable --now "${SERVICE}" "${SOCKET_UNIT}" >/dev/null 2>&1 || true
  systemctl reset-failed "${SERVICE}" "${SOCKET_UNIT}" >/dev/null 2>&1 || true
  report "stopped and disabled ${SERVICE} and ${SOCKET_UNIT}"
}

uninstall_remove() {
  local what="$1" path
  path="$(R "${what}")"
  if [[ -e "${path}" || -L "${path}" ]]; then
    if [[ -n "${DRY_RUN}" ]]; then
      report "would remove ${what}"
    else
      rm -rf "${path}"
      report "removed ${what}"
    fi
  fi
}

uninstall_files() {
  step "remove files" "remove the remaining paths by hand (rm -rf), then re-run"
  uninstall_remove "${UNIT_FILE}"
  uninstall_remove "${SOCKET_FILE}"
  if [[ -z "${ROOT}" && -z "${DRY_RUN}" && -d /run/systemd/system ]]; then
    systemctl daemon-reload
  fi
  local link
  link="$(R "${OPSCTL_LINK}")"
  if [[ -L "${link}" && "$(readlink "${link}")" == *"${TOOLS_DIR#/}/opsctl/"* ]]; then
    uninstall_remove "${OPSCTL_LINK}"
  fi
  uninstall_remove "${PREFIX_DIR}"
}

uninstall_user() {
  step "remove user" "remove it by hand: userdel ${SERVICE_USER}"
  if [[ -n "${ROOT}" ]]; then
    report "skipped under --root"
    return
  fi
  if ! getent passwd "${SERVICE_USER}" >/dev/null; then
    return
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    report "would remove user ${SERVICE_USER}"
    return
  fi
  userdel "${SERVICE_USER}"
  report "removed user ${SERVICE_USER}"
}

uninstall_purge() {
  step "purge" "remove ${CONF_DIR} and ${STATE_DIR} by hand"
  if [[ -z "${PURGE}" ]]; then
    report "kept ${CONF_DIR} (env, key) and ${STATE_DIR}; --purge removes them"
    return
  fi
  uninstall_remove "${DROPIN_DIR}"
  uninstall_remove "${CONF_DIR}"
  uninstall_remove "${STATE_DIR}"
}

uninstall_main() {
  if [[ -z "${ROOT}" && -z "${DRY_RUN}" && ${EUID} -ne 0 ]]; then
    die "${EXIT_PREREQ}" "must run as root to uninstall: sudo $0 --uninstall"
  fi
  uninstall_stop_unit
  uninstall_files
  uninstall_user
  uninstall_purge
  log "uninstalled${DRY_RUN:+ (dry run: nothing removed)}"
}

# A standalone uninstall script (k3s style): the same functions, with this install's values.
write_uninstall_script() {
  step "uninstall script" "check ${PREFIX_DIR} by hand, then re-run"
  local tmp dest
  dest="$(R "${UNINSTALL_SCRIPT}")"
  tmp="$(mktemp)"
  {
    echo '#!/usr/bin/env bash'
    echo "# Generated by install.sh: removes optillm-proxy (unit, runtimes, tools, opsctl link, user)."
    echo "# Keeps ${CONF_DIR} and ${STATE_DIR} unless --purge. Flags: --purge --dry-run."
    echo 'set -Eeuo pipefail'
    declare -p SERVICE SERVICE_USER PREFIX_DIR TOOLS_DIR CONF_DIR STATE_DIR UNIT_FILE SOCKET_FILE SOCKET_UNIT \
      DROPIN_DIR OPSCTL_LINK \
      EXIT_USAGE EXIT_PREREQ EXIT_STEP_FAILED
    printf 'ROOT=%q\n' "${ROOT}"
    echo 'DRY_RUN="" PURGE="" CURRENT_STEP="" CURRENT_HINT=""'
    declare -f log warn die step report R on_error uninstall_stop_unit uninstall_remove uninstall_files \
      uninstall_user uninstall_purge uninstall_main
    cat <<'EOF'
for arg in "$@"; do
  case "${arg}" in
    --purge) PURGE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    # What the not-root message above prints (`sudo $0 --uninstall`): accepted, changes nothing.
    --uninstall) ;;
    -h|--help)
      cat <<USAGE
Usage: $0 [--purge] [--dry-run] [-h|--help]

Removes optillm-proxy as install.sh installed it${ROOT:+ under ${ROOT}}:
  - stops and disables ${SERVICE} and ${SOCKET_UNIT}
  - removes ${UNIT_FILE} and ${SOCKET_FILE}
  - removes ${PREFIX_DIR} (runtimes, tools, this script) and the ${OPSCTL_LINK} link
  - removes the system user ${SERVICE_USER}
Keeps ${CONF_DIR} (env file, proxy key, LiteLLM key) and ${STATE_DIR} unless --purge.
Run as root. Re-running is safe: what is already gone is skipped.

  --purge      also remove ${CONF_DIR}, ${STATE_DIR} and ${DROPIN_DIR}
  --dry-run    print what would be removed; remove nothing
  -h, --help   print this text and exit 0

Exit codes: 0 uninstalled (or dry run, or nothing left to remove); ${EXIT_STEP_FAILED} a step failed (the
message names it and what to do); ${EXIT_USAGE} unknown argument; ${EXIT_PREREQ} not root.
USAGE
      exit 0 ;;
    *) die "${EXIT_USAGE}" "unknown argument '${arg}' (flags: --purge --dry-run --help)" ;;
  esac
done
trap 'on_error $? $LINENO' ERR
uninstall_main
EOF
  } >"${tmp}"
  if file_differs "${tmp}" "${dest}" 0755; then
    copy_file "${tmp}" "${dest}" 0755
    report "${DRY_RUN:+would write }${UNINSTALL_SCRIPT}"
  else
    report "unchanged"
  fi
  rm -f "${tmp}"
}

# --- change detection and (re)start ------------------------------------------------------------

# What the running service depends on, one "component sha256" line each. Stored after each run;
# a component that differs from the stored line is a reason to restart.
fingerprint() {
  local libexec dropins
  libexec="$(R "${CURRENT_LINK}")/libexec"
  echo "runtime $(readlink "$(R "${CURRENT_LINK}")" 2>/dev/null || echo absent)"
  if [[ -d "${libexec}" ]]; then
    echo "launcher $(cd "${libexec}" && find . -type f -not -path "*/__pycache__/*" | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -d' ' -f1)"
  else
    echo "launcher absent"
  fi
  echo "unit $(sha256_of "$(R "${UNIT_FILE}")")"
  echo "socket $(sha256_of "$(R "${SOCKET_FILE}")")"
  dropins="$(R "${DROPIN_DIR}")"
  if [[ -d "${dropins}" ]]; then
    echo "drop-ins $(cd "${dropins}" && find . -type f -name '*.conf' | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -d' ' -f1)"
  else
    echo "drop-ins absent"
  fi
  echo "env-file $(sha256_of "$(R "${ENV_FILE}")")"
  echo "key-file $(sha256_of "$(R "${KEY_FILE}")")"
  echo "upstream-key $(sha256_of "$(R "${UPSTREAM_KEY_FILE}")")"
  echo "provider-file $(sha256_of "$(R "${PROVIDER_FILE}")")"
}

detect_changes() {
  step "change detection" "remove ${INSTALL_STATE_FILE} to force a restart, then re-run"
  local state new old line component
  state="$(R "${INSTALL_STATE_FILE}")"
  new="$(fingerprint)"
  old="$(cat "${state}" 2>/dev/null || true)"
  if [[ -n "${DRY_RUN}" ]]; then
    predict_restart "${new}" "${old}"
    return
  fi
  if [[ -z "${old}" ]]; then
    RESTART_REASONS+=("first-install")
  else
    while IFS= read -r line; do
      component="${line%% *}"
      if ! grep -qxF "${line}" <<<"${old}"; then
        RESTART_REASONS+=("${component}")
      fi
    done <<<"${new}"
  fi
  if [[ "${new}" != "${old}" ]]; then
    local tmp="${state}.install-tmp.$$"
    (umask 077 && printf '%s\n' "${new}" >"${tmp}")
    chown_root "${tmp}"
    mv -f "${tmp}" "${state}"
  fi
  if ((${#RESTART_REASONS[@]})); then
    report "changed since the last install: ${RESTART_REASONS[*]}"
  else
    report "nothing the service depends on changed"
  fi
}

# A dry run writes nothing, so it compares what is on disk now (an edited env file, say) with the
# last run's record, and counts what the steps above would write as a change too.
predict_restart() {
  local new="$1" old="$2" line reasons=()
  if [[ -z "${old}" ]]; then
    reasons+=("first-install")
  else
    while IFS= read -r line; do
      grep -qxF "${line}" <<<"${old}" || reasons+=("${line%% *}")
    done <<<"${new}"
  fi
  ((${#CHANGES[@]})) && reasons+=("files this run would write")
  if ((${#reasons[@]})); then
    RESTART_REASONS=("${reasons[@]}")
    report "dry run: a restart would follow (changed: ${reasons[*]})"
  else
    report "dry run: nothing changed, no restart would follow"
  fi
}

service_is_active() { systemctl is-active --quiet "${SERVICE}"; }

wait_healthy() {
  local opsctl
  opsctl="$(R "${TOOLS_DIR}")/opsctl/bin/opsctl"
  if [[ -x "${opsctl}" ]] && "${opsctl}" health --help 2>/dev/null | grep -q -- '--wait'; then
    # Monitoring Plugins codes: 1 (WARNING) is "answers, but slowly", still healthy.
    local rc=0
    "${opsctl}" health --wait "${HEALTH_TIMEOUT}" >/dev/null 2>&1 || rc=$?
    ((rc <= 1))
    return
  fi
  "${SYSTEM_PYTHON}" -I - "http://${LISTEN_HOST}:${LISTEN_PORT}/health" "${HEALTH_TIMEOUT}" <<'EOF'
import json, sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200 and json.load(resp).get("status") == "ok":
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.5)
sys.exit(1)
EOF
}

start_service() {
  step "service" "see: journalctl -u ${SERVICE} -n 50 --no-pager; systemctl status ${SERVICE}"
  if [[ -n "${ROOT}" ]]; then
    SERVICE_STATE="staged under ${ROOT}: not started (--root never runs systemctl)"
    report "skipped under --root"
    return
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    if ((${#RESTART_REASONS[@]})); then
      SERVICE_STATE="dry run: would check the configuration (opsctl runtime check) and restart ${SERVICE} (changed: ${RESTART_REASONS[*]})"
    else
      SERVICE_STATE="dry run: would not restart ${SERVICE} (nothing changed)"
    fi
    report "${SERVICE_STATE#dry run: }"
    return
  fi
  if [[ -z "${HAS_SYSTEMD}" ]]; then
    SERVICE_STATE="NOT STARTED: systemd is not PID 1 here (container or CI?); on a systemd host run: systemctl daemon-reload && systemctl enable --now ${SERVICE}"
    report "systemd is not running here: installed, but could not start ${SERVICE}"
    return
  fi
  local unit_changed="" socket_changed="" reason
  for reason in "${RESTART_REASONS[@]}"; do
    [[ "${reason}" == unit || "${reason}" == socket || "${reason}" == drop-ins || "${reason}" == first-install ]] && unit_changed=1
    [[ "${reason}" == socket ]] && socket_changed=1
  done
  [[ -n "${unit_changed}" ]] && systemctl daemon-reload
  if ! systemctl is-enabled --quiet "${SERVICE}" 2>/dev/null || ! systemctl is-enabled --quiet "${SOCKET_UNIT}" 2>/dev/null; then
    systemctl enable --quiet "${SOCKET_UNIT}" "${SERVICE}"
    changed "enabled ${SOCKET_UNIT} and ${SERVICE} at boot"
  fi
  if [[ -n "${UPSTREAM_KEY_MISSING}" ]]; then
    SERVICE_STATE="NOT STARTED: no LiteLLM key in ${UPSTREAM_KEY_FILE}; write it (sudoedit ${UPSTREAM_KEY_FILE}; one line), then re-run install.sh"
    report "not started: ${UPSTREAM_KEY_FILE} is missing or empty"
    return
  fi
  if [[ -n "${SKIP_START}" ]]; then
    SERVICE_STATE="not (re)started (--no-start)${RESTART_REASONS[*]:+; pending changes: ${RESTART_REASONS[*]}}"
    report "skipped (--no-start)"
    return
  fi
  local action=""
  if ((${#RESTART_REASONS[@]})); then
    action="restarted (changed: ${RESTART_REASONS[*]})"
  elif ! service_is_active; then
    action="started (it was not running)"
  fi
  if [[ -z "${action}" ]]; then
    SERVICE_STATE="running, not restarted (nothing changed)"
    report "nothing changed: not restarted"
    return
  fi
  if ! configuration_accepted; then
    return
  fi
  report "${action%% *} ${SERVICE}; waiting up to ${HEALTH_TIMEOUT}s for /health"
  clear_start_limit
  hold_socket "${socket_changed}"
  # Type=notify: restart returns once the launcher reports READY=1, or fails (a refused config
  # exits 78 and is not retried), which needs no waiting for /health. The old process drains
  # its requests first while new connections wait in the socket's backlog.
  if ! systemctl restart "${SERVICE}"; then
    CHANGES+=("tried to ${action%% *} ${SERVICE}: it failed")
    SERVICE_STATE="${action%% *}, but FAILED TO START (NOT HEALTHY): journalctl -u ${SERVICE} -n 50 --no-pager"
    report "${SERVICE} failed to start"
    return
  fi
  if wait_healthy; then
    SERVICE_STATE="${action}; healthy at http://${LISTEN_HOST}:${LISTEN_PORT}/health"
    changed "${SERVICE} ${action}"
  else
    SERVICE_STATE="${action%% *}, but NOT HEALTHY after ${HEALTH_TIMEOUT}s: journalctl -u ${SERVICE} -n 50 --no-pager"
  fi
}

# systemd keeps a unit's first failure as its Result: a crash loop that ends at the start limit
# still says exit-code, and only the journal (or the socket's Result) tells the limit was hit.
start_limit_was_hit() {
  local unit="$1"
  [[ "$(systemctl show -p Result --value "${unit}" 2>/dev/null)" == *start-limit-hit ]] && return 0
  [[ "$(systemctl show -p ActiveState --value "${unit}" 2>/dev/null)" == failed ]] || return 1
  journalctl -u "${unit}" -n 20 -o cat --no-pager 2>/dev/null | grep -q 'Start request repeated too quickly'
}

# Operator restarts are not crashes: clear the start-rate counter so a busy day of changes never
# runs into StartLimitBurst (which fails the socket too). A unit that already hit it (a crash
# loop, or restarts by hand) is named, so the operator knows why it was down.
clear_start_limit() {
  local unit
  for unit in "${SERVICE}" "${SOCKET_UNIT}"; do
    if start_limit_was_hit "${unit}"; then
      changed "cleared ${unit}'s start-limit-hit (it had been refused further starts; see journalctl -u ${unit})"
    fi
  done
  systemctl reset-failed "${SERVICE}" "${SOCKET_UNIT}" >/dev/null 2>&1 || true
}

# The launcher's own checks (`opsctl runtime check`: --check in a transient unit with the
# installed unit's settings) on the configuration now on disk, before the running service is
# touched: a refusal leaves it serving the previous configuration.
configuration_accepted() {
  local opsctl out rc=0
  opsctl="$(R "${TOOLS_DIR}")/opsctl/bin/opsctl"
  out="$("${opsctl}" runtime check 2>&1)" || rc=$?
  if ((rc == 0)); then
    report "configuration accepted by the launcher's checks"
    return 0
  fi
  CONFIG_REFUSED=1
  SERVICE_STATE="NOT RESTARTED: the launcher would refuse the new configuration, so the service keeps running the previous one: ${out##*$'\n'} (fix it, check with: sudo opsctl lint, then re-run install.sh)"
  report "refused: ${out##*$'\n'}"
  return 1
}

# The socket must be systemd's before the service restarts: first install, or an install from
# before socket activation whose service still binds the port itself (stopped once, here).
# Restarting the socket refuses connections, so it happens only when its own file changed.
hold_socket() {
  local socket_changed="$1"
  if systemctl is-active --quiet "${SOCKET_UNIT}"; then
    if [[ -n "${socket_changed}" ]]; then
      systemctl restart "${SOCKET_UNIT}"
      changed "restarted ${SOCKET_UNIT} (its unit file changed: connections were refused for a moment)"
    fi
    return
  fi
  service_is_active && systemctl stop "${SERVICE}"
  systemctl start "${SOCKET_UNIT}"
  changed "started ${SOCKET_UNIT} (systemd holds ${LISTEN_HOST}:${LISTEN_PORT})"
}

print_summary() {
  local profile_shown="${PROFILE}" item
  echo
  echo "optillm-proxy install summary${DRY_RUN:+ (dry run: nothing was written)}"
  echo "  profile:   ${profile_shown} (runtime ${RUNTIME_NAME}, optillm ${OPTILLM_VERSION}; recorded in ${CURRENT_LINK}/${MANIFEST_REL})"
  if ((${#CHANGES[@]})); then
    echo "  changed:"
    for item in "${CHANGES[@]}"; do echo "    - ${item}"; done
  else
    if ((${#RESTART_REASONS[@]})); then
      echo "  changed:   nothing written by install.sh (changed since the last run: ${RESTART_REASONS[*]})"
    else
      echo "  changed:   nothing (no change; nothing restarted)"
    fi
  fi
  echo "  service:   ${SERVICE_STATE}"
  echo "  env file:  ${ENV_FILE} (PROXY_PLUGINS, PROXY_APPROACHES, request bounds; no secret; root 0600)"
  echo "  key file:  ${KEY_FILE} (the proxy key LiteLLM presents; root 0600; read with: sudo cat ${KEY_FILE})"
  echo "  upstream:  ${UPSTREAM_KEY_FILE} (the LiteLLM key the proxy presents; root 0600)"
  [[ -n "${ROOT}" ]] && echo "  staged at: ${ROOT}"
  for item in "${NOTES[@]}"; do echo "  note:      ${item}"; done
  echo "  next:      sudo opsctl health; sudo opsctl smoke --all; sudo opsctl lint"
  echo "             journalctl -u ${SERVICE} -f; after editing the env file: sudo ./install.sh (restarts once)"
  echo "  uninstall: sudo ./install.sh --uninstall (or ${UNINSTALL_SCRIPT}); --purge also removes ${CONF_DIR}"
}

exit_code() {
  if [[ -n "${DRY_RUN}" || -n "${ROOT}" ]]; then
    echo "${EXIT_OK}"
  elif [[ -z "${HAS_SYSTEMD}" ]]; then
    echo "${EXIT_NO_SYSTEMD}"
  elif [[ "${SERVICE_STATE}" == *"NOT HEALTHY"* ]]; then
    echo "${EXIT_UNHEALTHY}"
  elif [[ -n "${UPSTREAM_KEY_MISSING}" ]]; then
    echo "${EXIT_PREREQ}"
  elif [[ -n "${CONFIG_REFUSED}" ]]; then
    echo "${EXIT_CONFIG_REFUSED}"
  else
    echo "${EXIT_OK}"
  fi
}

# A re-run without --profile keeps the profile the host already runs, so that re-running the
# same command on a full host changes nothing instead of asking for an upgrade to lean.
keep_installed_profile() {
  step "profile" "give it explicitly: --profile lean|full"
  [[ -z "${PROFILE_GIVEN}" ]] || return 0
  local recorded
  recorded="$(sed -n 's/.*"profile": "\([a-z]*\)".*/\1/p' "${ROOT}${CURRENT_LINK}/${MANIFEST_REL}" 2>/dev/null || true)"
  case " ${PROFILES} " in
    *" ${recorded} "*) PROFILE="${recorded}" ;;
  esac
}

# --- upgrade and rollback: install.sh builds, opsctl runtime validates and switches -------------

# On a running installation another profile is an upgrade (validated, reversible): refused here,
# in a dry run too, so that it predicts the real run. A plain re-run keeps whatever runtime is
# current, also one an --upgrade switched to from another lock, and applies everything else (env
# file, keys, unit, launcher): the way to apply configuration changes on any runtime.
refuse_unvalidated_switch() {
  step "current runtime" "upgrade deliberately: sudo ./install.sh --upgrade [--profile ${PROFILE}]"
  [[ -z "${ROOT}" && -n "${HAS_SYSTEMD}" && -L "${CURRENT_LINK}" ]] || return 0
  local installed keep
  installed="$(readlink "${CURRENT_LINK}")"
  installed="${installed##*/}"
  [[ "${installed}" != "${RUNTIME_NAME}" ]] || return 0
  keep="$(installed_profile)"
  if [[ -n "${keep}" && "${keep}" != "${PROFILE}" ]]; then
    die "${EXIT_STEP_FAILED}" "this box runs the ${keep} profile (${installed}); --profile ${PROFILE} is a switch, which a plain run never makes. To switch (validated, reversible): sudo ./install.sh --upgrade --profile ${PROFILE}; to keep ${keep}: leave --profile out"
  fi
  NOTES+=("kept the current runtime ${installed}; ${LOCK_SHOWN} would give ${RUNTIME_NAME}: switch deliberately with sudo ./install.sh --upgrade")
  RUNTIME_NAME="${installed}"
  KEPT_RUNTIME=1
  report "keeping the current runtime ${installed} (${LOCK_SHOWN} differs: --upgrade switches)"
}

check_switch_prereqs() {
  step "check system" "run as root on the installed host: sudo ./install.sh --upgrade|--rollback"
  ((EUID == 0)) || die "${EXIT_PREREQ}" "must run as root: sudo ./install.sh ${UPGRADE:+--upgrade}${ROLLBACK:+--rollback}"
  [[ -d /run/systemd/system ]] ||
    die "${EXIT_NO_SYSTEMD}" "systemd is not PID 1 here: an upgrade validates and switches the running service, which needs it"
  [[ -L "${CURRENT_LINK}" && -x "${TOOLS_DIR}/opsctl/bin/opsctl" ]] ||
    die "${EXIT_PREREQ}" "no installation here (${CURRENT_LINK}, ${TOOLS_DIR}/opsctl): run sudo ./install.sh first"
  if [[ -n "${UPGRADE_LOCK}" && ! -f "${UPGRADE_LOCK}" ]]; then
    die "${EXIT_USAGE}" "no lock file at ${UPGRADE_LOCK}: give a hashed lock (see locks/ and how they are regenerated)"
  fi
}

# The profile recorded in the current runtime's manifest (empty if unreadable).
installed_profile() {
  sed -n 's/.*"profile": "\([a-z]*\)".*/\1/p' "${CURRENT_LINK}/${MANIFEST_REL}" 2>/dev/null || true
}

# Without --profile: a lock named <profile>.txt names its profile; any other lock keeps the
# profile the box runs.
pick_upgrade_profile() {
  step "profile" "give it explicitly: --profile lean|full"
  if [[ -n "${PROFILE_GIVEN}" ]]; then return; fi
  local named recorded
  named="$(basename "${UPGRADE_LOCK:-none}" .txt)"
  case " ${PROFILES} " in
    *" ${named} "*) PROFILE="${named}"; return ;;
  esac
  recorded="$(installed_profile)"
  case " ${PROFILES} " in
    *" ${recorded} "*) PROFILE="${recorded}" ;;
    *) die "${EXIT_USAGE}" "cannot read the current profile from ${CURRENT_LINK}/${MANIFEST_REL}: give --profile lean|full" ;;
  esac
}

# Hands over to opsctl (validation, switch, checks, switching back); its exit code is ours.
run_opsctl_runtime() {
  step "runtime $1" "read the line above; opsctl runtime --help explains each exit code"
  local rc=0
  "${TOOLS_DIR}/opsctl/bin/opsctl" runtime "$@" || rc=$?
  exit "${rc}"
}

upgrade_main() {
  check_switch_prereqs
  pick_upgrade_profile
  check_system
  install_debian_packages
  check_python
  bootstrap_uv
  build_runtime
  install_launcher
  link_runtimes_site_packages
  install_opsctl
  run_opsctl_runtime upgrade "${RUNTIME_NAME}"
}

rollback_main() {
  check_switch_prereqs
  run_opsctl_runtime rollback
}

main() {
  umask 022
  parse_args "$@"
  trap 'on_error $? $LINENO' ERR
  if [[ -n "${UPGRADE}" ]]; then
    upgrade_main
  fi
  if [[ -n "${ROLLBACK}" ]]; then
    rollback_main
  fi
  if [[ -n "${UNINSTALL}" ]]; then
    uninstall_main
    exit "${EXIT_OK}"
  fi
  keep_installed_profile
  check_system
  install_debian_packages
  check_python
  refuse_unvalidated_switch
  bootstrap_uv
  build_runtime
  install_launcher
  link_runtimes_site_packages
  switch_current
  install_opsctl
  create_service_user
  write_provider_file
  write_env_file
  write_upstream_key_file
  write_key_file
  install_unit
  write_uninstall_script
  detect_changes
  start_service
  print_summary
  exit "$(exit_code)"
}

# Sourcing (the tests call single functions) defines everything and runs nothing.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
