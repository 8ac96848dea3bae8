"""Controls: start/pause/stop, record, arm/disarm stimulation, pause mapping, visual protocol.

Every button sends a control request to the supervisor (``rig.supervisor.send_control``
through the window's ``ControlClient``), so the loop does exactly the same with or without
this window and every action is logged by the supervisor. The states shown here (running,
armed, recording, mapping) are read back from the nodes' heartbeats, never from the buttons:
what you see is what the loop reports, so a lost request cannot show a false "disarmed".

The reply line says what became of the last request, not only that it was sent: the
supervisor accepts any well-formed request and forwards it, so the panel watches for the
effect (the nodes' state, the stimulus's protocol) or a node's refusal (a warning it logs on
the bus) and reports whichever comes first. Arm and Stop ask for confirmation first.
"""
from __future__ import annotations

import time

from PyQt6.QtWidgets import (QComboBox, QDoubleSpinBox, QGridLayout, QHBoxLayout, QLabel,
                             QMessageBox, QPushButton, QSizePolicy, QVBoxLayout, QWidget)

from gui.panels import status_label, title_label
from gui.state import LoopState
from rig.messages import LOG, POSTERIOR, STIMULUS, STIM_FIRED, STIM_PLAN
from rig.node import Verb

# Visual stimulus protocols offered; the box is editable for a lab's own protocol names.
PROTOCOLS = ("default", "omr", "still", "forward", "backward", "left", "right")
ARMED_STYLE = "background:#c00000; color:white; font-weight:bold; padding:3px"
SAFE_STYLE = "background:#205020; color:white; font-weight:bold; padding:3px"
NEUTRAL_STYLE = "background:#404040; color:white; padding:3px"
REPLAY_STYLE = "background:#1f4e8c; color:white; font-weight:bold; padding:3px"
WAIT_S = 5.0  # a request neither done nor refused by then is reported as unconfirmed


def ask(parent, title: str, text: str) -> bool:
    """A modal yes/no question; the default button is No."""
    buttons = QMessageBox.StandardButton
    answer = QMessageBox.question(parent, title, text, buttons.Yes | buttons.No, buttons.No)
    return answer == buttons.Yes


class Request:
    """One sent request, watched until its effect or a refusal shows (``outcome``)."""

    def __init__(self, what: str, target: str, done, log_mark: int):
        self.what = what  # e.g. "protocol 'foo' to fish"
        self.target = target
        self.done = done  # panel -> bool: the effect is visible
        self.log_mark = log_mark  # store's log version when sent: later warnings count
        self.sent_at = time.monotonic()
        self.replied = False
        self.result = ""

    def outcome(self, panel, store) -> str:
        """The line to show now; sets ``result`` once the request is settled."""
        if self.result:
            return self.result
        refusal = _refusal(store, self.target, self.log_mark)
        if refusal:
            self.result = f"{self.what}: refused by {self.target}: {refusal}"
        elif self.done is not None and self.done(panel):
            self.result = f"{self.what}: done"
        elif time.monotonic() - self.sent_at > WAIT_S and self.done is not None:
            self.result = f"{self.what}: sent, but no effect seen after {WAIT_S:.0f} s"
        else:
            return f"{self.what}: sent, waiting for the loop"
        return self.result


class ControlsPanel(QWidget):
    """Buttons that send control verbs, and the loop's reported state.

    Parameters
    ----------
    send : callable
        ``send(verb, target="*", args=None)``: queue one control request.
    start_loop : callable, optional
        Launches a new loop when none is running (the window owns a config); without it
        Start only resumes a paused loop.
    confirm : callable, optional
        ``confirm(parent, title, text) -> bool`` before Arm and Stop (default: a dialog).
    """

    def __init__(self, send, start_loop=None, confirm=ask, parent=None):
        super().__init__(parent)
        self._send = send
        self._start_loop = start_loop
        self.confirm = confirm
        self.loop = LoopState("no loop")  # set by the window on every refresh
        self.armed = False
        self.running = False
        self.recording: bool | None = None
        self.recorded = ""  # the recorder's figures, e.g. "1234 msgs, 5.6 MB"
        self.mapping: bool | None = None
        self.protocol = ""  # the stimulus node's reported protocol
        self.request: Request | None = None
        self.stop_requested = False  # this window sent Stop to the current run
        self.replay = ""  # "SESSION at 2x" when the loop is a replay (set by the window)
        self.replay_node: str | None = None  # the node whose stats report "position_s"
        self.replay_position = float("nan")  # s into the session, as it reports
        self.planner_name: str | None = None
        self.stimulus_node: str | None = None
        self._armed_shown = ""  # what the armed banner shows (its style changes only on a flip)
        self._log_version = 0

        self.armed_label = _fixed(QLabel("stimulation: -"), 1)
        self.armed_label.setStyleSheet(NEUTRAL_STYLE)
        self.replay_label = _fixed(QLabel(""), 1)
        self.state_label = _fixed(status_label("loop: waiting for heartbeats", wrap=True), 2)
        self.record_label = _fixed(status_label("recording: -"), 1)
        self.mapping_label = _fixed(status_label("mapping: -"), 1)
        self.stimulus_label = _fixed(status_label("visual stimulus: -", wrap=True), 2)
        self.reply_label = _fixed(status_label("", wrap=True), 2)

        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.stop_button = QPushButton("Stop…")
        self.record_button = QPushButton("Record")
        self.arm_button = QPushButton("Arm…")
        self.disarm_button = QPushButton("Disarm")
        self.mapping_button = QPushButton("Pause mapping")
        self.protocol_box = QComboBox()
        self.protocol_box.setEditable(True)
        self.protocol_box.addItems(PROTOCOLS)
        self.protocol_box.setMinimumContentsLength(6)
        self.protocol_button = QPushButton("Set protocol")
        self.arm_button.setStyleSheet("color:#ff6060; font-weight:bold")
        self.seek_box = QDoubleSpinBox()
        self.seek_box.setRange(0.0, 1e6)
        self.seek_box.setDecimals(0)
        self.seek_box.setSuffix(" s")
        self.seek_box.setToolTip("where in the session to continue, s from its start")
        self.seek_button = QPushButton("Seek")
        self.seek_button.clicked.connect(lambda: self.seek(self.seek_box.value()))
        for widget in (self.seek_box, self.seek_button):
            widget.setVisible(False)  # shown for a replay (in the banner's row: no shift)
        self.arm_button.setToolTip("arm stimulation (asks first)")
        self.stop_button.setToolTip("stop the loop and end the run (asks first)")

        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(lambda: self.request_verb(
            Verb.PAUSE, "*", "pause", lambda p: p.loop.state == "paused"))
        self.stop_button.clicked.connect(self.stop)
        self.record_button.clicked.connect(self.toggle_record)
        self.arm_button.clicked.connect(self.arm)
        self.disarm_button.clicked.connect(lambda: self.request_verb(
            Verb.DISARM, "*", "disarm", lambda p: not p.armed))
        self.mapping_button.clicked.connect(self.toggle_mapping)
        self.protocol_button.clicked.connect(
            lambda: self.set_protocol(self.protocol_box.currentText()))

        grid = QGridLayout()
        grid.setSpacing(3)
        buttons = ((self.start_button, self.pause_button, self.stop_button),
                   (self.arm_button, self.disarm_button, self.record_button),
                   (self.mapping_button, self.protocol_box, self.protocol_button))
        for r, row in enumerate(buttons):
            for c, widget in enumerate(row):
                widget.setMinimumWidth(60)
                grid.addWidget(widget, r, c)
        banners = QHBoxLayout()
        banners.addWidget(self.armed_label, 1)
        banners.addWidget(self.replay_label, 1)
        banners.addWidget(self.seek_box)
        banners.addWidget(self.seek_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(title_label("Controls"))
        layout.addLayout(banners)
        layout.addWidget(self.state_label)
        layout.addWidget(self.record_label)
        layout.addWidget(self.mapping_label)
        layout.addWidget(self.stimulus_label)
        layout.addLayout(grid)
        layout.addWidget(self.reply_label)
        layout.addStretch(1)
        self._store = None

    # -- actions -------------------------------------------------------------------------
    def request_verb(self, verb: Verb, target: str, what: str, done=None, args=None) -> None:
        """Send one request and watch for its effect (``done(panel)``) or a refusal."""
        mark = self._store.version(LOG) if self._store is not None else 0
        self.request = Request(what, target, done, mark)
        self.reply_label.setText(f"{what}: sending…")
        self._send(verb, target, args)

    def start(self) -> None:
        if self.loop.state in ("no loop", "stopped", "ended") and self._start_loop is not None:
            self.reply_label.setText("starting a new run…")
            self.request = None
            self._start_loop()
            return
        keep_mapping_paused = self.mapping is False
        what = "resume" if self.loop.state == "paused" else "start"
        self.request_verb(Verb.START, "*", what, lambda p: p.loop.state == "running")
        if keep_mapping_paused:
            # START reaches every node, the planner too: a mapping paused by hand stays so.
            self._send(Verb.PAUSE, self.planner_name or "planner")

    def _confirmed(self, what: str, title: str, text: str) -> bool:
        """Ask before ``what``; a "no" is said in the reply line."""
        if self.confirm(self, title, text):
            return True
        self.reply_label.setText(f"{what}: cancelled")
        return False

    def stop(self) -> None:
        if not self._confirmed("stop", "Stop the loop?",
                               "Stop ends this run: every node stops and the recording "
                               "closes. Start then begins a new run."):
            return
        self.stop_requested = True
        self.request_verb(Verb.STOP, "*", "stop",
                          lambda p: p.loop.state in ("stopped", "ended"))

    def arm(self) -> None:
        if not self._confirmed("arm", "Arm stimulation?",
                               "Armed, the SLM fires the planner's ensembles (within its "
                               "safety limits) until you disarm or the loop stops."):
            return
        self.request_verb(Verb.ARM, "*", "arm", lambda p: p.armed)

    def toggle_record(self) -> None:
        # RECORD carries the wanted state: the recorder starts or closes its file.
        on = not bool(self.recording)
        self.request_verb(Verb.RECORD, "*", "record" if on else "stop recording",
                          lambda p: p.recording is on, {"on": on})

    def toggle_mapping(self) -> None:
        planner = self.planner_name or "planner"
        if self.mapping is False:
            self.request_verb(Verb.RESUME, planner, "resume mapping", lambda p: p.mapping)
        else:
            self.request_verb(Verb.PAUSE, planner, "pause mapping",
                              lambda p: p.mapping is False)

    def set_protocol(self, name: str) -> None:
        node = self.stimulus_node or "*"
        self.request_verb(Verb.SET, node, f"protocol {name!r}", lambda p: p.protocol == name,
                          {"node": node, "key": "protocol", "value": name})

    def seek(self, seconds: float) -> None:
        """Ask the replay node to continue from ``seconds`` into the session."""
        node = self.replay_node or "replay"
        self.request_verb(Verb.SET, node, f"seek to {seconds:.0f} s",
                          lambda p: abs(p.replay_position - seconds) < 5.0,
                          {"node": node, "key": "seek", "value": float(seconds)})

    def show_reply(self, request: dict, reply: dict) -> None:
        """The supervisor's reply: only a failure is news (success is watched for)."""
        if request["verb"] == Verb.STATUS.value or reply.get("ok"):
            return
        what = self.request.what if self.request else request["verb"]
        self.reply_label.setText(f"{what}: failed: {reply.get('error', reply)}")
        if self.request is not None:
            self.request.result = self.reply_label.text()

    # -- state ---------------------------------------------------------------------------
    def refresh(self, store) -> None:
        self._store = store
        nodes = store.nodes()
        plan = store.get_latest(STIM_PLAN) or store.get_latest(POSTERIOR)
        if plan is not None:
            self.planner_name = plan.source
        stimulus = store.get_latest(STIMULUS)
        if stimulus is not None:
            self.stimulus_node = stimulus.source
            self.protocol = str(stimulus.meta.get("protocol", ""))
        live = {n: b for n, (b, _) in nodes.items() if b.get("status") != "exited"}
        for name, beat in live.items():
            stats = beat.get("stats")
            if isinstance(stats, dict) and "position_s" in stats:
                self.replay_node, self.replay_position = name, float(stats["position_s"])
        ended = self.loop.state in ("stopped", "ended")
        self.armed = not ended and any(b.get("armed") for b in live.values())
        self.running = any(b.get("running") for b in live.values())
        self.recording, self.recorded = _recording(live)
        planner = live.get(self.planner_name or "planner")
        waiting = ended or self.loop.state == "starting"  # not paused: not started yet
        self.mapping = None if planner is None or waiting else bool(planner.get("running"))
        self._show_state(store, live, ended, stimulus)
        if self.request is not None:
            self.reply_label.setText(self.request.outcome(self, store))

    def _show_state(self, store, live: dict, ended: bool, stimulus) -> None:
        shown = ("off" if ended or not live else "armed" if self.armed else "disarmed")
        if shown != self._armed_shown:  # a style sheet re-polishes the widget: only on a flip
            self._armed_shown = shown
            self.armed_label.setText({"armed": "STIMULATION ARMED", "disarmed":
                                      "stimulation disarmed", "off": "stimulation: off"}[shown])
            self.armed_label.setStyleSheet({"armed": ARMED_STYLE, "disarmed": SAFE_STYLE,
                                            "off": NEUTRAL_STYLE}[shown])
        banner = self.replay
        if banner and self.replay_position == self.replay_position:  # not NaN
            seconds = int(self.replay_position)
            banner = f"{banner.split(', at ')[0]}, at {seconds // 60}:{seconds % 60:02d}"
        self.replay_label.setText(banner)
        self.replay_label.setStyleSheet(REPLAY_STYLE if banner else "")
        for widget in (self.seek_box, self.seek_button):
            widget.setVisible(bool(banner))
        self.state_label.setText(self.loop.text())
        self.start_button.setText("Resume" if self.loop.state == "paused" else "Start")
        self.start_button.setEnabled(self.loop.state in ("paused", "no loop", "stopped", "ended")
                                     and (self._start_loop is not None
                                          or self.loop.state == "paused"))
        self.pause_button.setEnabled(self.loop.state == "running")
        self.stop_button.setEnabled(self.loop.state in ("running", "paused", "starting"))
        self.record_label.setText("recording: " + {None: "- (no recorder)", True: "ON",
                                                    False: "off"}[self.recording]
                                  + (f" ({self.recorded})" if self.recorded else ""))
        self.record_button.setText("Stop recording" if self.recording else "Record")
        idle = "-" if self.planner_name is None and "planner" not in live else "not running"
        self.mapping_label.setText("mapping: " + {None: idle, True: "running",
                                                  False: "paused"}[self.mapping])
        self.mapping_button.setText("Resume mapping" if self.mapping is False
                                    else "Pause mapping")
        self.stimulus_label.setText(_stimulus_line(store, stimulus))


def _stimulus_line(store, stimulus) -> str:
    """Run clock, visual stimulus and how long it has been on, stimulations so far."""
    with store.lock:
        epochs = list(store.marks.epochs)
        n_fired = store.counts.get(STIM_FIRED, 0)
        ring = store.traces
        last = int(ring.t_ns[(ring.total - 1) % ring.capacity]) if ring and ring.total else None
        first = store.first_t_ns
    parts = []
    if first and last:
        parts.append(f"run {_clock((last - first) / 1e9)}")
    if stimulus is not None:
        name = stimulus.meta.get("name", "?")
        since = f" for {_clock((last - epochs[-1][0]) / 1e9)}" if epochs and last else ""
        parts.append(f"stimulus {name}{since} (protocol {stimulus.meta.get('protocol', '-')})")
    parts.append(f"{n_fired} stimulations")
    return "   ".join(parts)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


def _fixed(label: QLabel, lines: int) -> QLabel:
    """A label of a fixed number of lines: text coming and going never moves the buttons."""
    height = label.fontMetrics().lineSpacing() * lines + 8
    label.setFixedHeight(height)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    return label


def _refusal(store, target: str, mark: int) -> str:
    """A warning or error the ``target`` node logged on the bus after ``mark``, or ""."""
    if store is None or target == "*":
        return ""
    with store.lock:
        for source, level, text, _, seq in reversed(store.logs):
            if seq <= mark:
                break
            if source == target and level in ("warning", "error", "critical"):
                return text
    return ""


def _recording(beats: dict) -> tuple[bool | None, str]:
    """(recording?, figures) from the recorder's heartbeat stats.

    A recorder that reports ``recording`` says whether its file is open; one that only
    reports ``recorded`` (messages) records the whole run, so it is recording while alive.
    None: no recorder in the loop.
    """
    state, figures = None, ""
    for beat in beats.values():
        stats = beat.get("stats")
        if not isinstance(stats, dict) or not ({"recording", "recorded"} & set(stats)):
            continue
        on = bool(stats.get("recording", True))
        state = on or bool(state)
        if "recorded" in stats:
            figures = (f"{stats['recorded']} msgs, {stats.get('MB', 0)} MB, "
                       f"lost {stats.get('lost', 0)}")
    return state, figures
