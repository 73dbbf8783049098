"""A fleet on this machine, with Flower's own processes: one ``flower-superlink``, a
``flower-supernode`` per client (each its own ``--node-config``: data, device profile, caps),
and the run submitted with ``flwr run`` to the edgetune project folder (fleet/project.py).
Everything lives under the fleet folder ``OUT``:

    OUT/                      the server's fleet folder (fleet/folder.py)
    OUT/clients/<name>/       each client's run folders (checkpoints, metrics.jsonl)
    OUT/flower/               FLWR_HOME (the CLI's config), the project, every process's log

Loopback only, ``--insecure`` (no TLS: nothing leaves 127.0.0.1). Every process is stopped at
the end, whatever happened (a process group each; Flower's SuperExec children by their ports).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune.errors import EdgetuneError
from edgetune.fleet.config import FleetConfig, NodeConfig, to_flower
from edgetune.fleet.folder import FleetFolder
from edgetune.fleet.project import write_project

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def node_config_arg(node: NodeConfig) -> str:
    """``--node-config``'s ``key=value`` pairs (TOML values, strings quoted)."""
    from edgetune.fleet.project import _toml

    return " ".join(f"{k}={_toml(v)}" for k, v in to_flower(node).items() if v not in ("", 0))


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


@dataclass
class LocalFleet:
    """The SuperLink and SuperNodes of a local fleet (:func:`local_fleet` starts and stops them)."""

    out: Path
    port: int
    env: dict[str, str]
    superlink: Process | None = None
    nodes: dict[str, Process] = field(default_factory=dict)
    node_configs: dict[str, NodeConfig] = field(default_factory=dict)

    @property
    def flower(self) -> Path:
        return self.out / "flower"

    def _spawn(self, name: str, argv: list[str]) -> Process:
        log = self.flower / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            popen = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, start_new_session=True, cwd=self.flower)
        return Process(name, popen, log)

    def start_superlink(self) -> None:
        self.superlink = self._spawn("superlink", [
            _tool("flower-superlink"), "--insecure", "--host", HOST, "--port", str(self.port),
            "--disable-runtime-dependency-installation"])
        _wait_port(self.port, 60.0, self.superlink)

    def start_node(self, name: str, node: NodeConfig) -> Process:
        """A SuperNode for client ``name`` (again after a kill: same config, same run folders)."""
        self.node_configs[name] = node
        proc = self._spawn(f"supernode-{name}", [
            _tool("flower-supernode"), "--insecure", "--superlink", f"{HOST}:{self.port}",
            "--port", str(free_port()), "--node-config", node_config_arg(node)])
        self.nodes[name] = proc
        return proc

    def kill_node(self, name: str) -> None:
        """SIGKILL a client's SuperNode and its ClientApp (a device that lost power)."""
        proc = self.nodes[name]
        for pid in _descendants(proc.popen.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.stop(signal.SIGKILL)
        proc.popen.wait()

    def submit(self, project: Path, echo: Callable[[str], None], deadline: float) -> int:
        """``flwr run PROJECT local --stream``, its lines echoed; its exit code."""
        argv = [_tool("flwr"), "run", str(project), "local", "--stream"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=self.env, cwd=self.flower, start_new_session=True)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                echo(line.rstrip("\n"))
                if time.monotonic() > deadline:
                    raise EdgetuneError("the fleet ran past its time limit; stopped")
            return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        procs = [*self.nodes.values(), *([self.superlink] if self.superlink else [])]
        ports = {str(self.port)}
        pids = {pid for p in procs for pid in _descendants(p.popen.pid)}
        for p in procs:
            p.stop(signal.SIGTERM)
        end = time.monotonic() + 5.0
        while time.monotonic() < end and any(p.alive() for p in procs):
            time.sleep(0.1)
        for p in procs:
            p.stop(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
        for pid in pids | _by_port(ports):  # Flower's SuperExec runs in a session of its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def local_fleet(out: str | Path) -> Iterator[LocalFleet]:
    """A SuperLink on a free loopback port, its CLI config under ``OUT/flower``; every process
    started meanwhile is stopped on the way out."""
    out = Path(out).resolve()
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # flwr's tools spawn flower-superexec by name
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "FLWR_HOME": str(out / "flower" / "home"), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    fleet = LocalFleet(out, port, env)
    home = Path(env["FLWR_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
                                      f'address = "{HOST}:{port}"\ninsecure = true\n')
    previous = _exit_on_sigterm()
    try:
        fleet.start_superlink()
        yield fleet
    finally:
        fleet.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm():
    """SIGTERM (``kill``, a service manager) stops this process through its ``finally`` blocks,
    so the SuperLink and SuperNodes it started stop too; returns the handler it replaced (None
    off the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise SystemExit(128 + signum)
    return signal.signal(signal.SIGTERM, stop)


def run_local(bundle: str | Path, nodes: Sequence[NodeConfig], fleet: FleetConfig, out: str | Path,
              names: Sequence[str] | None = None, val: str | Path | None = None,
              echo: Callable[[str], None] = print, time_limit: float = 3600.0,
              during: Callable[[LocalFleet], None] | None = None) -> FleetFolder:
    """Run ``fleet`` over ``nodes`` (one SuperNode each) on this machine; the fleet folder.
    ``during(local)`` runs once the processes are up (tests kill and restart nodes with it)."""
    _check_flower()
    out = Path(out).resolve()
    names = list(names or [n.name or f"client-{i}" for i, n in enumerate(nodes)])
    if len(set(names)) != len(names):
        raise EdgetuneError(f"client names must differ: {names}")
    nodes = [absolute(n) for n in nodes]  # the apps run from other working directories
    deadline = time.monotonic() + time_limit
    with local_fleet(out) as local:
        project = write_project(local.flower / "project", fleet, bundle, out, val)
        for name, node in zip(names, nodes):
            local.start_node(name, node)
        if during is not None:
            threading.Thread(target=during, args=(local,), daemon=True).start()
        code = local.submit(project, echo, deadline)
    folder = FleetFolder(out)
    if code != 0 or folder.last_round() < fleet.rounds:
        logs = local.flower / "logs"
        raise EdgetuneError(f"the fleet stopped after round {folder.last_round()} of {fleet.rounds} "
                            f"(flwr run exit {code}); logs in {logs}")
    return folder


def absolute(node: NodeConfig) -> NodeConfig:
    """``node`` with its paths made absolute from here."""
    paths: dict[str, Any] = {k: str(Path(getattr(node, k)).resolve())
                             for k in ("data", "bundle", "out", "val") if getattr(node, k)}
    return dataclasses.replace(node, **paths)


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def _check_flower() -> None:
    import importlib.util

    if sys.version_info < (3, 11) or importlib.util.find_spec("flwr") is None:
        raise EdgetuneError("a fleet needs Flower: pip install 'edgetune[fleet]' (Python >= 3.11)")


def _wait_port(port: int, seconds: float, proc: Process) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not proc.alive():
            raise EdgetuneError(f"{proc.name} exited at start (code {proc.popen.returncode}); see {proc.log}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
            return
        time.sleep(0.1)
    raise EdgetuneError(f"{proc.name} did not listen on {HOST}:{port} within {seconds:.0f} s; see {proc.log}")


def _descendants(pid: int) -> set[int]:
    import psutil

    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _by_port(ports: set[str]) -> set[int]:
    """Processes whose command line names one of our ports (Flower's detached SuperExec)."""
    import psutil

    found = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if ("flwr" in cmd or "flower" in cmd) and any(f"{HOST}:{port}" in cmd for port in ports):
            found.add(p.info["pid"])
    return found - {os.getpid()}
