"""The loop the dashboard starts, and the control requests it sends.

``LoopProcess`` runs the supervisor as a child process (``python -m rig.cli run ...``), the
same command a headless run uses, so the loop behaves identically with or without the
window and a crash of the window cannot take the loop's shutdown logic with it. (The
supervisor handles Ctrl-C with ``signal``, which only works on a main thread: one more
reason it gets a process of its own rather than a thread of the GUI.) The dashboard then
attaches to the loop by the endpoints the supervisor writes to its run folder, exactly as
it attaches to a loop started elsewhere.

``ControlClient`` sends control requests (``rig.supervisor.send_control``) from a worker
thread so the GUI never waits on a socket; replies come back through a callback.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from rig.bus import Endpoints, Keys
from rig.node import Verb

log = logging.getLogger(__name__)


class LoopStartError(RuntimeError):
    """The loop process ended before it published its endpoints."""


def read_endpoints(path: str | Path) -> Endpoints:
    """Endpoints from a run folder's ``endpoints.json`` (a file, its folder, or JSON text)."""
    text = str(path)
    candidate = Path(text)
    if candidate.is_dir():
        candidate = candidate / "endpoints.json"
    try:
        data = json.loads(candidate.read_text() if candidate.is_file() else text)
    except (OSError, json.JSONDecodeError):
        raise ValueError(f"--attach {text!r}: not an endpoints.json file, a run folder holding "
                         "one, or JSON text like {\"pub\": ..., \"sub\": ..., \"control\": ...}"
                         ) from None
    missing = {"pub", "sub", "control"} - set(data)
    if missing:
        raise ValueError(f"--attach {text!r}: missing {sorted(missing)}; endpoints.json holds "
                         "pub, sub and control")
    return Endpoints(data["pub"], data["sub"], data["control"])


def set_args(items) -> list[str]:
    """``["--set", item, ...]`` for each config override ``item`` (``table.key=value``)."""
    return [part for item in items for part in ("--set", item)]


class LoopProcess:
    """A ``rig run`` child process that runs until it is told to stop.

    Parameters
    ----------
    argv : list of str
        Arguments after ``rig`` (e.g. ``["run", "--config", "x.toml"]``); ``--out`` is added.
    run_dir : path
        The run folder to use (its ``endpoints.json`` tells the dashboard where to attach).
    """

    def __init__(self, argv: list[str], run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.argv = [sys.executable, "-m", "rig.cli", *argv, "--out", str(self.run_dir)]
        self.process: subprocess.Popen | None = None
        self._log_file = None

    @classmethod
    def for_config(cls, config_path: str | Path, out_dir: str, name: str,
                   overrides=()) -> "LoopProcess":
        """A loop from a config that runs until stopped (its duration is set to 0)."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        argv = ["run", "--config", str(config_path), *set_args(["run.duration_s=0",
                                                                 *overrides])]
        return cls(argv, Path(out_dir) / f"{name}-gui-{stamp}")

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stale = self.run_dir / "endpoints.json"
        if stale.exists():
            stale.unlink()  # never attach to the endpoints of an earlier run in this folder
        # The loop's own output goes to a file: a pipe nobody reads would fill and block it.
        self._log_file = open(self.run_dir / "loop-output.log", "ab")
        self.process = subprocess.Popen(self.argv, stdout=self._log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.info("loop started (pid %d): %s", self.process.pid, " ".join(self.argv))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def endpoints(self) -> Endpoints | None:
        """The loop's endpoints once written, else None; raises if the loop died first."""
        path = self.run_dir / "endpoints.json"
        if path.exists():
            try:
                return read_endpoints(path)
            except ValueError:
                return None  # being written right now: ask again on the next tick
        if self.process is not None and self.process.poll() is not None:
            raise LoopStartError(f"the loop exited with code {self.process.returncode} before "
                                 f"it started; see {self.run_dir / 'loop-output.log'}")
        return None

    def wait_endpoints(self, timeout_s: float = 60.0) -> Endpoints:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            endpoints = self.endpoints()
            if endpoints is not None:
                return endpoints
            time.sleep(0.05)  # waiting on another process's file: nothing to block on
        raise LoopStartError(f"no endpoints.json in {self.run_dir} after {timeout_s:.0f} s")

    def stop(self, control_endpoint: str | None = None, keys: Keys | None = None,
             timeout_s: float = 8.0) -> int | None:
        """Ask the supervisor to shut down (it stops its nodes), then make sure it has.

        Returns the exit code. Escalates to SIGTERM, then SIGKILL, if the loop does not end
        within ``timeout_s``; the supervisor's own shutdown takes about 2 s.
        """
        if self.process is None:
            return None
        if self.process.poll() is None and control_endpoint:
            import zmq

            from rig.control import read_run_secret, send_control

            try:
                send_control(control_endpoint, Verb.SHUTDOWN, timeout_ms=1500, keys=keys,
                             secret=read_run_secret(self.run_dir))
            except (TimeoutError, OSError, ValueError, zmq.ZMQError) as exc:
                log.warning("shutdown request not answered (%s): terminating the loop", exc)
        for action in (None, self.process.terminate, self.process.kill):
            if action is not None and self.process.poll() is None:
                log.warning("loop still running: %s", action.__name__)
                action()
            try:
                self.process.wait(timeout_s if action is None else 3.0)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.process.returncode


class ControlClient:
    """Sends control requests one at a time from a worker thread.

    ``send`` returns at once; ``on_reply(request, reply_or_error)`` is called on the worker
    thread (connect it to a Qt signal to get back to the GUI thread).
    """

    def __init__(self, endpoint: str, keys: Keys | None = None, on_reply=None,
                 timeout_ms: int = 3000, secret: bytes | None = None):
        self.endpoint = endpoint
        self.keys = keys
        self.secret = secret  # the run's control secret (rig.supervisor.read_run_secret)
        self.on_reply = on_reply
        self.timeout_ms = timeout_ms
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rig-gui-control")
        self._closed = False

    def send(self, verb: Verb | str, target: str = "*", args: dict | None = None) -> Future:
        request = {"verb": Verb(verb).value, "target": target, "args": args or {}}
        return self._pool.submit(self._send, request)

    def _send(self, request: dict) -> dict:
        import zmq

        from rig.supervisor import send_control

        try:
            reply = send_control(self.endpoint, request["verb"], request["target"],
                                 request["args"], self.timeout_ms, self.keys, self.secret)
        except (TimeoutError, OSError, zmq.ZMQError) as exc:
            reply = {"ok": False, "error": str(exc)}
        if self.on_reply is not None and not self._closed:
            self.on_reply(request, reply)
        return reply

    def close(self) -> None:
        # No reply reaches a closed window; a request in flight ends by its own timeout.
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
