"""`systemctl reload optillm-proxy`: a new launcher takes over the listening socket, the old one drains.

Three parties, one module (stdlib only):
- the helper (`helper_main`, the unit's ExecReload=+, root): systemd re-reads EnvironmentFile= for
  each ExecReload=, so its own environment is the new configuration as systemd parsed it; it reads
  both key files (root 0600, which the service cannot read), sends all of it over the control socket
  ($RUNTIME_DIRECTORY/control.sock, 0600: the service user and root only), waits for the answer and
  exits 0 (applied) or 1 (refused, one line why: `systemctl reload` fails, the old process serves on).
- the running launcher (`Control`, a thread): checks the new configuration with settings.prepare (the
  checks a start refuses on) and the memory headroom, then starts a new launcher with its own argv
  plus `--handoff-fd` and hands it the keys and the listening socket through inherited descriptors
  (never argv, the environment or a file). When the new one is ready, the serving loop switches
  (serving.py): stop accepting (new connections wait in the socket's backlog for the moment it takes),
  MAINPID=<new> and READY=1 to systemd (NotifyAccess=main: only the main process may say it), `go`
  to the new one; it answers the helper `done` once the new one says `serving`, then drains its
  requests in flight and exits 0.
- the new launcher (`Handoff`): starts like a fresh one but on the inherited socket, binds its control
  socket at a private name, checks its app in-process (/health through every layer; a probe over TCP
  could be answered by the old process), says `ready`, serves only after `go`, then takes the control
  socket's name, says `serving` and feeds the watchdog as the main process. A reload that follows at
  once therefore reaches the process that serves, never the one draining.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from optillm_proxy_launcher import layout, settings
from optillm_proxy_launcher.settings import ConfigRefused

CONTROL_SOCKET_NAME = "control.sock"
HANDOFF_OPTION = "--handoff-fd"
# Bounds on every wait (systemd bounds the whole reload by TimeoutStartSec=, 60 s in the unit):
# the new launcher's start (full profile under load: 20-25 s), the switch, the helper's message.
READY_SECONDS = 45.0
SWITCH_SECONDS = 10.0
GO_SECONDS = READY_SECONDS + SWITCH_SECONDS + 5
ANSWER_SECONDS = SWITCH_SECONDS + 5  # a drained old process waits this long for its helper's answer
MESSAGE_SECONDS = 10.0
HELPER_SECONDS = READY_SECONDS + SWITCH_SECONDS + 2
MAX_MESSAGE_BYTES = 1 << 20
EX_OK, EX_REFUSED, EX_UNREACHABLE = 0, 1, 2
PREFIX = "optillm-proxy-launcher"
HELPER_PREFIX = "optillm-proxy-reload: "
# In a refusal a restart can get past (memory, a launcher without a control socket): ops'
# apply_change restarts when the reload's journal line says it.
RESTART_INSTEAD = f"apply it with systemctl restart {layout.SERVICE}"

# Variables systemd sets per process, not per unit: the new launcher keeps the old one's (it
# inherits the old one's journal stream and directories), or gets none (the listening socket and the
# notification socket are handed over explicitly; MAINPID and the rest describe a control process).
KEPT_FROM_THE_RUNNING_PROCESS = ("USER", "LOGNAME", "HOME", "SHELL", "INVOCATION_ID", "JOURNAL_STREAM",
                                 "CREDENTIALS_DIRECTORY", "RUNTIME_DIRECTORY", "STATE_DIRECTORY",
                                 "CACHE_DIRECTORY", "LOGS_DIRECTORY", "CONFIGURATION_DIRECTORY",
                                 "LOG_NAMESPACE", "MEMORY_PRESSURE_WATCH", "MEMORY_PRESSURE_WRITE")
NOT_INHERITED = ("MAINPID", "MANAGERPID", "SYSTEMD_EXEC_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                 "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS",
                 "MONITOR_SERVICE_RESULT", "MONITOR_EXIT_CODE", "MONITOR_EXIT_STATUS", "MONITOR_INVOCATION_ID",
                 "MONITOR_UNIT", "PIDFILE", "TRIGGER_UNIT", "TRIGGER_PATH", "TRIGGER_TIMER_REALTIME_USEC",
                 "TRIGGER_TIMER_MONOTONIC_USEC", "PYTHONSAFEPATH")


class ReloadRefused(Exception):
    """A reload that did not happen; str() is the one line for the operator (the old process serves on)."""


def control_socket_path(environ: Mapping[str, str]) -> Path | None:
    """$RUNTIME_DIRECTORY/control.sock (the unit's RuntimeDirectory=), or None outside systemd."""
    directory = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(directory) / CONTROL_SOCKET_NAME if directory else None


def compose_environment(running: Mapping[str, str], fresh: Mapping[str, str]) -> dict[str, str]:
    """The new launcher's environment: the unit's variables as systemd computed them for the reload
    (`fresh`, the env file re-read), the per-process ones as the running launcher started with them."""
    dropped = set(KEPT_FROM_THE_RUNNING_PROCESS) | set(NOT_INHERITED)
    environment = {k: v for k, v in fresh.items() if k not in dropped}
    environment.update({k: running[k] for k in KEPT_FROM_THE_RUNNING_PROCESS if k in running})
    return environment


# --- memory: two launchers overlap while the old one drains -------------------------------------


def _cgroup_dir(proc_cgroup: Path, root: Path) -> Path | None:
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):  # the unified (v2) hierarchy
            return root / line[3:].lstrip("/")
    return None


def _read_bytes(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return None if text == "max" else int(text) if text.isdigit() else None


def resident_bytes(status: Path = Path("/proc/self/status")) -> int:
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_problem(cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup"),
                   own_resident: Callable[[], int] = resident_bytes) -> str | None:
    """Why a second launcher would not fit, or None. The new one is estimated at the running one's
    resident size (same runtime, same plugins); the service's memory.current plus that must stay
    under its memory.high (MemoryHigh=). Where the kernel enforces no such bound (cgroup v1, no
    MemoryHigh=), there is nothing to overrun and the reload goes ahead."""
    directory = _cgroup_dir(proc_cgroup, cgroup_root)
    if directory is None:
        return None
    current, high = _read_bytes(directory / "memory.current"), _read_bytes(directory / "memory.high")
    if current is None or high is None:
        return None
    needed = own_resident()
    if current + needed <= high:
        return None
    mib = 1 << 20
    return (f"the service uses {current // mib} MiB and a second launcher needs about {needed // mib} MiB while the "
            f"old one drains, past MemoryHigh={high // mib} MiB: {RESTART_INSTEAD} (it drains first, then starts "
            "one process)")


# --- the wire: JSON lines ----------------------------------------------------------------------


def send_line(sock_or_fd, obj: dict) -> None:
    data = (json.dumps(obj) + "\n").encode()
    if isinstance(sock_or_fd, socket.socket):
        sock_or_fd.sendall(data)
    else:
        view = memoryview(data)
        while view:
            view = view[os.write(sock_or_fd, view):]


class LineReader:
    """Lines from a descriptor, each wait bounded; None at end of file or when the time is up."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer = fd, b""

    def read(self, seconds: float, hangup: int | None = None) -> tuple[str | None, bool]:
        """(line, ended); the unix socket `hangup` closed by its peer (the helper gone; POLLHUP, which
        its shutdown of writing alone does not raise) ends the wait too."""
        end = time.monotonic() + seconds
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        if hangup is not None:
            poller.register(hangup, 0)  # POLLHUP and POLLERR are always reported
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0:
                return None, False
            events = dict(poller.poll(left * 1000))
            if not events:
                return None, False
            if hangup is not None and events.get(hangup, 0) & (select.POLLHUP | select.POLLERR):
                return None, True
            if self.fd not in events:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except ConnectionResetError:  # the peer closed with data unread (a listener shut down)
                return None, True
            if not chunk:
                return None, True
            self.buffer += chunk
            if len(self.buffer) > MAX_MESSAGE_BYTES:
                return None, True
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("utf-8", "replace"), False


def read_message(conn: socket.socket, seconds: float = MESSAGE_SECONDS) -> dict:
    """The helper's one JSON object (it shuts its side down after it)."""
    conn.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_MESSAGE_BYTES:
                raise ReloadRefused(f"the reload message is larger than {MAX_MESSAGE_BYTES} bytes")
    except TimeoutError:
        raise ReloadRefused(f"the reload helper sent nothing within {seconds:g} s") from None
    if not data.strip():
        raise ReloadRefused("the reload message is empty (a connection that sent nothing)")
    try:
        message = json.loads(data)
    except ValueError:
        raise ReloadRefused("the reload message is not JSON") from None
    if (not isinstance(message, dict) or not isinstance(message.get("environment"), dict)
            or not isinstance(message.get("credentials"), dict)):
        raise ReloadRefused("the reload message lacks its environment or credentials")
    strings = lambda d: all(isinstance(k, str) and isinstance(v, str) for k, v in d.items())  # noqa: E731
    if not strings(message["environment"]) or not strings(message["credentials"]):
        raise ReloadRefused("the reload message holds values that are not strings")
    return message


def staging_path(path: Path, pid: int) -> Path:
    """Where launcher `pid` listens before its control socket takes the name `path`."""
    return path.with_name(f".{path.name}.{pid}")


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


# --- the running launcher ------------------------------------------------------------------------


# Starts argv[2:] in a grandchild and exits at once, writing its PID to fd argv[1]. The orphan is
# adopted by PID 1: for systemd the new launcher is then a child of its own once MAINPID= names it.
# A child of the old launcher would stay "not our child" to systemd, which on the next stop sends it
# SIGTERM and, not waiting for a process it cannot reap, SIGKILL at once (KillMode=mixed): no drain.
_DETACH = ("import os, sys\n"
           "fd = int(sys.argv[1])\n"
           "pid = os.fork()\n"
           "if pid == 0:\n"
           "    os.close(fd)\n"
           "    os.execve(sys.argv[2], sys.argv[2:], os.environ)\n"
           "os.write(fd, b'%d\\n' % pid)\n")


def _stat_fields(stat: Path) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...]; [] when the process is gone."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _running(pid: int) -> bool:
    """Alive and not a zombie (its new parent may not have reaped it yet)."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return bool(fields) and fields[0] != "Z"


class Detached:
    """The new launcher, started detached (spawn_detached): PID 1 is its parent, not this process,
    so its exit status is not ours to read; the handoff pipe says why it stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not _running(self.pid):
            self.returncode = -1  # gone; the status went to its parent
        return self.returncode

    def kill(self) -> None:
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> int:
        end = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.poll() is None:
            if time.monotonic() >= end:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode


def spawn_detached(argv: list[str], env: dict, pass_fds=(), close_fds: bool = True) -> Detached:
    """`argv` started as a grandchild that PID 1 adopts at once (see _DETACH)."""
    pid_r, pid_w = os.pipe()
    try:
        shim = subprocess.Popen([sys.executable, "-I", "-S", "-c", _DETACH, str(pid_w), *argv], env=env,
                                pass_fds=(*pass_fds, pid_w), close_fds=close_fds)
        os.close(pid_w)
        pid_w = -1
        with os.fdopen(pid_r, "rb", closefd=False) as reader:
            line = reader.readline()
        shim.wait(30)
    finally:
        os.close(pid_r)
        if pid_w >= 0:
            os.close(pid_w)
    if shim.returncode != 0 or not line.strip().isdigit():
        raise OSError(0, f"the start shim failed (exit {shim.returncode})")
    return Detached(int(line))


def children_of(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in proc.iterdir():
        fields = _stat_fields(entry / "stat") if entry.name.isdigit() else []
        if fields and fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def end_children(grace: float = 5.0) -> list[int]:
    """A drained old launcher's last step: SIGTERM the processes its plugins started (Jupyter
    kernels, MCP servers, browsers), SIGKILL what is left after `grace`. On a stop systemd does this
    (KillMode=mixed); after a reload the cgroup lives on, and they would run until the next stop.
    The new launcher is not among them: it was started detached (spawn_detached)."""
    children = children_of(os.getpid())
    for pid in children:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
    end = time.monotonic() + grace
    while time.monotonic() < end and any(_running(pid) for pid in children):
        time.sleep(0.05)
    for pid in children:
        if _running(pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    return children


@dataclass
class Launch:
    """How the running launcher was started: what a new one is started with."""

    command: list[str]  # interpreter, -I, launcher script, the unit's ExecStart arguments
    environment: dict[str, str]  # as it started (systemd's)
    listen_fd: int
    notify_socket: str | None
    watchdog_usec: str | None


@dataclass
class Switch:
    """A new launcher that said ready; the serving loop commits it (serving.py)."""

    child: Detached
    to_child: int
    notify: Callable[[str], bool]
    committed: threading.Event = field(default_factory=threading.Event)
    aborted: threading.Event = field(default_factory=threading.Event)
    # Set once the helper has its answer: the old process, drained, waits for it before it exits
    # (an exit first would close the helper's connection with no outcome, and the reload fail).
    answered: threading.Event = field(default_factory=threading.Event)

    def alive(self) -> bool:
        return self.child.poll() is None

    def commit(self) -> None:
        """Called on the serving loop after it stopped accepting: the new launcher becomes main."""
        self.notify(f"MAINPID={self.child.pid}\nREADY=1\nSTATUS=reloaded: PID {self.child.pid} took over; "
                    "the previous process drains")
        try:
            send_line(self.to_child, {"state": "go"})
        except OSError:
            pass  # it died in this instant: systemd sees its main process gone and restarts the service
        self.committed.set()


class Control:
    """The control socket's thread in the running launcher: one reload at a time."""

    def __init__(self, launch: Launch, notifier, request_switch: Callable[[Switch], None],
                 stopping: Callable[[], bool], memory: Callable[[], str | None] = memory_problem,
                 spawn: Callable[..., Detached] = spawn_detached) -> None:
        self.launch, self.notifier = launch, notifier
        self.request_switch, self.stopping, self.memory, self.spawn = request_switch, stopping, memory, spawn
        self.busy = threading.Lock()
        self.listener: socket.socket | None = None
        self.path: Path | None = None

    # - the socket -

    def bind(self, path: Path) -> None:
        """Listen at a private name beside `path` (staging_path); `publish` gives it the name. A new
        launcher binds before it says ready and publishes once it serves, so the old one answers
        `done` only when the name already leads here: the next reload reaches the serving process."""
        staging = staging_path(path, os.getpid())
        staging.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(str(staging))
            os.chmod(staging, 0o600)
            sock.listen(4)
        except OSError:
            sock.close()
            staging.unlink(missing_ok=True)
            raise
        self.listener, self.path = sock, path

    def publish(self) -> None:
        """Take the name in one step (a connection the old listener accepted already is unaffected)."""
        os.replace(staging_path(self.path, os.getpid()), self.path)

    def serve_in_background(self) -> None:
        threading.Thread(target=self.serve, name="reload-control", daemon=True).start()

    def start(self, path: Path) -> None:
        self.bind(path)
        self.publish()
        self.serve_in_background()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), name="reload", daemon=True).start()

    def stop_listening(self) -> None:
        """shutdown() wakes the accept() blocked in serve() (close() alone leaves it accepting until
        the process exits); anything queued behind it is reset, which the helper reports."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                if peer_uid(conn) not in (0, os.getuid()):
                    raise ReloadRefused("only root or the service user may reload the service")
                if not self.busy.acquire(blocking=False):
                    raise ReloadRefused("another reload is running: wait for it to finish")
                try:
                    message = read_message(conn)
                    outcome, switch = self.reload(message, lambda text: self._say(conn, "progress", text),
                                                  conn.fileno())
                except BaseException:
                    self.busy.release()
                    raise
                # Handed over: the new launcher answers reloads from now on (it took the socket's name);
                # this one keeps `busy`, so a connection still queued here is refused, never served.
                self.stop_listening()
                self._say(conn, "done", outcome)
                switch.answered.set()
            except ReloadRefused as exc:
                print(f"{PREFIX}: reload refused: {exc}", file=sys.stderr, flush=True)
                self._say(conn, "refused", str(exc))
            except Exception as exc:  # a reload must never take the serving process down
                print(f"{PREFIX}: reload failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                self._say(conn, "refused", f"internal error: {type(exc).__name__}")

    @staticmethod
    def _say(conn: socket.socket, outcome: str, text: str) -> None:
        try:
            send_line(conn, {"outcome": outcome, "message": text})
        except OSError:
            pass  # the helper is gone (systemd's reload timeout): nothing to tell

    # - the reload itself -

    def reload(self, message: dict, say: Callable[[str], None], helper_fd: int | None = None) -> tuple[str, Switch]:
        """(what to tell the helper, the committed switch), or ReloadRefused: the old process serves on."""
        launch = self.launch
        environment = compose_environment(launch.environment, message["environment"])
        credentials = message["credentials"]
        try:  # what a start would refuse, without importing anything: a bad change costs nothing
            settings.prepare(launch.command[3:], environment, credentials=credentials)
        except ConfigRefused as exc:
            raise ReloadRefused(str(exc)) from None
        problem = self.memory()
        if problem:
            raise ReloadRefused(problem)
        previous = self.notifier.status
        self.notifier.send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}\n"
                           "STATUS=reloading: starting a launcher with the new configuration")
        try:
            return self._hand_over(environment, credentials, say, helper_fd)
        except ReloadRefused:
            self.notifier.send(f"READY=1\nSTATUS={previous}" if previous else "READY=1")
            raise

    def _hand_over(self, environment: dict, credentials: dict, say, helper_fd: int | None) -> tuple[str, Switch]:
        launch = self.launch
        to_child_r, to_child = os.pipe()
        from_child, from_child_w = os.pipe()
        fds = (launch.listen_fd, to_child_r, from_child_w)  # inheritable in the child only (pass_fds)
        try:
            child = self.spawn([*launch.command, HANDOFF_OPTION, f"{to_child_r},{from_child_w}"],
                               env=environment, pass_fds=fds, close_fds=True)
        except OSError as exc:
            os.close(to_child)
            os.close(from_child)
            raise ReloadRefused(f"could not start a new launcher: {exc.strerror}") from None
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        say(f"started a new launcher, PID {child.pid}")
        switch = Switch(child, to_child, self.notifier.send)
        try:
            send_line(to_child, {"credentials": credentials, "listen_fd": launch.listen_fd,
                                 "notify_socket": launch.notify_socket, "watchdog_usec": launch.watchdog_usec})
            reader = LineReader(from_child)
            line, hung_up = reader.read(READY_SECONDS, helper_fd)
            if line is None:
                raise ReloadRefused(self._not_ready(child, hung_up))
            state = _state_message(line)
            if state.get("state") != "ready":
                child.wait(10)
                raise ReloadRefused(str(state.get("message") or "the new launcher exited before it was ready"))
            if self.stopping():
                raise ReloadRefused("the service is stopping")
            self.request_switch(switch)
            if not switch.committed.wait(SWITCH_SECONDS):
                switch.aborted.set()
                raise ReloadRefused(f"the serving loop did not switch to the new launcher within {SWITCH_SECONDS:g} s"
                                    if not self.stopping() else "the service is stopping")
            # `done` waits for the new one to serve and hold the control socket's name, so whoever
            # the helper tells next (systemctl, install, key rotate) reaches the serving process.
            line, _ = reader.read(SWITCH_SECONDS)
            serving_now = line is not None and _state(line) == "serving"
        except BaseException:
            if not switch.committed.is_set():
                _end(child)
                self._forget_staging(child.pid)
            raise
        finally:
            os.close(from_child)
            if not switch.committed.is_set():
                os.close(to_child)
        # The new one keeps its end open: our end closes when this process exits.
        if not serving_now:
            say(f"PID {child.pid} is main but has not said it serves; see journalctl -u {layout.SERVICE}")
        return (f"PID {child.pid} serves the new configuration; PID {os.getpid()} drains its requests in flight",
                switch)

    def _forget_staging(self, pid: int) -> None:
        """A new launcher that never served leaves its private control socket name behind."""
        path = control_socket_path(self.launch.environment)
        if path is not None:
            staging_path(path, pid).unlink(missing_ok=True)

    @staticmethod
    def _not_ready(child: Detached, hung_up: bool) -> str:
        if child.poll() is not None:
            return f"the new launcher exited before it was ready (journalctl -u {layout.SERVICE})"
        if hung_up:
            return "the reload was abandoned (the helper went away: systemd's reload timeout?)"
        return f"the new launcher was not ready within {READY_SECONDS:g} s"


def _state_message(line: str) -> dict:
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _state(line: str) -> str | None:
    return _state_message(line).get("state")


def _end(child: Detached) -> None:
    if child.poll() is None:
        child.kill()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        pass


# --- the new launcher -----------------------------------------------------------------------------


@dataclass
class Handoff:
    """What the running launcher handed this one (`--handoff-fd R,W` in argv)."""

    from_parent: int
    to_parent: int
    credentials: dict[str, str]
    listen_fd: int
    notify_socket: str | None
    watchdog_usec: str | None
    reader: LineReader | None = None

    def say(self, obj: dict) -> None:
        try:
            send_line(self.to_parent, obj)
        except OSError:
            pass  # the old launcher is gone: it has no one to report to

    def refused(self, message: str) -> None:
        self.say({"state": "refused", "message": message})

    def serving(self) -> None:
        """After `go`: this process serves and its control socket holds the name (the old one's
        `done` waits for this)."""
        self.say({"state": "serving"})

    def ready_and_wait(self, seconds: float = GO_SECONDS) -> bool:
        """Tell the old launcher this one is ready; True once it says go (it has stopped accepting and
        made this process the main one), False when it went away or never said it."""
        self.say({"state": "ready"})
        line, _ = self.reader.read(seconds)
        return line is not None and _state(line) == "go"


def take_handoff(argv: list[str]) -> tuple[Handoff | None, list[str]]:
    """`--handoff-fd R,W` out of argv, and what the running launcher sent on R."""
    value, rest = None, []
    i = 0
    while i < len(argv):
        if argv[i] == HANDOFF_OPTION and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        rest.append(argv[i])
        i += 1
    if value is None:
        return None, argv
    try:
        from_parent, to_parent = (int(part) for part in value.split(","))
    except ValueError:
        raise ConfigRefused(f"{HANDOFF_OPTION} {value!r}: only a reload passes it (two descriptors, R,W)") from None
    reader = LineReader(from_parent)
    line, _ = reader.read(MESSAGE_SECONDS)
    try:
        payload = json.loads(line or "")
        handoff = Handoff(from_parent, to_parent, dict(payload["credentials"]), int(payload["listen_fd"]),
                          payload.get("notify_socket"), payload.get("watchdog_usec"), reader)
    except (ValueError, KeyError, TypeError):
        raise ConfigRefused("the running launcher handed over nothing usable: reload again, or restart") from None
    return handoff, rest


def app_health(app) -> bool:
    """/health through every layer the server will run (gate, admission, routes), in-process."""
    from optillm_proxy_launcher.notify import PROBE_QUERY

    try:
        # buffered: the response is read and closed here, as a server would, so the gate counts the
        # probe out again (an unclosed one stays "in flight" in the metrics and in admission).
        response = app.test_client().get(f"/health?{PROBE_QUERY}", buffered=True)
        return response.status_code == 200 and (response.get_json(silent=True) or {}).get("status") == "ok"
    except Exception:  # noqa: BLE001 - not healthy, whatever the reason
        return False


# --- the helper (ExecReload=) -----------------------------------------------------------------------


def helper_main(environ: Mapping[str, str] | None = None, key_files: Mapping[str, str] | None = None) -> int:
    """ExecReload=+: hand the new configuration to the running launcher; exit 0 applied, 1 refused,
    2 no running launcher to talk to. One line to stdout per step (the journal)."""
    environ = dict(os.environ if environ is None else environ)
    key_files = key_files or {settings.CREDENTIAL_NAME: layout.KEY_FILE,
                              settings.UPSTREAM_CREDENTIAL_NAME: layout.UPSTREAM_KEY_FILE}
    say = lambda text: print(f"{HELPER_PREFIX}{text}", flush=True)  # noqa: E731
    # The unit's RuntimeDirectory= (systemd sets $RUNTIME_DIRECTORY for ExecReload= too).
    path = control_socket_path(environ) or Path(layout.RUNTIME_DIR) / CONTROL_SOCKET_NAME
    credentials = {}
    for name, key_file in key_files.items():
        try:
            credentials[name] = Path(key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            say(f"refused: cannot read {key_file}: {getattr(exc, 'strerror', None) or exc}; nothing changed")
            return EX_REFUSED
    message = json.dumps({"environment": environ, "credentials": credentials}).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(5)
        try:
            sock.connect(str(path))
        except OSError as exc:
            say(f"refused: no running launcher answers at {path} ({exc.strerror}): if the service runs, it started "
                f"before reload support; {RESTART_INSTEAD}")
            return EX_UNREACHABLE
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        reader = LineReader(sock.fileno())
        end = time.monotonic() + HELPER_SECONDS
        while True:
            line, ended = reader.read(max(0.0, end - time.monotonic()))
            if line is None:
                why = ("the running launcher closed the connection without an outcome (it stopped, or had handed "
                       "over already)" if ended else f"the running launcher gave no outcome within {HELPER_SECONDS:g} s")
                say(f"refused: {why}; see journalctl -u {layout.SERVICE}")
                return EX_REFUSED
            try:
                answer = json.loads(line)
                outcome, text = answer.get("outcome"), str(answer.get("message", ""))
            except (ValueError, AttributeError):
                outcome, text = "refused", f"the running launcher answered something unreadable: {line[:100]!r}"
            if outcome == "progress":
                say(text)
                continue
            if outcome == "done":
                say(f"reloaded: {text}")
                return EX_OK
            # stderr as well: `systemctl reload` points the operator at the journal, where this is the line.
            say(f"refused, the running process serves on unchanged: {text}")
            return EX_REFUSED
    finally:
        sock.close()
