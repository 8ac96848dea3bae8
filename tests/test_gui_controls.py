"""The dashboard tells the truth about the loop and about what its buttons did.

Each test feeds a real (offscreen) window or panel the messages a loop would send (the
supervisor's STATUS reply, heartbeats, logs) and checks what a person sees and what control
requests leave. Every one of these showed something false or did something unwanted before.
"""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import numpy as np
import pytest
from PyQt6.QtCore import Qt

from gui.app import MainWindow
from gui.panels.controls import ControlsPanel
from gui.panels.health import HealthPanel, _rate
from gui.state import LoopState
from gui.store import LiveStore
from rig.messages import Message
from rig.node import Verb

NODES = ("fish", "decoder", "planner", "slm", "recorder", "camera")


def beat(store, name, status="running", running=True, armed=False, **stats):
    meta = {"status": status, "running": running, "armed": armed}
    if stats:
        meta["stats"] = stats
    store.add(Message("heartbeat", meta=meta, source=name))


class Sent(list):
    def __call__(self, verb, target="*", args=None):
        self.append((Verb(verb), target, args))


@pytest.fixture
def window(qtbot):
    """A window with a stand-in control channel: requests are recorded, not sent."""
    win = MainWindow()
    qtbot.addWidget(win)
    for timer in (win.redraw_timer, win.status_timer, win.loop_timer):
        timer.stop()
    win.sent = Sent()
    win.send = win.sent
    win.panels["controls"]._send = win.sent
    win.panels["controls"].confirm = lambda *_: True
    win.bus = _Stoppable()  # attached: the loop is there (its state is in the messages)
    yield win
    win.bus = None
    win.close()


def status(win, **statuses):
    win._on_reply({"verb": "status"}, {"ok": True, "status": {
        n: {"status": statuses.get(n, "starting"), "restarts": 0} for n in NODES}})


def test_start_up_says_starting_with_nodes_ready_and_what_is_loading(window):
    status(window, fish="ready", planner="ready", slm="ready", recorder="ready")
    for name in ("fish", "planner", "slm", "recorder"):
        beat(window.store, name, status="ready", running=False)
    window.redraw(everything=True)
    text = window.panels["controls"].state_label.text()
    assert text.startswith("loop: starting") and "4/6 nodes ready" in text
    assert "waiting for camera, decoder" in text and "paused" not in text
    assert window.panels["controls"].mapping_button.text() == "Pause mapping"
    beat(window.store, "decoder", status="ready", running=False, phase="loading")
    window.redraw(everything=True)
    assert "decoder loading" in window.panels["controls"].state_label.text()


def test_decoder_fitting_says_when_it_will_be_ready(window):
    for name in NODES:
        beat(window.store, name)
    beat(window.store, "decoder", phase="fitting", ready=False)  # no estimate: says so
    window.redraw(everything=True)
    assert "decoder fitting" in window.panels["behaviour"].info.text()
    beat(window.store, "decoder", phase="fitting", ready_in_s=23.2)
    window.redraw(everything=True)
    assert "decoder fitting, ready in 23 s" in window.panels["behaviour"].info.text()
    assert window.panels["controls"].state_label.text().startswith("loop: running")


def test_start_reads_resume_when_paused_and_keeps_a_paused_mapping_paused(window, qtbot):
    for name in NODES:
        beat(window.store, name)
    window.store.add(Message("posterior", meta={"n_stims": 3}, source="planner"))
    window.redraw(everything=True)
    controls = window.panels["controls"]
    assert controls.start_button.text() == "Start" and not controls.start_button.isEnabled()
    qtbot.mouseClick(controls.mapping_button, Qt.MouseButton.LeftButton)
    beat(window.store, "planner", running=False)  # the user paused mapping
    qtbot.mouseClick(controls.pause_button, Qt.MouseButton.LeftButton)
    for name in NODES:
        beat(window.store, name, running=False)
    window.redraw(everything=True)
    assert controls.state_label.text().startswith("loop: paused")
    assert controls.start_button.text() == "Resume" and controls.start_button.isEnabled()
    assert controls.mapping_label.text() == "mapping: paused"
    window.sent.clear()
    qtbot.mouseClick(controls.start_button, Qt.MouseButton.LeftButton)
    assert [(v, t) for v, t, _ in window.sent] == [(Verb.START, "*"), (Verb.PAUSE, "planner")]


def test_a_refused_protocol_is_reported_in_the_reply_line(window, qtbot):
    for name in NODES:
        beat(window.store, name)
    window.store.add(Message("stimulus", meta={"name": "still", "protocol": "default"},
                             source="fish"))
    window.redraw(everything=True)
    controls = window.panels["controls"]
    controls.protocol_box.setCurrentText("foo")
    qtbot.mouseClick(controls.protocol_button, Qt.MouseButton.LeftButton)
    assert window.sent[-1] == (Verb.SET, "fish", {"node": "fish", "key": "protocol",
                                                  "value": "foo"})
    controls.show_reply({"verb": "set", "target": "fish"}, {"ok": True})
    window.redraw(everything=True)
    assert "waiting" in controls.reply_label.text()
    window.store.add(Message("log", meta={"level": "warning",
                                          "text": "protocol 'foo': unknown stimulus 'foo'"},
                             source="fish"))
    window.redraw(everything=True)
    assert controls.reply_label.text() == ("protocol 'foo': refused by fish: protocol 'foo': "
                                           "unknown stimulus 'foo'")


def test_an_accepted_protocol_reads_done_once_the_stimulus_node_reports_it(window, qtbot):
    window.store.add(Message("stimulus", meta={"name": "still", "protocol": "default"},
                             source="fish"))
    window.redraw(everything=True)
    controls = window.panels["controls"]
    controls.protocol_box.setCurrentText("forward")
    qtbot.mouseClick(controls.protocol_button, Qt.MouseButton.LeftButton)
    window.store.add(Message("stimulus", meta={"name": "forward", "protocol": "forward"},
                             source="fish"))
    window.redraw(everything=True)
    assert controls.reply_label.text() == "protocol 'forward': done"


def test_arm_and_stop_ask_first_and_send_nothing_when_declined(qtbot):
    sent = Sent()
    asked = []
    panel = ControlsPanel(sent, confirm=lambda _p, title, _t: asked.append(title) or False)
    qtbot.addWidget(panel)
    panel.loop = LoopState("running")
    panel.refresh(LiveStore())
    qtbot.mouseClick(panel.arm_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    assert sent == [] and asked == ["Arm stimulation?", "Stop the loop?"]
    assert panel.reply_label.text() == "stop: cancelled"
    panel.confirm = lambda *_: True
    qtbot.mouseClick(panel.arm_button, Qt.MouseButton.LeftButton)
    assert sent == [(Verb.ARM, "*", None)]


def test_armed_banner_is_cleared_when_the_loop_has_stopped(qtbot):
    panel = ControlsPanel(Sent())
    qtbot.addWidget(panel)
    store = LiveStore()
    beat(store, "slm", armed=True)  # its last heartbeat before the loop went away
    panel.loop = LoopState("running")
    panel.refresh(store)
    assert panel.armed_label.text() == "STIMULATION ARMED"
    panel.loop = LoopState("stopped")
    panel.refresh(store)
    assert panel.armed_label.text() == "stimulation: off" and not panel.armed


def test_buttons_stay_put_when_the_state_lines_change(qtbot):
    panel = ControlsPanel(Sent(), start_loop=lambda: None)
    qtbot.addWidget(panel)
    panel.resize(420, 330)
    panel.show()
    store = LiveStore()
    beat(store, "slm", armed=True)
    panel.loop = LoopState("running")
    panel.refresh(store)
    qtbot.waitExposed(panel)
    before = [b.mapTo(panel, b.rect().topLeft()) for b in (panel.start_button,
                                                           panel.stop_button)]
    panel.loop = LoopState("stopped", "the loop ended (exit code 0); its output: "
                                      "/a/long/run/folder/name/loop-output.log")
    panel.reply_label.setText("stop: done, and a long explanation that wraps onto a second "
                              "line in a narrow panel")
    panel.refresh(store)
    qtbot.wait(10)
    after = [b.mapTo(panel, b.rect().topLeft()) for b in (panel.start_button,
                                                          panel.stop_button)]
    assert before == after


def test_health_lists_every_node_and_slow_rates_keep_their_figures(qtbot):
    panel = HealthPanel()
    qtbot.addWidget(panel)
    panel.resize(380, 420)
    panel.show()
    store = LiveStore()
    panel.set_supervisor_status({n: {"status": "starting"} for n in NODES})
    for name in NODES[:4]:
        beat(store, name)
    panel.refresh(store)
    table = panel.nodes_table
    assert table.rowCount() == 6
    shown = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(6)}
    assert shown["slm"] == "running" and shown["camera"] == "starting"
    last = table.visualRect(table.model().index(5, 0))
    assert last.bottom() <= table.viewport().height()  # the sixth row is on screen
    assert _rate(0.35) == "0.35" and _rate(30.0) == "30" and _rate(0) == "0"


def test_a_repeated_event_is_counted_not_repeated(qtbot):
    panel = HealthPanel()
    qtbot.addWidget(panel)
    store = LiveStore()
    store.add(Message("log", meta={"level": "warning", "text": "protocol 'x': unknown"},
                      source="fish"))
    for _ in range(50):
        store.add(Message("log", meta={"level": "WARNING",
                                       "text": "stimulation refused: not armed"}, source="slm"))
    panel.refresh(store)
    text = panel.events.text()
    assert text.count("not armed") == 1 and "(x50)" in text and "protocol 'x'" in text


def test_a_new_run_starts_on_empty_panels(window):
    from test_gui_panels import anatomy_messages, fish, frame_messages, posterior_message

    positions, regions, presyn = fish()
    rng = np.random.default_rng(0)
    for msg in anatomy_messages(positions, regions, presyn):
        window.store.add(msg)
    for f in range(40):
        for msg in frame_messages(f, rng, 0.1):
            window.store.add(msg)
    window.store.add(Message("stim.plan", {"targets": np.array([1, 2], np.int32)}))
    window.store.add(posterior_message(presyn, np.arange(60), 7))
    window.redraw(everything=True)
    old = dict(window.panels)
    assert old["activity"].n > 0 and old["anatomy"].ensemble.size == 2
    window._new_run()
    window.redraw(everything=True)
    panels = window.panels
    assert panels["activity"].n == 0 and not panels["activity"]._img.any()
    assert panels["anatomy"].ensemble.size == 0
    assert panels["connectivity"].count.text() == "stimulations: 0"
    assert panels["controls"] is old["controls"]  # kept: it holds the last request's reply
    assert all(window.docks[name].widget() is panel for name, panel in panels.items())


def test_an_attached_window_sees_the_loop_end(window):
    for name in NODES:
        beat(window.store, name)
    window.redraw(everything=True)
    assert window.panels["controls"].state_label.text().startswith("loop: running")
    for name in NODES:
        beat(window.store, name, status="exited", running=False)
    window._check_loop()
    window.redraw(everything=True)
    assert window.ended == "every node exited"
    assert window.panels["controls"].state_label.text() == "loop: ended (every node exited)"


class _Stoppable:
    def stop(self):
        pass


def test_replay_banner_shows_the_session_speed_and_position(qtbot):
    win = MainWindow(replay="day1.mcap at 2x")
    qtbot.addWidget(win)
    win.redraw_timer.stop()
    for f in range(61):
        win.store.add(Message("traces", {"dff": np.zeros(5, np.float32)}, frame=f,
                              t_acq_ns=10**18 + f * 1_000_000_000))
    win.redraw(everything=True)
    controls = win.panels["controls"]
    assert controls.replay_label.text() == "REPLAY day1.mcap at 2x, at 1:00"
    assert controls.seek_button.isVisibleTo(controls)
    beat(win.store, "replay", sent=100, position_s=83.4)  # where the replay node says it is
    win.redraw(everything=True)
    assert controls.replay_label.text() == "REPLAY day1.mcap at 2x, at 1:23"
    sent = controls._send = Sent()
    controls.seek_box.setValue(30)
    qtbot.mouseClick(controls.seek_button, Qt.MouseButton.LeftButton)
    assert sent == [(Verb.SET, "replay", {"node": "replay", "key": "seek", "value": 30.0})]
    beat(win.store, "replay", sent=120, position_s=30.2)
    win.redraw(everything=True)
    assert controls.reply_label.text() == "seek to 30 s: done"
    win.close()


def test_pausing_the_simulated_loop_is_not_counted_as_dropped_camera_frames(tmp_path):
    from test_camera_node import _node

    from sims.camera import SimCamera

    node, _ = _node(SimCamera, {}, tmp_path)
    angles = np.zeros((200, 8), np.float32)
    t0 = 10**18
    for k, start in enumerate((t0, t0 + 60 * 10**9)):  # resumed a minute later
        t_ns = start + np.arange(100, dtype=np.int64) * 5_000_000
        node.on_message(Message("sim.tail", {"angles": angles[:100], "t_ns": t_ns},
                                {"camera_rate_hz": 200.0}, k, int(t_ns[-1])))
        if k == 0:
            node.on_control(Verb.PAUSE, {})
            node.on_control(Verb.START, {})
    assert node.stats()["dropped"] == 0 and node.stats()["frames"] == 200


def test_the_replay_node_seeks_forward_and_back_when_the_dashboard_asks(proxy, tmp_path):
    import time

    from rig.bus import Endpoints, Publisher, Subscriber, wait_connected
    from rig.messages import encode
    from rig.node import NodeSpec
    from rig.recording.format import RecordingWriter
    from rig.recording.replay import Replay

    path = tmp_path / "session.mcap"
    writer = RecordingWriter(path)
    for f in range(200):  # 2 s of frames, 10 ms apart
        t = 10**18 + f * 10_000_000
        frames = encode(Message("traces", {"dff": np.full(3, f, np.float32)}, frame=f,
                                t_acq_ns=t), t_send_ns=t)
        writer.add("traces", frames[1:], t, t, f)
    writer.close()
    spec = NodeSpec("replay", "rig.recording.replay:Replay",
                    {"path": str(path), "speed": 1.0, "stop_at_end": False},
                    Endpoints(proxy.pub, proxy.sub, "tcp://127.0.0.1:9"), str(tmp_path))
    pub = Publisher(proxy.pub, "replay")
    sub = Subscriber(proxy.sub, (), 0)
    node = Replay(spec, pub)
    try:
        wait_connected(pub, sub, "_hello.test")
        sub.subscribe("traces")
        node.setup()
        node.on_control(Verb.SET, {"key": "seek", "value": 1.5})  # before the start
        node.on_control(Verb.START, {})
        got = []
        deadline = time.monotonic() + 30
        while (not got or got[-1] != 199) and time.monotonic() < deadline:
            msg = sub.recv(timeout_ms=100)
            if msg is None:
                continue
            got.append(msg.frame)
            if got[-1] == 170 and got.count(170) == 1:
                node.on_control(Verb.SET, {"key": "seek", "value": 0.5})  # and back
        assert got[:2] == [0, 150]  # the first frame was on its way; then 1.5 s in
        back = int(np.flatnonzero(np.diff(got) < 0)[0]) + 1  # frames sent before it acted
        assert got[1:back] == list(range(150, got[back - 1] + 1)) and got[back - 1] >= 170
        assert got[back:] == list(range(50, 200))
        assert node.stats()["position_s"] == pytest.approx(1.99)
        with pytest.raises(ValueError, match="seek -1.0: must be >= 0 s"):
            node.on_control(Verb.SET, {"key": "seek", "value": -1})
    finally:
        node.teardown()
        pub.close()
        sub.close()
