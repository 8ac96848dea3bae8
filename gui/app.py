"""The dashboard window: starts or attaches to a loop, shows it, and stops what it started.

``MainWindow`` holds the panels (each in a dock widget a person can move, tab or close; the
arrangement is saved between sessions when the window is given ``QSettings``), a
``BusThread`` filling a ``LiveStore``, a screen-rate ``QTimer`` that redraws from the
store's newest data, and a ``ControlClient`` for every button. Given a ``LoopProcess`` it
owns that loop: it attaches once the supervisor has written its endpoints, shows when it
ends, can launch it again (Start), and shuts it down when the window closes. Attached to a
loop started elsewhere, it notices the loop ending (every node's last heartbeat says
"exited", or heartbeats and STATUS replies stop), and closing the window leaves that loop
running. A new run starts on fresh panels (the docks keep their places).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from PyQt6.QtCore import QByteArray, Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import QDockWidget, QLabel, QMainWindow, QWidget

from gui.bus_thread import BusThread
from gui.loop import ControlClient, LoopProcess, LoopStartError
from gui.panels import PANEL_TITLE, plain_axes, status_label
from gui.state import LoopState, loop_state
from gui.store import LiveStore
from rig.bus import Endpoints, Keys
from rig.node import Verb

log = logging.getLogger(__name__)

# Most a panel redraws per second. The raster and the camera follow the screen; slower
# figures are not read faster by a person, and painting every plot at 30 Hz would spend the
# GUI thread's whole frame budget (see benchmarks/gui.py).
REDRAW_HZ = {"activity": 30.0, "camera": 30.0, "behaviour": 15.0, "anatomy": 10.0,
             "plane": 10.0, "stimulation": 5.0, "connectivity": 5.0, "controls": 5.0,
             "health": 2.0}
# Refreshed even in a hidden dock: the window reads the loop's state from it.
ALWAYS_REFRESHED = {"controls"}
TITLES = {"activity": "Activity", "behaviour": "Behaviour", "plane": "Imaging plane",
          "anatomy": "Anatomy", "stimulation": "Stimulation", "connectivity": "Connectivity",
          "controls": "Controls", "camera": "Camera", "health": "Loop health"}
ENDED_S = 6.0  # an attached loop silent this long, and not answering STATUS, has ended
LAYOUT_VERSION = 2  # bump when the docks change: an older saved arrangement is ignored


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
    settings : QSettings, optional
        Where the dock arrangement is kept between sessions (not kept without).
    replay : str
        "SESSION at Nx" for a replayed session: the REPLAY banner.
    secret : bytes, optional
        The attached loop's control secret (an owned loop's is read from its run folder).
    """

    control_reply = pyqtSignal(dict, dict)

    def __init__(self, endpoints: Endpoints | None = None, launcher=None,
                 keys: Keys | None = None, fps: float = 30.0, store: LiveStore | None = None,
                 settings=None, replay: str = "", secret: bytes | None = None, parent=None):
        super().__init__(parent)
        self.attach_secret = secret  # signs control to a loop started elsewhere
        self.settings = settings  # QSettings: the dock arrangement is kept there
        self.replay = replay  # "SESSION at Nx" for a replayed session
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
        self.supervisor_status: dict | None = None  # the latest STATUS reply's nodes
        self._status_failures = 0
        self.ever_ran = False  # a node reported running in this run
        self.ended = ""  # why an attached loop is over ("" while it is not)
        self.state = LoopState("no loop")
        self.setWindowTitle("Rig: live dashboard")
        self.setDockNestingEnabled(True)
        self.docks: dict[str, QDockWidget] = {}
        self.panels: dict[str, QWidget] = {}
        self._build_panels()
        self._arrange()
        self.control_reply.connect(self._on_reply)

        self.status = status_label("")
        self.statusBar().addWidget(self.status, 1)
        self.redraw_timer = QTimer(self)
        self.redraw_timer.setInterval(max(1, int(1000 / fps)))
        self.tick_s = 1.0 / fps
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
    def _build_panels(self) -> None:
        """Fresh panels in their docks (the controls panel is made once and kept)."""
        from gui.camera_feed import CameraFeed
        from gui.panels.activity import ActivityPanel
        from gui.panels.anatomy import AnatomyPanel
        from gui.panels.behaviour import BehaviourPanel
        from gui.panels.camera import CameraPanel
        from gui.panels.connectivity import ConnectivityPanel
        from gui.panels.controls import ControlsPanel
        from gui.panels.health import HealthPanel
        from gui.panels.plane import PlanePanel
        from gui.panels.stimulation import StimulationPanel

        controls = self.panels.get("controls") or ControlsPanel(
            self.send, self.launch if self.launcher else None)
        activity = ActivityPanel()
        plane = PlanePanel(on_pick=activity.add_selected)
        panels: dict[str, QWidget] = {
            "activity": activity, "behaviour": BehaviourPanel(), "plane": plane,
            "anatomy": AnatomyPanel(), "stimulation": StimulationPanel(),
            "connectivity": ConnectivityPanel(), "controls": controls,
            "camera": CameraPanel(), "health": HealthPanel(),
        }
        activity.selection_changed = plane.set_selected
        # What the redraw timer calls per panel: its refresh, or an adapter's for a panel
        # with its own data interface (the camera panel).
        self.refreshers = {name: panel.refresh for name, panel in panels.items()
                           if hasattr(panel, "refresh")}
        self.camera_feed = CameraFeed(panels["camera"], self.send)
        self.refreshers["camera"] = self.camera_feed.refresh
        for name, panel in panels.items():
            dock = self.docks.get(name)
            if dock is None:
                dock = self.docks[name] = QDockWidget(TITLES[name], self)
                dock.setObjectName(f"dock-{name}")  # saveState/restoreState key
                dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                 | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                                 | QDockWidget.DockWidgetFeature.DockWidgetClosable)
            if dock.widget() is not panel:
                plain_axes(panel)
                for title in panel.findChildren(QLabel, PANEL_TITLE):
                    title.hide()  # the dock's title bar names the panel
                old = dock.widget()
                dock.setWidget(panel)
                if old is not None:
                    old.deleteLater()
        self.panels = panels
        self._due.clear()

    def _arrange(self) -> None:
        """The saved arrangement if there is one, else the default for this screen size."""
        if self.settings is not None:
            state = self.settings.value("dashboard/state")
            geometry = self.settings.value("dashboard/geometry")
            version = int(self.settings.value("dashboard/version", 0))
            if isinstance(geometry, QByteArray):
                self.restoreGeometry(geometry)
            if version == LAYOUT_VERSION and isinstance(state, QByteArray) and \
                    self.restoreState(state, LAYOUT_VERSION):
                return
        self.default_layout()

    def default_layout(self, width: int | None = None) -> None:
        """Three columns: data over time | the brain and its mapping | controls and health.

        Narrower than 1,600 px (a 1366 x 768 laptop), anatomy shares a tab with the imaging
        plane, connectivity one with the stimulation view and the loop health one with the
        camera, so every visible panel keeps a legible size.
        """
        width = width or self.width()
        area = Qt.DockWidgetArea.LeftDockWidgetArea
        d = self.docks
        for dock in d.values():
            dock.setFloating(False)
            self.removeDockWidget(dock)  # hides it: shown again once placed
        self.addDockWidget(area, d["activity"])
        self.splitDockWidget(d["activity"], d["plane"], Qt.Orientation.Horizontal)
        self.splitDockWidget(d["plane"], d["controls"], Qt.Orientation.Horizontal)
        self.splitDockWidget(d["activity"], d["behaviour"], Qt.Orientation.Vertical)
        self.splitDockWidget(d["plane"], d["stimulation"], Qt.Orientation.Vertical)
        self.splitDockWidget(d["stimulation"], d["connectivity"], Qt.Orientation.Vertical)
        self.splitDockWidget(d["controls"], d["camera"], Qt.Orientation.Vertical)
        if width < 1600:
            self.tabifyDockWidget(d["plane"], d["anatomy"])
            self.tabifyDockWidget(d["stimulation"], d["connectivity"])
            self.tabifyDockWidget(d["camera"], d["health"])
        else:
            self.splitDockWidget(d["plane"], d["anatomy"], Qt.Orientation.Horizontal)
            self.splitDockWidget(d["camera"], d["health"], Qt.Orientation.Vertical)
        for dock in d.values():
            dock.show()
        if width < 1600:
            for name in ("plane", "stimulation", "camera"):
                d[name].raise_()
        height = max(self.height(), 600)
        shares = (0.34, 0.36, 0.30) if width < 1600 else (0.34, 0.42, 0.24)
        self.resizeDocks([d["activity"], d["plane"], d["controls"]],
                         [int(width * f) for f in shares], Qt.Orientation.Horizontal)
        self.resizeDocks([d["activity"], d["behaviour"]], [int(height * 0.55), int(height * 0.45)],
                         Qt.Orientation.Vertical)
        if width < 1600:
            self.resizeDocks([d["plane"], d["stimulation"]], [int(height * 0.45),
                                                               int(height * 0.55)],
                             Qt.Orientation.Vertical)
        else:
            self.resizeDocks([d["plane"], d["stimulation"], d["connectivity"]],
                             [int(height * 0.38), int(height * 0.31), int(height * 0.31)],
                             Qt.Orientation.Vertical)
        right = [d["controls"], d["camera"]] + ([] if width < 1600 else [d["health"]])
        self.resizeDocks(right, [260, height - 260] if width < 1600 else
                         [260, int((height - 260) * 0.45), int((height - 260) * 0.55)],
                         Qt.Orientation.Vertical)

    def save_layout(self) -> None:
        if self.settings is None:
            return
        self.settings.setValue("dashboard/state", self.saveState(LAYOUT_VERSION))
        self.settings.setValue("dashboard/geometry", self.saveGeometry())
        self.settings.setValue("dashboard/version", LAYOUT_VERSION)
        self.settings.sync()

    # -- loop ----------------------------------------------------------------------------
    def launch(self) -> None:
        """Start a new owned loop (the previous one, if any, must have ended)."""
        if self.launcher is None or (self.loop is not None and self.loop.alive()):
            return
        self._detach()
        self._new_run()
        self.loop_error = ""
        self.loop = self.launcher()
        self.loop.start()

    def attach(self, endpoints: Endpoints) -> None:
        """Show the loop at ``endpoints`` (forgetting what was shown before)."""
        self._detach()
        if self.store.received or self.ended:
            self._new_run()
        self.endpoints = endpoints
        self.ended = ""
        self.bus = BusThread(endpoints, self.store, self.keys)
        self.bus.start()
        self.control = ControlClient(endpoints.control, self.keys,
                                     on_reply=self.control_reply.emit, secret=self._secret())
        log.info("attached to the loop at %s", endpoints.sub)

    def _new_run(self) -> None:
        """Forget the last run: empty store, fresh panels, no remembered state."""
        self.store.reset()
        self.supervisor_status = None
        self._status_failures = 0
        self.ever_ran = False
        self.ended = ""
        self.panels["controls"].stop_requested = False
        self._build_panels()

    def _secret(self) -> bytes | None:
        """The control secret: the owned loop's, from its run folder; else the one given for
        the attached loop (``gui.launch.attach_secret``)."""
        from rig.control import read_run_secret

        if self.loop is None:
            return self.attach_secret
        try:
            return read_run_secret(self.loop.run_dir)
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
            self._check_attached()
            return
        if self.bus is None:
            try:
                endpoints = self.loop.endpoints()
            except LoopStartError as exc:
                self.loop_error = str(exc)
                self.loop = None
                return
            if endpoints is not None:
                self.attach(endpoints)
        elif not self.loop.alive():
            self.loop_error = (f"the loop ended (exit code {self.loop.process.returncode}); "
                               f"its output: {self.loop.run_dir / 'loop-output.log'}")
            self.loop.stop()
            self._detach()
            # Forget the ended loop (its run folder is named in loop_error): its endpoints
            # file stays, and re-attaching to it would wipe the last data off the screen.
            # Start launches anew.
            self.loop = self.endpoints = None
            self.ended = self.loop_error

    def _check_attached(self) -> None:
        """An attached loop has ended when every node said "exited", or when heartbeats
        and STATUS replies have both stopped coming."""
        if self.bus is None or self.ended:
            return
        nodes = self.store.nodes()
        if not nodes:
            return
        if all(beat.get("status") == "exited" for beat, _ in nodes.values()):
            self.ended = "every node exited"
        elif min(age for _, age in nodes.values()) > ENDED_S and self._status_failures >= 2:
            self.ended = (f"no heartbeat for {ENDED_S:.0f} s and the supervisor does not "
                          "answer")
        if self.ended:
            log.info("the attached loop ended: %s", self.ended)
            self._detach()

    def loop_state(self) -> LoopState:
        """The loop's state now (see ``gui.state``)."""
        if self.loop is not None or self.bus is not None:
            alive = True
        else:
            alive = False if (self.ended or self.loop_error) else None
        beats = {name: beat for name, (beat, _) in self.store.nodes().items()}
        controls = self.panels["controls"]
        if any(beat.get("running") for name, beat in beats.items()
               if name != controls.planner_name):
            self.ever_ran = True
        return loop_state(beats, self.supervisor_status, alive, self.ever_ran,
                          controls.stop_requested, controls.planner_name,
                          self.ended or self.loop_error)

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
        if request["verb"] == Verb.STATUS.value:
            if reply.get("ok"):
                self._status_failures = 0
                self.supervisor_status = reply.get("status") or {}
                self.panels["health"].set_supervisor_status(self.supervisor_status)
            else:
                self._status_failures += 1
        self.panels["controls"].show_reply(request, reply)

    # -- drawing -------------------------------------------------------------------------
    def redraw(self, everything: bool = False, now: float | None = None) -> None:
        """Refresh each panel that is due (all with ``everything``) from the newest data.

        A panel in a hidden dock (a tab behind another, or closed) waits until it shows. The
        panels slower than the screen start out of step (the k-th panel k ticks later), so
        they do not all redraw, and the window paint them, on the same tick.
        ``now`` (s, monotonic) replaces the clock: the benchmark replays frames on its own.
        """
        t0 = time.perf_counter()
        now = time.monotonic() if now is None else now
        controls = self.panels["controls"]
        controls.loop = self.state = self.loop_state()
        controls.replay = self._replay_banner()
        shown = self.isVisible()  # a window not shown (tests, screenshots) draws everything
        for k, (name, refresh) in enumerate(self.refreshers.items()):
            if not everything and now < self._due.get(name, 0.0):
                continue
            panel = self.panels.get(name)
            if not everything and shown and name not in ALWAYS_REFRESHED and \
                    panel is not None and panel.visibleRegion().isEmpty():
                continue  # closed, or a tab behind another (covered: Qt keeps it "visible")
            period = 1.0 / REDRAW_HZ.get(name, 30.0)
            ticks = max(1, round(period / self.tick_s))
            stagger = (k % ticks) * self.tick_s if name not in self._due else 0.0
            # Less a little slack: a timer tick that comes a hair early must not skip a frame.
            self._due[name] = now + period + stagger - self._slack_s
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

    def _replay_banner(self) -> str:
        if not self.replay:
            return ""
        first, ring = self.store.first_t_ns, self.store.traces
        if not first or ring is None or ring.total == 0:
            return f"REPLAY {self.replay}"
        last = int(ring.t_ns[(ring.total - 1) % ring.capacity])
        seconds = max(0, (last - first) // 1_000_000_000)
        return f"REPLAY {self.replay}, at {seconds // 60}:{seconds % 60:02d}"

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
        self.save_layout()
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
