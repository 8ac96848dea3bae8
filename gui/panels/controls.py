"""Controls: start/pause/stop, record, arm/disarm stimulation, pause mapping, visual protocol.

Every button sends a control request to the supervisor (``rig.supervisor.send_control``
through the window's ``ControlClient``), so the loop does exactly the same with or without
this window and every action is logged by the supervisor. The states shown here (running,
armed, recording, mapping) are read back from the nodes' heartbeats, never from the buttons:
what you see is what the loop reports, so a lost request cannot show a false "disarmed".
"""
from __future__ import annotations

from PyQt6.QtWidgets import (QComboBox, QGridLayout, QHBoxLayout, QLabel, QPushButton,
                             QVBoxLayout, QWidget)

from gui.panels import status_label, title_label
from rig.node import Verb

# Visual stimulus protocols offered; the box is editable for a lab's own protocol names.
PROTOCOLS = ("default", "omr", "still", "forward", "backward", "left", "right")
ARMED_STYLE = "background:#c00000; color:white; font-weight:bold; padding:4px"
SAFE_STYLE = "background:#205020; color:white; font-weight:bold; padding:4px"
NEUTRAL_STYLE = "background:#404040; color:white; padding:4px"


class ControlsPanel(QWidget):
    """Buttons that send control verbs, and the loop's reported state.

    Parameters
    ----------
    send : callable
        ``send(verb, target="*", args=None)``: queue one control request.
    start_loop : callable, optional
        Launches a new loop when none is running (the window owns a config); without it
        Start only resumes a paused loop.
    """

    def __init__(self, send, start_loop=None, parent=None):
        super().__init__(parent)
        self._send = send
        self._start_loop = start_loop
        self.loop_alive = True  # set by the window: False once the loop process ended
        self.armed = False
        self.running = False
        self.recording: bool | None = None
        self.recorded = ""  # the recorder's figures, e.g. "1234 msgs, 5.6 MB"
        self.mapping: bool | None = None

        self.armed_label = QLabel("stimulation: -")
        self.armed_label.setStyleSheet(NEUTRAL_STYLE)
        self.state_label = status_label("loop: waiting for heartbeats")
        self.record_label = status_label("recording: -", wrap=True)
        self.mapping_label = status_label("mapping: -", wrap=True)
        self.stimulus_label = status_label("visual stimulus: -")
        self.reply_label = status_label("", wrap=True)

        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.stop_button = QPushButton("Stop")
        self.record_button = QPushButton("Record")
        self.arm_button = QPushButton("Arm stimulation")
        self.disarm_button = QPushButton("Disarm")
        self.mapping_button = QPushButton("Pause mapping")
        self.protocol_box = QComboBox()
        self.protocol_box.setEditable(True)
        self.protocol_box.addItems(PROTOCOLS)
        self.protocol_button = QPushButton("Set protocol")
        self.arm_button.setStyleSheet("color:#ff6060; font-weight:bold")

        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(lambda: self._send(Verb.PAUSE))
        self.stop_button.clicked.connect(lambda: self._send(Verb.STOP))
        self.record_button.clicked.connect(self.toggle_record)
        self.arm_button.clicked.connect(lambda: self._send(Verb.ARM))
        self.disarm_button.clicked.connect(lambda: self._send(Verb.DISARM))
        self.mapping_button.clicked.connect(self.toggle_mapping)
        self.protocol_button.clicked.connect(
            lambda: self.set_protocol(self.protocol_box.currentText()))

        grid = QGridLayout()
        buttons = ((self.start_button, self.pause_button, self.stop_button),
                   (self.arm_button, self.disarm_button, self.record_button),
                   (self.mapping_button, self.protocol_box, self.protocol_button))
        for r, row in enumerate(buttons):
            for c, widget in enumerate(row):
                grid.addWidget(widget, r, c)
        states = QHBoxLayout()
        states.addWidget(self.record_label)
        states.addWidget(self.mapping_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(title_label("Controls"))
        layout.addWidget(self.armed_label)
        layout.addWidget(self.state_label)
        layout.addLayout(states)
        layout.addWidget(self.stimulus_label)
        layout.addLayout(grid)
        layout.addWidget(self.reply_label)
        layout.addStretch(1)

    # -- actions -------------------------------------------------------------------------
    def start(self) -> None:
        if not self.loop_alive and self._start_loop is not None:
            self._start_loop()
        else:
            self._send(Verb.START)

    def toggle_record(self) -> None:
        # RECORD carries the wanted state: the recorder starts or closes its file.
        self._send(Verb.RECORD, "*", {"on": not bool(self.recording)})

    def toggle_mapping(self) -> None:
        planner = self.planner_name or "planner"
        self._send(Verb.RESUME if self.mapping is False else Verb.PAUSE, planner)

    def set_protocol(self, name: str) -> None:
        node = self.stimulus_node or "*"
        self._send(Verb.SET, node, {"node": node, "key": "protocol", "value": name})

    def show_reply(self, request: dict, reply: dict) -> None:
        what = f"{request['verb']} -> {request['target']}"
        if reply.get("ok"):
            if request["verb"] != Verb.STATUS.value:
                self.reply_label.setText(f"sent {what}")
        else:
            self.reply_label.setText(f"{what} failed: {reply.get('error', reply)}")

    # -- state ---------------------------------------------------------------------------
    planner_name: str | None = None
    stimulus_node: str | None = None
    _armed_shown = ""  # what the armed banner shows: "armed", "disarmed", or "" (not yet)

    def refresh(self, store) -> None:
        nodes = store.nodes()
        plan = store.get_latest("stim.plan") or store.get_latest("posterior")
        if plan is not None:
            self.planner_name = plan.source
        stimulus = store.get_latest("stimulus")
        if stimulus is not None:
            self.stimulus_node = stimulus.source
            self.stimulus_label.setText(f"visual stimulus: {stimulus.meta.get('name', '?')}"
                                        f"  (protocol {stimulus.meta.get('protocol', '-')})")
        live = {n: b for n, (b, _) in nodes.items() if b.get("status") != "exited"}
        self.armed = any(b.get("armed") for b in live.values())
        self.running = any(b.get("running") for b in live.values())
        self.recording, self.recorded = _recording(live)
        planner = live.get(self.planner_name or "planner")
        self.mapping = None if planner is None else bool(planner.get("running"))
        self._show_state(live)

    def _show_state(self, live: dict) -> None:
        shown = "armed" if self.armed else "disarmed" if live else self._armed_shown
        if shown != self._armed_shown:  # a style sheet re-polishes the widget: only on a flip
            self._armed_shown = shown
            self.armed_label.setText("STIMULATION ARMED" if self.armed else
                                     "stimulation disarmed")
            self.armed_label.setStyleSheet(ARMED_STYLE if self.armed else SAFE_STYLE)
        if not self.loop_alive:
            state = "loop: stopped"
        elif not live:
            state = "loop: starting"
        else:
            state = f"loop: {'running' if self.running else 'paused'} ({len(live)} nodes)"
        self.state_label.setText(state)
        self.record_label.setText("recording: " + {None: "- (no recorder)", True: "ON",
                                                    False: "off"}[self.recording]
                                  + (f" ({self.recorded})" if self.recorded else ""))
        self.record_button.setText("Stop recording" if self.recording else "Record")
        self.mapping_label.setText("mapping: " + {None: "- (no planner)", True: "running",
                                                  False: "paused"}[self.mapping])
        self.mapping_button.setText("Resume mapping" if self.mapping is False
                                    else "Pause mapping")


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
            figures = f"{stats['recorded']} msgs, {stats.get('MB', 0)} MB, lost {stats.get('lost', 0)}"
    return state, figures
