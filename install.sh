#!/usr/bin/env bash
# install.sh: install, re-run (idempotently) or uninstall the optillm-proxy service.
#
# A stock OptiLLM, from a hashed lock, runs as a systemd service on loopback in front of LiteLLM
# (addresses, paths and versions: launcher/optillm_proxy_launcher/layout.env). Run
# `./install.sh --help` for flags and exit codes. Re-running it is safe: it changes only what
# differs, never overwrites the operator's env or key file, and restarts the service at most once.
set -Eeuo pipefail
shopt -s inherit_errexit

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly REPO
# The deployed layout, ports and versions: the one file they are written in (Python reads it too).
# shellcheck source=launcher/optillm_proxy_launcher/layout.env
source "${REPO}/launcher/optillm_proxy_launcher/layout.env"

# --- Exit codes (also in --help) -------------------------------------------------------------
readonly EXIT_OK=0            # installed and healthy; or nothing to do; or staged (--root); or dry run
readonly EXIT_STEP_FAILED=1   # a step failed; the message names it and what to do
readonly EXIT_USAGE=2         # bad flag or value
readonly EXIT_NO_SYSTEMD=3    # installed everything, but systemd is not PID 1: service not started
readonly EXIT_UNHEALTHY=4     # the service was (re)started but failed to become ready
readonly EXIT_PREREQ=5        # prerequisite missing: not root, no lock for python3's version or the profile, unit absent, no LiteLLM key
readonly EXIT_CONFIG_REFUSED=6 # the launcher would refuse the new configuration: nothing restarted

readonly SYSTEM_PYTHON="/usr/bin/python3"
readonly DEBIAN_PACKAGES=(python3 python3-venv ca-certificates systemd)
# The service user's home has a root-owned .optillm/ for the provider file: without it, 0.3.12's
# proxy plugin loads a packaged example that routes to public clouds. .optillm/logs is the mount
# point for the unit's BindPaths= (the mcp plugin writes there); StateDirectory= makes the rest.
# install -d makes these: systemd-tmpfiles refuses a root-owned path below a user-owned one.
# The others: systemd/tmpfiles.conf.in.
readonly HOME_DIRECTORIES=(
  "${STATE_DIR}/.optillm 0755 root"
  "${STATE_DIR}/.optillm/logs 0755 root"
)

# Settings: flags override these environment variables (see --help).
PROFILE="${OPX_INSTALL_PROFILE:-${DEFAULT_PROFILE}}"
PROFILE_GIVEN="${OPX_INSTALL_PROFILE:+1}"
ROOT="${OPX_INSTALL_ROOT:-}"
SKIP_START="${OPX_INSTALL_SKIP_START:-}"
DRY_RUN=""
JSON=""
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
HEALTH=""
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
                  systemctl (used by the tests; DIR: letters, digits, ._/+-; not movable
                  afterwards). Env: OPX_INSTALL_ROOT
  --dry-run       print each step and what it would change; write nothing
  --no-start      install everything but do not (re)start the service. Env: OPX_INSTALL_SKIP_START=1
  --json          the summary as one JSON object on stdout (changed, restarted, runtime, profile,
                  lock, health, next); progress goes to stderr. With --upgrade/--rollback: opsctl
                  runtime's outcome (exit_code, changed, message, current, previous)
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
  UV_CACHE_DIR    uv's cache (honoured; uv hardlinks the runtime from it)

Layout: runtimes in ${RUNTIMES_DIR}/<version>-<profile>-<lock sha256[:12]>/, ${CURRENT_LINK}
(and ${PREVIOUS_LINK}) link to one; uv and opsctl in ${TOOLS_DIR}/; ${OPSCTL_LINK};
env file ${ENV_FILE}, key files ${KEY_FILE} and ${UPSTREAM_KEY_FILE} (root 0600); units ${UNIT_FILE}
and ${SOCKET_FILE}; the user and directories in ${SYSUSERS_FILE} and ${TMPFILES_FILE};
uninstall script ${UNINSTALL_SCRIPT}.

Exit codes:
  0  installed and healthy, nothing to do, staged with --root, or dry run
  1  a step failed (the message names the step and what to do)
  2  usage error (unknown flag, bad value)
  3  installed, but systemd is not PID 1 here: the service was not started
  4  the service was (re)started but did not become healthy (failed to report ready)
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

# --- helpers -----------------------------------------------------------------------------------

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

# The one place a dry run is told apart from a real one: `apply TODO DONE CMD...` runs CMD and
# records DONE as a change, or, in a dry run, runs nothing and records "would: TODO".
apply() {
  local todo="$1" done="$2"
  shift 2
  if [[ -n "${DRY_RUN}" ]]; then
    CHANGES+=("would: ${todo}")
    report "would ${todo}"
    return 0
  fi
  "$@"
  CHANGES+=("${done}")
  report "${done}"
}

# A deployed path, staged under --root when given.
R() { printf '%s%s' "${ROOT}" "$1"; }

real_install() { [[ -z "${ROOT}" && -z "${DRY_RUN}" ]]; }

# A repo template with each @NAME@ replaced by its value: layout.env's keys, ROOT and the exit
# codes (the tests render the provider template the same way).
render() {
  local text name names
  mapfile -t names < <(sed -n 's/^\([A-Z_]*\)=.*/\1/p' "${REPO}/launcher/optillm_proxy_launcher/layout.env")
  text="$(<"$1")"
  for name in "${names[@]}" ROOT EXIT_STEP_FAILED EXIT_USAGE EXIT_PREREQ; do
    text="${text//"@${name}@"/"${!name}"}"
  done
  printf '%s\n' "${text}"
}

sha256_of() {
  if [[ -e "$1" ]]; then
    sha256sum "$1" | cut -d' ' -f1
  else
    echo absent
  fi
}

# Mode, and owner when installing for real (staging under --root keeps the invoker's ownership).
mode_owner() {
  if [[ -z "${ROOT}" ]]; then stat -c '%a %U:%G' "$1"; else stat -c '%a' "$1"; fi
}

wanted() {
  local mode="$1" owner="$2"
  if [[ -z "${ROOT}" ]]; then echo "${mode#0} ${owner}:${owner}"; else echo "${mode#0}"; fi
}

# Predicates (no side effects) are kept apart from actions: bash ignores errexit inside a
# function used as an `if` condition, so an action must never be one.
file_differs() {
  local src="$1" dest="$2" mode="$3"
  ! { [[ -f "${dest}" && ! -L "${dest}" ]] && cmp -s "${src}" "${dest}" && [[ "$(mode_owner "${dest}")" == "$(wanted "${mode}" root)" ]]; }
}

dir_differs() {
  local dir="$1" mode="$2" owner="$3"
  ! { [[ -d "${dir}" && ! -L "${dir}" ]] && [[ "$(mode_owner "${dir}")" == "$(wanted "${mode}" "${owner}")" ]]; }
}

# SRC as DEST with MODE, root-owned when installing for real.
put_file() {
  local src="$1" dest="$2" mode="$3"
  if [[ -n "${ROOT}" ]]; then
    install -C -D -m "${mode}" "${src}" "${dest}"
  else
    install -C -D -m "${mode}" -o root -g root "${src}" "${dest}"
  fi
}

# Copies SRC to DEST when content, mode or owner differ (install -C would too, but cannot say
# whether it did: the comparison here is what the change report rests on).
sync_file() {
  local src="$1" dest="$2" mode="$3" shown="$4"
  if file_differs "${src}" "$(R "${dest}")" "${mode}"; then
    apply "install ${shown}" "installed ${shown}" put_file "${src}" "$(R "${dest}")" "${mode}"
  else
    report "${shown} unchanged"
  fi
}

link_differs() { ! { [[ -L "$2" ]] && [[ "$(readlink "$2")" == "$1" ]]; }; }

# Point LINK at TARGET by atomic rename (relative targets keep a --root staging self-contained).
make_link() {
  local target="$1" link="$2"
  mkdir -p "$(dirname "${link}")"
  ln -sfn "${target}" "${link}.install-tmp.$$"
  if real_install; then chown -h root:root "${link}.install-tmp.$$"; fi
  mv -fT "${link}.install-tmp.$$" "${link}"
}

# Builds a directory under a temporary name with BUILDER DIR, then renames it into place, so a
# half-built runtime or tool is never what a path points at.
build_dir() {
  local dest="$1" builder="$2"
  local tmp
  tmp="$(dirname "${dest}")/.$(basename "${dest}").partial"
  mkdir -p "$(dirname "${dest}")"
  rm -rf "${tmp}"
  "${builder}" "${tmp}"
  chmod -R go-w "${tmp}"
  if real_install; then chown -R root:root "${tmp}"; fi
  rm -rf "${dest}"
  mv -T "${tmp}" "${dest}"
}

# --system-certs: the host's trust store (a company CA in it works as for curl and apt), not the
# Mozilla roots uv bundles.
uv_cmd() { "${UV}" --no-config --system-certs -q "$@"; }

is_profile() { [[ " ${PROFILES} " == *" $1 "* && -n "$1" ]]; }

# The profile recorded in the current runtime's manifest (empty if unreadable).
recorded_profile() {
  sed -n 's/.*"profile": "\([a-z]*\)".*/\1/p' "$(R "${CURRENT_LINK}")/${MANIFEST_REL}" 2>/dev/null || true
}

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
      --json) JSON=1; shift ;;
      --no-start) SKIP_START=1; shift ;;
      --uninstall) UNINSTALL=1; shift ;;
      --purge) PURGE=1; shift ;;
      -h | --help) usage; exit "${EXIT_OK}" ;;
      *) die "${EXIT_USAGE}" "unknown argument '$1' (see ./install.sh --help)" ;;
    esac
  done
  is_profile "${PROFILE}" || die "${EXIT_USAGE}" "unknown profile '${PROFILE}': use --profile lean or --profile full"
  if [[ -n "${PURGE}" && -z "${UNINSTALL}" ]]; then
    die "${EXIT_USAGE}" "--purge only goes with --uninstall"
  fi
  [[ -z "${JSON}" || -z "${UNINSTALL}" ]] || die "${EXIT_USAGE}" "--json goes with an install, --upgrade or --rollback run, not with --uninstall"
  if [[ -n "${UPGRADE}${ROLLBACK}" ]]; then
    [[ -n "${UPGRADE}" && -n "${ROLLBACK}" ]] && die "${EXIT_USAGE}" "--upgrade and --rollback are two separate runs"
    [[ -n "${ROOT}${DRY_RUN}${UNINSTALL}${SKIP_START}" ]] &&
      die "${EXIT_USAGE}" "--upgrade/--rollback start and switch the real service: they do not combine with --root, --dry-run, --no-start or --uninstall"
    if [[ -n "${UPGRADE_LOCK}" && "${UPGRADE_LOCK}" != /* ]]; then UPGRADE_LOCK="${PWD}/${UPGRADE_LOCK}"; fi
  fi
  if [[ -n "${ROOT}" ]]; then
    [[ "${ROOT}" == /* ]] || ROOT="${PWD}/${ROOT}"
    ROOT="${ROOT%/}"
    # The staged opsctl's #! line names its python under ROOT (the kernel splits it at whitespace
    # and reads 255 bytes at most), and its sys.path line quotes it: a staging is not movable.
    if [[ ! "${ROOT}" =~ ^[A-Za-z0-9._/+-]+$ || ${#ROOT} -gt 160 ]]; then
      die "${EXIT_USAGE}" "--root ${ROOT@Q}: stage under a path of letters, digits and ._/+- only, at most 160 characters long (opsctl's #! line names its python there)"
    fi
  fi
}

# --- install steps, in the order they run (RUNBOOK.md, "Messages: install.sh") --------------------

# A re-run without --profile keeps the profile the host already runs, so that re-running the
# same command on a full host changes nothing instead of asking for an upgrade to lean. For an
# upgrade without --profile, a lock named <profile>.txt names its profile; any other lock keeps
# the profile the box runs.
choose_profile() {
  step "profile" "give it explicitly: --profile lean|full"
  [[ -z "${PROFILE_GIVEN}" ]] || return 0
  local named recorded
  named="$(basename "${UPGRADE_LOCK:-none}" .txt)"
  if [[ -n "${UPGRADE}" ]] && is_profile "${named}"; then
    PROFILE="${named}"
    return
  fi
  recorded="$(recorded_profile)"
  if is_profile "${recorded}"; then
    PROFILE="${recorded}"
  elif [[ -n "${UPGRADE}" ]]; then
    die "${EXIT_USAGE}" "cannot read the current profile from ${CURRENT_LINK}/${MANIFEST_REL}: give --profile lean|full"
  fi
}

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

# On a running installation another profile is an upgrade (validated, reversible): refused here,
# in a dry run too, so that it predicts the real run. A plain re-run keeps whatever runtime is
# current, also one an --upgrade switched to from another lock, and applies everything else (env
# file, keys, unit, launcher): the way to apply configuration changes on any runtime.
keep_current_runtime() {
  step "runtime choice" "upgrade deliberately: sudo ./install.sh --upgrade [--profile ${PROFILE}]"
  [[ -z "${ROOT}" && -n "${HAS_SYSTEMD}" && -L "${CURRENT_LINK}" ]] || return 0
  local installed keep
  installed="$(readlink "${CURRENT_LINK}")"
  installed="${installed##*/}"
  [[ "${installed}" != "${RUNTIME_NAME}" ]] || return 0
  keep="$(recorded_profile)"
  if [[ -n "${keep}" && "${keep}" != "${PROFILE}" ]]; then
    die "${EXIT_STEP_FAILED}" "this box runs the ${keep} profile (${installed}); --profile ${PROFILE} is a switch, which a plain run never makes. To switch (validated, reversible): sudo ./install.sh --upgrade --profile ${PROFILE}; to keep ${keep}: leave --profile out"
  fi
  NOTES+=("kept the current runtime ${installed}; ${LOCK_SHOWN} would give ${RUNTIME_NAME}: switch deliberately with sudo ./install.sh --upgrade")
  RUNTIME_NAME="${installed}"
  KEPT_RUNTIME=1
  report "keeping the current runtime ${installed} (${LOCK_SHOWN} differs: --upgrade switches)"
}

install_debian_packages() {
  step "debian packages" "install them yourself (apt-get install ${DEBIAN_PACKAGES[*]}), then re-run"
  local missing=() pkg
  if ! command -v dpkg-query >/dev/null; then
    [[ -x "${SYSTEM_PYTHON}" ]] ||
      die "${EXIT_PREREQ}" "${SYSTEM_PYTHON} is missing and this is not a Debian/Ubuntu system: install Python $(supported_pythons) with venv support"
    report "not Debian/Ubuntu: skipped (needs ${SYSTEM_PYTHON} $(supported_pythons) with venv, and systemd)"
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

# The user comes from systemd-sysusers and the directories (mode, owner) from systemd-tmpfiles,
# each from a file rendered from systemd/*.conf.in; systemd re-applies both at every boot. Staged
# under --root: the two files are written, the directories made with their modes, no user.
create_service_user() {
  step "service user" "check ${SYSUSERS_FILE}, then: systemd-sysusers ${SYSUSERS_FILE}"
  local conf
  conf="$(mktemp)"
  render "${REPO}/systemd/sysusers.conf.in" >"${conf}"
  sync_file "${conf}" "${SYSUSERS_FILE}" 0644 "${SYSUSERS_FILE}"
  rm -f "${conf}"
  if [[ -n "${ROOT}" ]]; then
    report "skipped under --root (would create system user ${SERVICE_USER})"
  elif getent passwd "${SERVICE_USER}" >/dev/null; then
    report "${SERVICE_USER} exists"
  else
    apply "create system user ${SERVICE_USER}" "created system user ${SERVICE_USER}" systemd-sysusers "${SYSUSERS_FILE}"
  fi
}

# "path mode owner" of each directory: the `d` lines of tmpfiles.d file $1, then HOME_DIRECTORIES.
directories() {
  local type dir mode owner rest
  while read -r type dir mode owner rest; do
    [[ "${type}" != d ]] || echo "${dir} ${mode} ${owner}"
  done <"$1"
  printf '%s\n' "${HOME_DIRECTORIES[@]}"
}

create_directories() {
  step "directories" "check ${TMPFILES_FILE} and the paths it names, then: systemd-tmpfiles --create ${TMPFILES_FILE}"
  local conf dir mode owner differ=()
  conf="$(mktemp)"
  render "${REPO}/systemd/tmpfiles.conf.in" >"${conf}"
  sync_file "${conf}" "${TMPFILES_FILE}" 0644 "${TMPFILES_FILE}"
  while read -r dir mode owner; do
    dir_differs "$(R "${dir}")" "${mode}" "${owner}" && differ+=("${dir}")
  done < <(directories "${conf}")
  rm -f "${conf}"
  if ((${#differ[@]})); then
    apply "make ${differ[*]}" "made ${differ[*]}" make_directories
  else
    report "unchanged"
  fi
}

# systemd-tmpfiles, then install -d for HOME_DIRECTORIES; staged under --root, install -d (no
# owner) for all of them.
make_directories() {
  local entry dir mode owner
  if [[ -z "${ROOT}" ]]; then
    systemd-tmpfiles --create "${TMPFILES_FILE}"
    for entry in "${HOME_DIRECTORIES[@]}"; do
      read -r dir mode owner <<<"${entry}"
      install -d -m "${mode}" -o "${owner}" -g "${owner}" "${dir}"
    done
    return
  fi
  while read -r dir mode owner; do
    install -d -m "${mode}" "$(R "${dir}")"
  done < <(directories "$(R "${TMPFILES_FILE}")")
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

runtime_is_complete() {
  local dir="$1"
  [[ -f "${dir}/${MANIFEST_REL}" ]] && grep -q "\"lock_sha256\": \"${LOCK_SHA}\"" "${dir}/${MANIFEST_REL}"
}

# The venv is relocatable (uv writes relative script launchers), so it is built under a
# temporary name and renamed.
build_runtime() {
  step "runtime" "check the uv cache/index access and disk space (full needs ~9 GB), then re-run"
  local dest
  dest="$(R "${RUNTIMES_DIR}")/${RUNTIME_NAME}"
  if [[ -n "${KEPT_RUNTIME}" ]]; then
    report "${RUNTIME_NAME} is current and kept (built from another lock)"
  elif runtime_is_complete "${dest}"; then
    report "${RUNTIME_NAME} already built (lock unchanged)"
  else
    [[ -n "${DRY_RUN}" ]] || report "building ${RUNTIME_NAME} from ${LOCK_SHOWN} (hashes required, bytecode compiled)"
    apply "build ${RUNTIME_NAME} from ${LOCK_SHOWN}" "built runtime ${RUNTIME_NAME}" build_dir "${dest}" build_venv
  fi
}

build_venv() {
  local tmp="$1" got
  mkdir -p "$(dirname "${tmp}")"
  uv_cmd venv --relocatable --python "${SYSTEM_PYTHON}" "${tmp}"
  uv_cmd pip sync --python "${tmp}/bin/python" --require-hashes --compile-bytecode "${LOCK_FILE}"
  got="$("${tmp}/bin/python" -I -c 'import importlib.metadata as m; print(m.version("optillm"))')"
  [[ "${got}" == "${OPTILLM_VERSION}" ]] ||
    die "${EXIT_STEP_FAILED}" "${LOCK_SHOWN} installed optillm ${got}, expected ${OPTILLM_VERSION}: fix the lock"
  install -D -m 0644 "${LOCK_FILE}" "${tmp}/libexec/${PROFILE}.txt"
  link_site_packages "${tmp}"
  write_manifest "${tmp}"
}

# The manifest's format: launcher/optillm_proxy_launcher/manifest.py, its one reader.
write_manifest() {
  local dir="$1" python
  python="$("${dir}/bin/python" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  printf '{"profile": "%s", "optillm_version": "%s", "lock_sha256": "%s", "lock_file": "libexec/%s.txt", "lock_source": "%s", "python": "%s"}\n' \
    "${PROFILE}" "${OPTILLM_VERSION}" "${LOCK_SHA}" "${PROFILE}" "${LOCK_SHOWN}" "${python}" >"${dir}/${MANIFEST_REL}"
}

# <runtime>/site-packages -> lib/python3.X/site-packages: the unit names paths inside the runtime
# (spl's data, BindPaths=) without naming the Python version.
link_site_packages() {
  local runtime="$1" found
  found="$(cd "${runtime}" && compgen -G 'lib/python3.*/site-packages' | head -n1)" || return 0
  [[ -n "${found}" ]] || return 0
  link_differs "${found}" "${runtime}/${SITE_PACKAGES_REL}" || return 0
  ln -sfn "${found}" "${runtime}/${SITE_PACKAGES_REL}"
}

# Runtimes built by an earlier install.sh lack the link; current, previous or a rollback target
# must have it before the unit that names it starts.
link_runtimes_site_packages() {
  step "runtime links" "check ${RUNTIMES_DIR} by hand, then re-run"
  local runtime found missing=()
  for runtime in "$(R "${RUNTIMES_DIR}")"/*/; do
    runtime="${runtime%/}"
    [[ -f "${runtime}/${MANIFEST_REL}" ]] || continue
    found="$(cd "${runtime}" && compgen -G 'lib/python3.*/site-packages' | head -n1)" || continue
    link_differs "${found}" "${runtime}/${SITE_PACKAGES_REL}" && missing+=("${runtime}")
  done
  if ((${#missing[@]})); then
    apply "link ${SITE_PACKAGES_REL} in ${missing[*]##*/}" "linked ${SITE_PACKAGES_REL} in ${missing[*]##*/}" \
      link_each_site_packages "${missing[@]}"
  else
    report "unchanged"
  fi
}

link_each_site_packages() {
  local runtime
  for runtime in "$@"; do link_site_packages "${runtime}"; done
}

# The repo's launcher/ files, as install.sh and opsctl ship them (entry script, plugin table,
# the package with its layout.env).
launcher_files() {
  (cd "${REPO}/launcher" && find . -type f \( -name '*.py' -o -name '*.json' -o -name '*.env' \) \
    -not -path '*/__pycache__/*' | sed 's|^\./||' | LC_ALL=C sort)
}

# Copies launcher/ into <runtime>/libexec, keeping subdirectories; an existing runtime gets them
# updated. The package's bytecode is compiled here: the service cannot write the runtime.
install_launcher() {
  step "launcher" "check the repo's launcher/ directory, then re-run"
  local libexec rel updated=()
  libexec="$(R "${RUNTIMES_DIR}")/${RUNTIME_NAME}/libexec"
  while IFS= read -r rel; do
    file_differs "${REPO}/launcher/${rel}" "${libexec}/${rel}" 0644 && updated+=("${rel}")
  done < <(launcher_files)
  if ((${#updated[@]})); then
    apply "install launcher files in ${RUNTIME_NAME}/libexec: ${updated[*]}" \
      "launcher files in ${RUNTIME_NAME}/libexec: ${updated[*]}" copy_launcher "${libexec}" "${updated[@]}"
  else
    report "unchanged"
  fi
}

copy_launcher() {
  local libexec="$1" rel
  shift
  for rel in "$@"; do put_file "${REPO}/launcher/${rel}" "${libexec}/${rel}" 0644; done
  "${libexec}/../bin/python" -I -m compileall -q "${libexec}" >/dev/null
}

switch_current() {
  step "current runtime" "check ${CURRENT_LINK} by hand (ls -l), then re-run"
  local current previous=""
  current="$(R "${CURRENT_LINK}")"
  [[ -L "${current}" ]] && previous="$(readlink "${current}")"
  if [[ "${previous}" == "runtimes/${RUNTIME_NAME}" ]]; then
    report "current -> runtimes/${RUNTIME_NAME} (unchanged)"
  elif [[ -n "${previous}" ]]; then
    apply "point current at ${RUNTIME_NAME}" \
      "current runtime ${previous#runtimes/} -> ${RUNTIME_NAME} (previous kept for rollback)" link_runtime "${previous}"
  else
    apply "point current at runtimes/${RUNTIME_NAME}" "current -> runtimes/${RUNTIME_NAME}" link_runtime ""
  fi
}

link_runtime() {
  [[ -z "$1" ]] || make_link "$1" "$(R "${PREVIOUS_LINK}")"
  make_link "runtimes/${RUNTIME_NAME}" "$(R "${CURRENT_LINK}")"
}

# What opsctl's venv is built from: its lock, its sources, the interpreter its bin/python links to
# (another Python has another site-packages) and the script naming both. Not where it lives: a
# --root staging is not movable (its opsctl names its python there).
opsctl_build_id() {
  {
    readlink -f "${SYSTEM_PYTHON}"
    declare -f write_opsctl_script
    sha256_of "${REPO}/locks/opsctl.txt"
    (cd "${REPO}" && { find ops -name '*.py' -type f; launcher_files | sed -n 's|^optillm_proxy_launcher/|launcher/&|p'; } |
      LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

# opsctl for the box: its locked dependencies plus a copy of ops/ and the launcher package (no
# build backend needed), in its own venv under tools/, linked from OPSCTL_LINK.
install_opsctl() {
  step "opsctl" "check locks/opsctl.txt and the package index access, then re-run"
  local venv link_target
  venv="$(R "${TOOLS_DIR}")/opsctl"
  link_target="../../../${TOOLS_DIR#/}/opsctl/bin/opsctl"
  if [[ "$(cat "${venv}/.build-id" 2>/dev/null || true)" != "$(opsctl_build_id)" ]]; then
    apply "install opsctl into ${TOOLS_DIR}/opsctl" "installed opsctl into ${TOOLS_DIR}/opsctl" build_dir "${venv}" build_opsctl
  else
    report "${TOOLS_DIR}/opsctl unchanged"
  fi
  if link_differs "${link_target}" "$(R "${OPSCTL_LINK}")"; then
    apply "link ${OPSCTL_LINK} -> ${TOOLS_DIR}/opsctl/bin/opsctl" "linked ${OPSCTL_LINK} -> ${TOOLS_DIR}/opsctl/bin/opsctl" \
      make_link "${link_target}" "$(R "${OPSCTL_LINK}")"
  fi
}

build_opsctl() {
  local tmp="$1" site
  uv_cmd venv --relocatable --python "${SYSTEM_PYTHON}" "${tmp}"
  uv_cmd pip sync --python "${tmp}/bin/python" --require-hashes --compile-bytecode "${REPO}/locks/opsctl.txt"
  site="$("${tmp}/bin/python" -I -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  (cd "${REPO}" && find ops -name '*.py' -type f -print0 | xargs -0 cp --parents -t "${site}")
  # lint calls the launcher's own configuration checks; ops.from_launcher.layout reads its layout.env.
  (cd "${REPO}/launcher" && launcher_files | grep '^optillm_proxy_launcher/' | xargs cp --parents -t "${site}")
  "${tmp}/bin/python" -I -m compileall -q "${site}/ops" "${site}/optillm_proxy_launcher" >/dev/null
  write_opsctl_script "${tmp}/bin/opsctl" "$(R "${TOOLS_DIR}")/opsctl" "${site#"${tmp}"/}"
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

# The provider file lives in the service user's home (see HOME_DIRECTORIES). Written only if absent.
write_provider_file() {
  step "provider file" "check ${PROVIDER_FILE} by hand, then re-run"
  local dest
  dest="$(R "${PROVIDER_FILE}")"
  if [[ -e "${dest}" ]]; then
    grep -q "base_url: ${UPSTREAM_URL}" "${dest}" ||
      NOTES+=("${PROVIDER_FILE} exists and does not point at ${UPSTREAM_URL}: left as is (yours)")
    report "${PROVIDER_FILE} exists"
    return
  fi
  apply "write ${PROVIDER_FILE} (LiteLLM on loopback only)" "wrote ${PROVIDER_FILE}" write_provider "${dest}"
}

# etc/optillm-proxy/proxy_config.yaml.in with this install's values (the tests render the same file).
write_provider() {
  local tmp
  tmp="$(mktemp)"
  render "${REPO}/etc/optillm-proxy/proxy_config.yaml.in" >"${tmp}"
  put_file "${tmp}" "$1" 0644
  rm -f "${tmp}"
}

write_env_file() {
  step "env file" "check ${CONF_DIR} by hand (it must be a directory), then re-run"
  local dest
  dest="$(R "${ENV_FILE}")"
  if [[ -e "${dest}" ]]; then
    tighten_mode "${dest}" "${ENV_FILE}"
    report "${ENV_FILE} exists: kept as is"
  else
    apply "write ${ENV_FILE} from etc/optillm-proxy/env.example" "wrote ${ENV_FILE} from env.example" \
      put_file "${REPO}/etc/optillm-proxy/env.example" "${dest}" 0600
  fi
}

# Secrets are never group/world readable: an operator's file keeps its content, not a loose mode.
tighten_mode() {
  local path="$1" shown="$2"
  [[ "$(stat -c '%a' "${path}")" == 600 ]] || apply "set the mode of ${shown} to 0600" "mode of ${shown} set to 0600" chmod 0600 "${path}"
}

# ops/runtime/keys.py writes both key files (opsctl key rotate writes the proxy key the same way), from
# opsctl's venv, which the "opsctl" step installed.
keys_tool() { "$(R "${TOOLS_DIR}")/opsctl/bin/python" -I -m ops.runtime.keys "$@"; }

# The LiteLLM key is a credential of its own (LoadCredential=upstream-key), never in the env file.
# An env file from an earlier install that still holds OPENAI_API_KEY= is migrated: the value goes
# into the key file and each such line becomes a comment (ops/runtime/keys.py: the value never passes argv,
# the environment or this script's output).
write_upstream_key_file() {
  step "upstream key" "check ${UPSTREAM_KEY_FILE} and the OPENAI_API_KEY lines of ${ENV_FILE} by hand, then re-run"
  local dest env outcome="" env_has_key=""
  dest="$(R "${UPSTREAM_KEY_FILE}")"
  env="$(R "${ENV_FILE}")"
  [[ ! -e "${dest}" ]] || tighten_mode "${dest}" "${UPSTREAM_KEY_FILE}"
  if [[ -f "${env}" ]] && grep -qE '^[[:space:]]*OPENAI_API_KEY=' "${env}"; then env_has_key=1; fi
  if [[ -n "${DRY_RUN}" ]]; then
    if [[ -n "${env_has_key}" ]]; then
      apply "move OPENAI_API_KEY from ${ENV_FILE} into ${UPSTREAM_KEY_FILE}" "" true
    elif [[ ! -s "${dest}" ]]; then
      report "would need ${UPSTREAM_KEY_FILE}: the service is not started without it"
    fi
    return
  fi
  [[ -z "${env_has_key}" ]] || outcome="$(keys_tool migrate "${env}" "${dest}" "${UPSTREAM_KEY_FILE}")"
  case "${outcome}" in
    moved) CHANGES+=("moved OPENAI_API_KEY from ${ENV_FILE} into ${UPSTREAM_KEY_FILE} (the env file holds no secret now)") ;;
    dropped) CHANGES+=("removed the OPENAI_API_KEY lines from ${ENV_FILE} (${UPSTREAM_KEY_FILE} is the key)") ;;
    conflict)
      NOTES+=("${ENV_FILE} has an OPENAI_API_KEY different from ${UPSTREAM_KEY_FILE}: keep the right key in ${UPSTREAM_KEY_FILE} and delete the line (the launcher refuses to start while it is there)")
      ;;
    *) ;;
  esac
  if [[ ! -e "${dest}" ]]; then
    # Empty and 0600 already, so that `sudoedit` fills a file nobody else could ever read.
    (umask 077 && : >"${dest}")
    CHANGES+=("created ${UPSTREAM_KEY_FILE} (empty, mode 0600) for the LiteLLM key")
  fi
  if real_install; then chown root:root "${dest}"; fi
  if [[ -s "${dest}" ]]; then
    report "${UPSTREAM_KEY_FILE} (mode 0600)${outcome:+: ${outcome} from ${ENV_FILE}}"
  else
    UPSTREAM_KEY_MISSING=1
    NOTES+=("no LiteLLM key: write it into ${UPSTREAM_KEY_FILE} (sudoedit ${UPSTREAM_KEY_FILE}; one line: a LiteLLM virtual key limited to ${BASE_MODEL}), then re-run install.sh")
    report "${UPSTREAM_KEY_FILE} is missing or empty: the service will not be started"
  fi
}

write_key_file() {
  step "key file" "check ${KEY_FILE} by hand (remove a broken one to regenerate), then re-run"
  local dest
  dest="$(R "${KEY_FILE}")"
  if [[ ! -e "${dest}" ]]; then
    apply "generate the proxy key into ${KEY_FILE}" "generated the proxy key into ${KEY_FILE}" keys_tool generate "${dest}"
    if real_install; then chown root:root "${dest}"; fi
    return
  fi
  tighten_mode "${dest}" "${KEY_FILE}"
  if [[ "$(head -c 3 "${dest}")" == "sk-" ]]; then
    NOTES+=("${KEY_FILE} starts with 'sk-': optillm ${OPTILLM_VERSION} forwards such bearers upstream; replace it (delete it and re-run to generate one)")
  fi
  report "${KEY_FILE} exists: kept as is"
}

# The service and its socket, from systemd/ in the repo.
install_unit() {
  step "unit" "check systemd/${SERVICE}.service and .socket in the repo (systemd-analyze verify), then re-run"
  local dest src
  for dest in "${UNIT_FILE}" "${SOCKET_FILE}"; do
    src="${REPO}/systemd/$(basename "${dest}")"
    if [[ -f "${src}" ]]; then
      sync_file "${src}" "${dest}" 0644 "${dest}"
    elif real_install; then
      die "${EXIT_PREREQ}" "systemd/$(basename "${dest}") is missing from this checkout: update the checkout"
    else
      warn "systemd/$(basename "${dest}") is missing from this checkout: not staged"
      NOTES+=("systemd/$(basename "${dest}") was missing: not installed")
    fi
  done
}

# --- change detection and (re)start ------------------------------------------------------------

# ops/runtime/install_state.py compares what the service depends on with the record of the last run (opsctl
# records after its own restarts too) and, unless a dry run, records the host; it prints what
# changed, one component a line. From opsctl's venv, which a dry run on a new host lacks: nothing
# is recorded there either.
detect_changes() {
  step "change detection" "remove ${INSTALL_STATE_FILE} to force a restart, then re-run"
  local python changed args=(changes --record)
  python="$(R "${TOOLS_DIR}")/opsctl/bin/python"
  [[ -z "${DRY_RUN}" ]] || args=(changes)
  if [[ -x "${python}" ]]; then
    changed="$("${python}" -I -m ops.runtime.install_state "${args[@]}" "${ROOT:-/}")"
  else
    changed="first-install"
  fi
  [[ -z "${changed}" ]] || mapfile -t RESTART_REASONS <<<"${changed}"
  if [[ -n "${DRY_RUN}" ]]; then
    ((${#CHANGES[@]})) && RESTART_REASONS+=("files this run would write")
    if ((${#RESTART_REASONS[@]})); then
      report "dry run: a restart would follow (changed: ${RESTART_REASONS[*]})"
    else
      report "dry run: nothing changed, no restart would follow"
    fi
  elif ((${#RESTART_REASONS[@]})); then
    report "changed since the last install: ${RESTART_REASONS[*]}"
  else
    report "nothing the service depends on changed"
  fi
}

service_is_active() { systemctl is-active --quiet "${SERVICE}"; }

# The service's outcome: HEALTH for --json (staged, dry-run, not-started, running: not restarted,
# healthy or unhealthy: (re)started by this run, refused: kept on the previous configuration).
service_is() {
  HEALTH="$1"
  SERVICE_STATE="$2"
}

start_service() {
  step "service" "see: journalctl -u ${SERVICE} -n 50 --no-pager; systemctl status ${SERVICE}"
  if [[ -n "${ROOT}" ]]; then
    service_is staged "staged under ${ROOT}: not started (--root never runs systemctl)"
    report "skipped under --root"
    return
  fi
  if [[ -n "${DRY_RUN}" ]]; then
    if ((${#RESTART_REASONS[@]})); then
      service_is dry-run "dry run: would check the configuration (opsctl runtime check) and restart ${SERVICE} (changed: ${RESTART_REASONS[*]})"
    else
      service_is dry-run "dry run: would not restart ${SERVICE} (nothing changed)"
    fi
    report "${SERVICE_STATE#dry run: }"
    return
  fi
  if [[ -z "${HAS_SYSTEMD}" ]]; then
    service_is not-started "NOT STARTED: systemd is not PID 1 here (container or CI?); on a systemd host run: systemctl daemon-reload && systemctl enable --now ${SERVICE}"
    report "systemd is not running here: installed, but could not start ${SERVICE}"
    return
  fi
  local reasons=" ${RESTART_REASONS[*]} "
  [[ "${reasons}" =~ \ (unit|socket|drop-ins|first-install)\  ]] && systemctl daemon-reload
  if ! systemctl is-enabled --quiet "${SERVICE}" 2>/dev/null || ! systemctl is-enabled --quiet "${SOCKET_UNIT}" 2>/dev/null; then
    apply "enable ${SOCKET_UNIT} and ${SERVICE} at boot" "enabled ${SOCKET_UNIT} and ${SERVICE} at boot" \
      systemctl enable --quiet "${SOCKET_UNIT}" "${SERVICE}"
  fi
  if [[ -n "${UPSTREAM_KEY_MISSING}" ]]; then
    service_is not-started "NOT STARTED: no LiteLLM key in ${UPSTREAM_KEY_FILE}; write it (sudoedit ${UPSTREAM_KEY_FILE}; one line: a LiteLLM virtual key limited to ${BASE_MODEL}), then re-run install.sh"
    report "not started: ${UPSTREAM_KEY_FILE} is missing or empty"
    return
  fi
  if [[ -n "${SKIP_START}" ]]; then
    service_is not-started "not (re)started (--no-start)${RESTART_REASONS[*]:+; pending changes: ${RESTART_REASONS[*]}}"
    report "skipped (--no-start)"
    return
  fi
  local action=""
  if ((${#RESTART_REASONS[@]})); then
    action="restarted (changed: ${RESTART_REASONS[*]})"
  elif ! service_is_active; then
    action="started (it was not running)"
  else
    service_is running "running, not restarted (nothing changed)"
    report "nothing changed: not restarted"
    return
  fi
  configuration_accepted || return 0
  report "${action%% *} ${SERVICE}; systemctl returns once it reports ready (or fails)"
  clear_start_limit
  hold_socket "${reasons}"
  local applied how rc=0
  applied="$(apply_change)" || rc=$?
  how="${applied%%$'\n'*}"
  [[ "${applied}" == *$'\n'* ]] && report "${applied#*$'\n'}"
  if [[ "${how}" == reloaded ]]; then
    action="reloaded (changed: ${RESTART_REASONS[*]})"
  fi
  if ((rc == 0)); then
    service_is healthy "${action}; healthy at http://${LISTEN_HOST}:${LISTEN_PORT}/health"
    CHANGES+=("${SERVICE} ${action}")
  elif [[ "${how}" == reloaded ]]; then
    service_is refused "NOT RELOADED: the running launcher refused the new configuration and keeps serving the previous one: ${applied#*$'\n'} (fix it, check with: sudo opsctl lint, then re-run install.sh)"
    CHANGES+=("tried to reload ${SERVICE}: refused")
  else
    CHANGES+=("tried to ${action%% *} ${SERVICE}: it failed")
    service_is unhealthy "${action%% *}, but FAILED TO START (NOT HEALTHY): journalctl -u ${SERVICE} -n 50 --no-pager"
    report "${SERVICE} failed to start"
  fi
}

# ops/runtime/service.py decides and does it: a reload when every change is one a new launcher
# applies (env file, keys, provider file) and the service runs (a new launcher takes the socket
# over, the old one drains: nothing waits), else a restart (Type=notify: it returns once the
# service serves, or fails; the old process drains while new connections wait in the backlog).
# Prints `reloaded` or `restarted`, then why a reload was refused or became a restart.
apply_change() {
  "${TOOLS_DIR}/opsctl/bin/python" -I -m ops.runtime.service apply / "${RESTART_REASONS[@]}"
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
      CHANGES+=("cleared ${unit}'s start-limit-hit (it had been refused further starts; see journalctl -u ${unit})")
    fi
  done
  systemctl reset-failed "${SERVICE}" "${SOCKET_UNIT}" >/dev/null 2>&1 || true
}

# The launcher's own checks (`opsctl runtime check`: --check in a transient unit with the
# installed unit's settings) on the configuration now on disk, before the running service is
# touched: a refusal leaves it serving the previous configuration.
configuration_accepted() {
  local out rc=0
  out="$("${TOOLS_DIR}/opsctl/bin/opsctl" runtime check 2>&1)" || rc=$?
  if ((rc == 0)); then
    report "configuration accepted by the launcher's checks"
    return 0
  fi
  service_is refused "NOT RESTARTED: the launcher would refuse the new configuration, so the service keeps running the previous one: ${out##*$'\n'} (fix it, check with: sudo opsctl lint, then re-run install.sh)"
  report "refused: ${out##*$'\n'}"
  return 1
}

# The socket must be systemd's before the service restarts: first install, or an install from
# before socket activation whose service still binds the port itself (stopped once, here).
# Restarting the socket refuses connections, so it happens only when its own file changed.
hold_socket() {
  if ! systemctl is-active --quiet "${SOCKET_UNIT}"; then
    service_is_active && systemctl stop "${SERVICE}"
    systemctl start "${SOCKET_UNIT}"
    CHANGES+=("started ${SOCKET_UNIT} (systemd holds ${LISTEN_HOST}:${LISTEN_PORT})")
  elif [[ "$1" == *" socket "* ]]; then
    systemctl restart "${SOCKET_UNIT}"
    CHANGES+=("restarted ${SOCKET_UNIT} (its unit file changed: connections were refused for a moment)")
  fi
}

# What an operator runs next (the summary and --json print the same).
# Only commands that can work in the state the service is left in (health and smoke need it
# running): one a line, the command, a tab, and what the summary adds about it.
next_commands() {
  if [[ -z "${ROOT}${DRY_RUN}" && -z "${HAS_SYSTEMD}" ]]; then
    printf '%s\t%s\n' "sudo opsctl lint" "(health and smoke need the service started, on a systemd host)"
  elif [[ -n "${UPSTREAM_KEY_MISSING}" ]]; then
    printf '%s\t%s\n' "sudoedit ${UPSTREAM_KEY_FILE}" "(one line)" "sudo ./install.sh" "(starts it)" \
      "sudo opsctl lint" ""
  else
    printf '%s\t%s\n' "sudo opsctl health" "" "sudo opsctl smoke --all" "" "sudo opsctl lint" "" \
      "journalctl -u ${SERVICE} -f" ""
  fi
}

# What changed: what this run wrote and did, or else what changed since the last run (empty: nothing).
changed_items() {
  if ((${#CHANGES[@]})); then
    printf '%s\n' "${CHANGES[@]}"
  elif ((${#RESTART_REASONS[@]})); then
    echo "nothing written by install.sh (changed since the last run: ${RESTART_REASONS[*]})"
  fi
}

print_summary() {
  local item
  echo
  echo "optillm-proxy install summary${DRY_RUN:+ (dry run: nothing was written)}"
  echo "  profile:   ${PROFILE} (runtime ${RUNTIME_NAME}, optillm ${OPTILLM_VERSION}; recorded in ${CURRENT_LINK}/${MANIFEST_REL})"
  if ((${#CHANGES[@]})); then
    echo "  changed:"
    for item in "${CHANGES[@]}"; do echo "    - ${item}"; done
  elif ((${#RESTART_REASONS[@]})); then
    echo "  changed:   $(changed_items)"
  else
    echo "  changed:   nothing (no change; nothing restarted)"
  fi
  echo "  service:   ${SERVICE_STATE}"
  echo "  env file:  ${ENV_FILE} (PROXY_PLUGINS, PROXY_APPROACHES, request bounds; no secret; root 0600)"
  echo "  key file:  ${KEY_FILE} (the proxy key LiteLLM presents; root 0600; read with: sudo cat ${KEY_FILE})"
  echo "  upstream:  ${UPSTREAM_KEY_FILE} (the LiteLLM virtual key the proxy presents, limited to ${BASE_MODEL}; root 0600)"
  [[ -n "${ROOT}" ]] && echo "  staged at: ${ROOT}"
  for item in "${NOTES[@]}"; do echo "  note:      ${item}"; done
  print_next_commands
  echo "  uninstall: sudo ./install.sh --uninstall (or ${UNINSTALL_SCRIPT}); --purge also removes ${CONF_DIR}"
}

print_next_commands() {
  local cmd note shown=() joined
  while IFS=$'\t' read -r cmd note; do shown+=("${cmd}${note:+ ${note}}"); done < <(next_commands)
  if ((${#shown[@]} == 4)); then
    echo "  next:      ${shown[0]}; ${shown[1]}; ${shown[2]}"
    echo "             ${shown[3]}; after editing the env file: sudo ./install.sh (reloads once, no pause)"
  else
    printf -v joined '%s; ' "${shown[@]}"
    echo "  next:      ${joined%; }"
  fi
}

# --json: one object on the invoker's stdout (fd 3; everything else went to stderr), built by
# Python's json from NAME=VALUE arguments (a repeated NAME is a list).
print_json() {
  local args=(profile="${PROFILE}" runtime="${RUNTIME_NAME}" optillm_version="${OPTILLM_VERSION}" lock="${LOCK_SHOWN}"
    lock_sha256="${LOCK_SHA}" health="${HEALTH}" service="${SERVICE_STATE}" dry_run="${DRY_RUN}" root="${ROOT}"
    exit_code="$(exit_code)") item
  while IFS= read -r item; do args+=("changed=${item}"); done < <(changed_items)
  for item in "${RESTART_REASONS[@]}"; do args+=("restart_reasons=${item}"); done
  for item in "${NOTES[@]}"; do args+=("notes=${item}"); done
  while IFS=$'\t' read -r item _; do args+=("next=${item}"); done < <(next_commands)
  "${SYSTEM_PYTHON}" -I - "${args[@]}" >&3 <<'EOF'
import json, sys
out = {key: [] for key in ("changed", "restart_reasons", "notes", "next")}
for arg in sys.argv[1:]:
    key, _, value = arg.partition("=")
    out[key].append(value) if key in out and isinstance(out[key], list) else out.__setitem__(key, value)
out.update(restarted=out["health"] in ("healthy", "unhealthy"), dry_run=bool(out["dry_run"]),
           exit_code=int(out["exit_code"]), root=out["root"] or None)
print(json.dumps(out, indent=2))
EOF
}

exit_code() {
  if [[ -n "${DRY_RUN}" || -n "${ROOT}" ]]; then
    echo "${EXIT_OK}"
  elif [[ -z "${HAS_SYSTEMD}" ]]; then
    echo "${EXIT_NO_SYSTEMD}"
  elif [[ "${HEALTH}" == unhealthy ]]; then
    echo "${EXIT_UNHEALTHY}"
  elif [[ -n "${UPSTREAM_KEY_MISSING}" ]]; then
    echo "${EXIT_PREREQ}"
  elif [[ "${HEALTH}" == refused ]]; then
    echo "${EXIT_CONFIG_REFUSED}"
  else
    echo "${EXIT_OK}"
  fi
}

# --- uninstall: uninstall.sh.in, rendered --------------------------------------------------------

# install.sh --uninstall runs what the installed uninstall script runs, rendered afresh.
run_uninstall() {
  if [[ -z "${ROOT}" && -z "${DRY_RUN}" && ${EUID} -ne 0 ]]; then
    die "${EXIT_PREREQ}" "must run as root to uninstall: sudo $0 --uninstall"
  fi
  local script rc=0
  script="$(mktemp)"
  render "${REPO}/uninstall.sh.in" >"${script}"
  bash "${script}" ${PURGE:+--purge} ${DRY_RUN:+--dry-run} || rc=$?
  rm -f "${script}"
  exit "${rc}"
}

# The standalone uninstall script (k3s style), with this install's values.
write_uninstall_script() {
  step "uninstall script" "check ${PREFIX_DIR} by hand, then re-run"
  local tmp
  tmp="$(mktemp)"
  render "${REPO}/uninstall.sh.in" >"${tmp}"
  # Derived from uninstall.sh.in like bytecode from source: kept current, not listed as a change.
  if file_differs "${tmp}" "$(R "${UNINSTALL_SCRIPT}")" 0755; then
    [[ -n "${DRY_RUN}" ]] || put_file "${tmp}" "$(R "${UNINSTALL_SCRIPT}")" 0755
    report "${DRY_RUN:+would write }${UNINSTALL_SCRIPT}"
  else
    report "unchanged"
  fi
  rm -f "${tmp}"
}

# --- upgrade and rollback: install.sh builds, opsctl runtime validates and switches -------------

check_installation() {
  step "check installation" "run as root on the installed host: sudo ./install.sh --upgrade|--rollback"
  ((EUID == 0)) || die "${EXIT_PREREQ}" "must run as root: sudo ./install.sh ${UPGRADE:+--upgrade}${ROLLBACK:+--rollback}"
  [[ -d /run/systemd/system ]] ||
    die "${EXIT_NO_SYSTEMD}" "systemd is not PID 1 here: an upgrade validates and switches the running service, which needs it"
  [[ -L "${CURRENT_LINK}" && -x "${TOOLS_DIR}/opsctl/bin/opsctl" ]] ||
    die "${EXIT_PREREQ}" "no installation here (${CURRENT_LINK}, ${TOOLS_DIR}/opsctl): run sudo ./install.sh first"
  if [[ -n "${UPGRADE_LOCK}" && ! -f "${UPGRADE_LOCK}" ]]; then
    die "${EXIT_USAGE}" "no lock file at ${UPGRADE_LOCK}: give a hashed lock (see locks/ and how they are regenerated)"
  fi
}

# Hands over to opsctl (validation, switch, checks, switching back); its exit code is ours.
run_opsctl_runtime() {
  step "runtime $1" "read the line above; opsctl runtime --help explains each exit code"
  local rc=0
  "${TOOLS_DIR}/opsctl/bin/opsctl" runtime "$@" ${JSON:+--json} >&3 || rc=$?
  exit "${rc}"
}

upgrade_main() {
  check_installation
  choose_profile
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

main() {
  umask 022
  parse_args "$@"
  # fd 3 is the invoker's stdout; with --json only the object goes there.
  exec 3>&1
  [[ -z "${JSON}" ]] || exec 1>&2
  trap 'on_error $? $LINENO' ERR
  if [[ -n "${UPGRADE}" ]]; then
    upgrade_main
  elif [[ -n "${ROLLBACK}" ]]; then
    check_installation
    run_opsctl_runtime rollback
  elif [[ -n "${UNINSTALL}" ]]; then
    run_uninstall
  fi
  choose_profile
  check_system
  install_debian_packages
  check_python
  keep_current_runtime
  create_service_user
  create_directories
  bootstrap_uv
  build_runtime
  install_launcher
  link_runtimes_site_packages
  switch_current
  install_opsctl
  write_provider_file
  write_env_file
  write_upstream_key_file
  write_key_file
  install_unit
  write_uninstall_script
  detect_changes
  start_service
  if [[ -n "${JSON}" ]]; then print_json; else print_summary; fi
  exit "$(exit_code)"
}

# Sourcing (the tests call single functions) defines everything and runs nothing.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
