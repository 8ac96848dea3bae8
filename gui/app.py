"""The dashboard window: starts or attaches to a loop, shows it, and stops what it started.

``MainWindow`` holds the panels, a ``BusThread`` filling a ``LiveStore``, a screen-rate
``QTimer`` that redraws from the store's newest data, and a ``ControlClient`` for every
button. Given a ``LoopProcess`` it owns that loop: it attaches once the supervisor has
written its endpoints, shows when it ends, can launch it again (Start), and shuts it down
when the window closes. Attached to a loop started elsewhere, closing the window leaves
that loop running.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import QMainWindow, QSplitter, QWidget

from gui.bus_thread import BusThread
from gui.loop import ControlClient, LoopProcess, LoopStartError
from gui.panels import status_label
from gui.store import LiveStore
from rig.bus import Endpoints, Keys
from rig.node import Verb

log = logging.getLogger(__name__)

# Most a panel redraws per second. The raster and the camera follow the screen; slower
# figures are not read faster by a person, and painting every plot at 30 Hz would spend the
# GUI thread's whole frame budget (see benchmarks/gui.py).
REDRAW_HZ = {"activity": 30.0, "camera": 30.0, "behaviour": 15.0, "anatomy": 10.0,
             "connectivity": 5.0, "controls": 5.0, "health": 2.0}


class MainWindow(QMainWindow):
    """The live dashboard.

    Parameters
    ----------
    endpoints : rig.bus.Endpoints, optional
        Attach to this loop now (a loop started elsewhere, or by ``launcher``).
    launcher : callable, optional
        Returns a new, not yet started ``LoopProcess``; the window then owns that loop,
        starts it now, and again when Start is pressed after it ended.
    keys : rig.bus.Keys, optional
        CURVE keys for a bus that leaves this machine.
    fps : float
        Redraw rate (draws happen on this timer only, never per message).
    """

    control_reply = pyqtSignal(dict, dict)

    def __init__(self, endpoints: Endpoints | None = None, launcher=None,
                 keys: Keys | None = None, fps: float = 30.0, store: LiveStore | None = None,
                 parent=None):
        super().__init__(parent)
        self.store = store or LiveStore()
        self.keys = keys
        self.endpoints: Endpoints | None = None
        self.launcher = launcher
        self.loop: LoopProcess | None = None
        self.bus: BusThread | None = None
        self.control: ControlClient | None = None
        self.loop_error = ""
        self.redraw_ms = 0.0  # smoothed cost of one redraw, shown in the status bar
        self.redraws = 0
        self._due: dict[str, float] = {}  # panel -> monotonic time of its next redraw
        self._errors: dict[str, int] = {}
        self.panel_ms: dict[str, float] = {}  # smoothed refresh cost per panel, when it ran
        self._closed = False
        self._status_future = None  # the STATUS request in flight, if any
        self.setWindowTitle("Rig: live dashboard")
        self.panels = self._build_panels()
        self.control_reply.connect(self._on_reply)

        self.status = status_label("")
        self.statusBar().addWidget(self.status, 1)
        self.redraw_timer = QTimer(self)
        self.redraw_timer.setInterval(max(1, int(1000 / fps)))
        self._slack_s = 0.25 / fps
        self.redraw_timer.timeout.connect(self.redraw)
        self.loop_timer = QTimer(self)  # the owned loop: endpoints appearing, process ending
        self.loop_timer.setInterval(200)
        self.loop_timer.timeout.connect(self._check_loop)
        self.status_timer = QTimer(self)  # supervisor STATUS (restart counts), every 2 s
        self.status_timer.setInterval(2000)
        self.status_timer.timeout.connect(self._poll_status)
        self.redraw_timer.start()
        self.loop_timer.start()
        self.status_timer.start()
        if endpoints is not None:
            self.attach(endpoints)
        elif launcher is not None:
            self.launch()

    # -- layout --------------------------------------------------------------------------
    def _build_panels(self) -> dict[str, QWidget]:
        from gui.camera_feed import CameraFeed
        from gui.panels.activity import ActivityPanel
        from gui.panels.anatomy import AnatomyPanel
        from gui.panels.behaviour import BehaviourPanel
        from gui.panels.camera import CameraPanel
        from gui.panels.connectivity import ConnectivityPanel
        from gui.panels.controls import ControlsPanel
        from gui.panels.health import HealthPanel

        panels: dict[str, QWidget] = {
            "activity": ActivityPanel(), "behaviour": BehaviourPanel(),
            "anatomy": AnatomyPanel(), "connectivity": ConnectivityPanel(),
            "controls": ControlsPanel(self.send, self.launch if self.launcher else None),
            "camera": CameraPanel(), "health": HealthPanel(),
        }
        # What the redraw timer calls per panel: its refresh, or an adapter's for a panel
        # with its own data interface (the camera panel).
        self.refreshers = {name: panel.refresh for name, panel in panels.items()
                           if hasattr(panel, "refresh")}
        self.camera_feed = CameraFeed(panels["camera"], self.send)
        self.refreshers["camera"] = self.camera_feed.refresh
        columns = (("activity", "behaviour"), ("anatomy", "connectivity"),
                   ("controls", "camera", "health"))
        outer = QSplitter(Qt.Orientation.Horizontal)
        for names in columns:
            column = QSplitter(Qt.Orientation.Vertical)
            for name in names:
                column.addWidget(panels[name])
            outer.addWidget(column)
        outer.setStretchFactor(0, 5)
        outer.setStretchFactor(1, 4)
        outer.setStretchFactor(2, 3)
        self.setCentralWidget(outer)
        return panels

    # -- loop ----------------------------------------------------------------------------
    def launch(self) -> None:
        """Start a new owned loop (the previous one, if any, must have ended)."""
        if self.launcher is None or (self.loop is not None and self.loop.alive()):
            return
        self._detach()
        self.loop_error = ""
        self.loop = self.launcher()
        self.loop.start()
        self.panels["controls"].loop_alive = True

    def attach(self, endpoints: Endpoints) -> None:
        """Show the loop at ``endpoints`` (forgetting what was shown before)."""
        self._detach()
        self.store.reset()
        self.endpoints = endpoints
        self.bus = BusThread(endpoints, self.store, self.keys)
        self.bus.start()
        self.control = ControlClient(endpoints.control, self.keys,
                                     on_reply=self.control_reply.emit, secret=self._secret())
        log.info("attached to the loop at %s", endpoints.sub)

    def _secret(self) -> bytes | None:
        """The owned loop's control secret (an attached loop's: TODO with --attach)."""
        from rig.control import read_run_secret

        try:
            return read_run_secret(self.loop.run_dir) if self.loop is not None else None
        except ValueError as exc:
            log.warning("%s: control requests will be refused", exc)
            return None

    def _detach(self) -> None:
        if self.bus is not None:
            self.bus.stop()
            self.bus = None
        if self.control is not None:
            self.control.close()
            self.control = None

    def _check_loop(self) -> None:
        if self.loop is None:
            return
        if self.bus is None:
            try:
                endpoints = self.loop.endpoints()
            except LoopStartError as exc:
                self.loop_error = str(exc)
                self.panels["controls"].loop_alive = False
                self.loop = None
                return
            if endpoints is not None:
                self.attach(endpoints)
        elif not self.loop.alive():
            self.panels["controls"].loop_alive = False
            self.loop_error = (f"the loop ended (exit code {self.loop.process.returncode}); "
                               f"its output: {self.loop.run_dir / 'loop-output.log'}")
            self.loop.stop()
            self._detach()
            # Forget the ended loop (its run folder is named in loop_error): its endpoints
            # file stays, and re-attaching to it would wipe the last data off the screen.
            # Start launches anew.
            self.loop = self.endpoints = None

    def send(self, verb: Verb | str, target: str = "*", args: dict | None = None):
        """Queue a control request to the supervisor; the reply shows in the controls.

        Returns the request's future, or None when there is no loop to send to.
        """
        if self.control is None:
            if Verb(verb) is not Verb.STATUS:
                self.panels["controls"].reply_label.setText("no loop to send to")
            return None
        return self.control.send(verb, target, args)

    def _poll_status(self) -> None:
        # One STATUS in flight at most: the control worker sends one request at a time, and
        # polls piling up behind an unanswered one would delay an ARM or DISARM click.
        if self._status_future is None or self._status_future.done():
            self._status_future = self.send(Verb.STATUS)

    def _on_reply(self, request: dict, reply: dict) -> None:
        if request["verb"] == Verb.STATUS.value and reply.get("ok"):
            self.panels["health"].set_supervisor_status(reply.get("status") or {})
        self.panels["controls"].show_reply(request, reply)

    # -- drawing -------------------------------------------------------------------------
    def redraw(self, everything: bool = False, now: float | None = None) -> None:
        """Refresh each panel that is due (all with ``everything``) from the newest data.

        ``now`` (s, monotonic) replaces the clock: the benchmark replays frames on its own.
        """
        t0 = time.perf_counter()
        now = time.monotonic() if now is None else now
        for name, refresh in self.refreshers.items():
            if not everything and now < self._due.get(name, 0.0):
                continue
            # Less a little slack: a timer tick that comes a hair early must not skip a frame.
            self._due[name] = now + 1.0 / REDRAW_HZ.get(name, 30.0) - self._slack_s
            t_panel = time.perf_counter()
            try:
                refresh(self.store)
                cost = (time.perf_counter() - t_panel) * 1e3
                last = self.panel_ms.get(name)
                self.panel_ms[name] = cost if last is None else 0.9 * last + 0.1 * cost
            except Exception:  # a drawing bug is logged (not 30 times a second), never fatal
                count = self._errors[name] = self._errors.get(name, 0) + 1
                if count == 1 or count % 300 == 0:
                    log.exception("redrawing the %s panel failed (%d times)", name, count)
        cost = (time.perf_counter() - t0) * 1e3
        self.redraw_ms = cost if self.redraws == 0 else 0.9 * self.redraw_ms + 0.1 * cost
        self.redraws += 1
        self._show_status()

    def _show_status(self) -> None:
        if self.redraws % 10:
            return
        where = self.endpoints.sub if self.endpoints else "no loop"
        run = f"  run {self.loop.run_dir}" if self.loop is not None else ""
        error = f"  {self.loop_error}" if self.loop_error else ""
        error += f"  bus: {self.bus.error}" if self.bus is not None and self.bus.error else ""
        slowest = max(self.panel_ms, key=self.panel_ms.get, default="")
        worst = f" (slowest: {slowest} {self.panel_ms[slowest]:.1f} ms)" if slowest else ""
        bad = f"  malformed {self.store.malformed}" if self.store.malformed else ""
        self.status.setText(f"{where}{run}  received {self.store.received}{bad}  "
                            f"redraw {self.redraw_ms:.1f} ms{worst}{error}")

    def save_screenshot(self, path: str | Path) -> Path:
        self.redraw(everything=True)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path)):
            raise OSError(f"could not write the screenshot to {path}")
        log.info("screenshot saved to %s", path)
        return path

    # -- closing -------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop drawing, stop the bus thread, and stop the owned loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.panel_ms:
            log.info("redraw cost per panel (ms, smoothed): %s",
                     ", ".join(f"{k} {v:.1f}" for k, v in self.panel_ms.items()))
        for timer in (self.redraw_timer, self.loop_timer, self.status_timer):
            timer.stop()
        control_endpoint = self.endpoints.control if self.endpoints else None
        self._detach()
        if self.loop is not None:
            code = self.loop.stop(control_endpoint, self.keys)
            log.info("loop stopped (exit code %s)", code)

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)


def use_dark_theme(app) -> None:
    """Fusion style with a dark palette, matching the black plots (and legible legends)."""
    from PyQt6.QtGui import QColor, QPalette

    app.setStyle("Fusion")
    palette = QPalette()
    roles = QPalette.ColorRole
    for role, colour in ((roles.Window, "#202020"), (roles.WindowText, "#e0e0e0"),
                         (roles.Base, "#161616"), (roles.AlternateBase, "#242424"),
                         (roles.Text, "#e0e0e0"), (roles.Button, "#303030"),
                         (roles.ButtonText, "#e0e0e0"), (roles.Highlight, "#3a6ea5"),
                         (roles.HighlightedText, "#ffffff"), (roles.ToolTipBase, "#303030"),
                         (roles.ToolTipText, "#e0e0e0"), (roles.PlaceholderText, "#808080")):
        palette.setColor(role, QColor(colour))
    app.setPalette(palette)
