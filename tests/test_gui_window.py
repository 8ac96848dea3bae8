"""The real dashboard window, offscreen, driving a real loop (the bus self-test config).

The window launches the loop itself (a `rig run` child process, as `rig gui` does), so these
tests cover start-up, the bus thread, redraws, every control through the supervisor's
control channel, and shutdown of every process when the window closes.
"""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

from functools import partial

import numpy as np
import psutil
import pytest
from PyQt6.QtCore import Qt

from gui.app import MainWindow
from gui.loop import LoopProcess
from rig import config as cfg

N = 300  # neurons: enough for a real raster, light for two busy cores
SETS = (f"nodes.source.n_neurons={N}", "nodes.source.rate_hz=30")
START_S = 60_000  # ms: spawning a loop on a loaded 2-core machine can take a while


def launcher(tmp_path):
    return partial(LoopProcess.for_config, cfg.builtin("selftest"), str(tmp_path), "gui-test",
                   SETS)


def beats(window):
    return {name: meta for name, (meta, _) in window.store.nodes().items()}


def all_report(window, key, value):
    nodes = beats(window)
    return len(nodes) == 2 and all(m.get(key) is value for m in nodes.values())


def loop_processes(window):
    parent = psutil.Process(window.loop.pid)
    return [parent, *parent.children(recursive=True)]


@pytest.fixture(scope="module")
def window(qapp, tmp_path_factory):
    win = MainWindow(launcher=launcher(tmp_path_factory.mktemp("gui")))
    win.panels["controls"].confirm = lambda *_: True  # Arm and Stop ask first
    win.resize(1400, 900)
    win.show()
    yield win
    win.close()


def click(qtbot, button):
    # A button is enabled when the panel has seen the state it applies to (it refreshes a
    # few times a second from the heartbeats): Pause while running, Resume while paused.
    qtbot.waitUntil(button.isEnabled, timeout=5_000)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_panels_fill_from_a_running_loop(window, qtbot):
    qtbot.waitUntil(lambda: all_report(window, "running", True), timeout=START_S)
    activity, health = window.panels["activity"], window.panels["health"]
    qtbot.waitUntil(lambda: activity.n == N and activity._img.any(), timeout=10_000)
    health.refresh(window.store)
    shown = {health.nodes_table.item(r, 0).text() for r in range(health.nodes_table.rowCount())}
    assert shown == {"source", "sink"}
    qtbot.waitUntil(lambda: "sink<-traces" in health.edges, timeout=10_000)
    assert health.edges["sink<-traces"]["age"].n > 0
    assert window.redraws > 0 and window.store.rates()["traces"] > 0


def test_pause_and_start_buttons_change_the_loop_state(window, qtbot):
    controls = window.panels["controls"]
    qtbot.waitUntil(lambda: all_report(window, "running", True), timeout=START_S)
    click(qtbot, controls.pause_button)
    qtbot.waitUntil(lambda: all_report(window, "running", False), timeout=10_000)
    qtbot.waitUntil(lambda: "paused" in controls.state_label.text(), timeout=5_000)
    assert controls.start_button.text() == "Resume"
    click(qtbot, controls.start_button)
    qtbot.waitUntil(lambda: all_report(window, "running", True), timeout=10_000)


def test_arm_shows_armed_state_reported_by_the_nodes(window, qtbot):
    controls = window.panels["controls"]
    qtbot.waitUntil(lambda: all_report(window, "armed", False), timeout=START_S)
    assert "disarmed" in controls.armed_label.text()
    click(qtbot, controls.arm_button)
    qtbot.waitUntil(lambda: all_report(window, "armed", True), timeout=10_000)
    qtbot.waitUntil(lambda: controls.armed_label.text() == "STIMULATION ARMED", timeout=5_000)
    click(qtbot, controls.disarm_button)
    qtbot.waitUntil(lambda: all_report(window, "armed", False), timeout=10_000)
    qtbot.waitUntil(lambda: "disarmed" in controls.armed_label.text(), timeout=5_000)


def test_activity_sorts_by_activity_and_traces_follow_the_selection(window, qtbot):
    activity, controls = window.panels["activity"], window.panels["controls"]
    qtbot.waitUntil(lambda: activity.n == N, timeout=START_S)
    qtbot.waitUntil(lambda: all_report(window, "running", True), timeout=START_S)
    click(qtbot, controls.pause_button)  # no new frames: the order can be checked exactly
    qtbot.waitUntil(lambda: all_report(window, "running", False), timeout=10_000)
    try:
        activity.set_sort("activity")
        activity.set_selected([5, 7])
        qtbot.waitUntil(lambda: not activity._need_rebuild, timeout=5_000)
        assert sorted(activity._order.tolist()) == list(range(N))
        rows = window.store.last_frames("traces", activity.window)[0]
        variance = rows.var(axis=0)[activity._order]
        assert np.all(np.diff(variance) <= 0)  # display order: most variable neuron first
        assert activity._order.tolist() == np.argsort(-rows.var(axis=0), kind="stable").tolist()
        x, y = activity.trace_curve.getData()
        assert x is not None and len(y) > 0
    finally:
        click(qtbot, controls.start_button)
        qtbot.waitUntil(lambda: all_report(window, "running", True), timeout=10_000)


def test_screenshot_writes_an_image_of_the_window(window, qtbot, tmp_path):
    qtbot.waitUntil(lambda: window.panels["activity"].n == N, timeout=START_S)
    path = window.save_screenshot(tmp_path / "shot.png")
    assert path.stat().st_size > 10_000


def test_closing_the_window_stops_every_process(window, qtbot):
    qtbot.waitUntil(lambda: all_report(window, "running", True), timeout=START_S)
    processes = loop_processes(window)
    assert len(processes) >= 3  # the supervisor and its two nodes
    window.close()
    gone, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, f"still running after close: {alive}"
    assert window.bus is None


def test_stop_ends_the_loop_and_start_launches_a_new_one(qapp, qtbot, tmp_path):
    win = MainWindow(launcher=launcher(tmp_path))
    qtbot.addWidget(win)
    controls = win.panels["controls"]
    controls.confirm = lambda *_: True
    try:
        qtbot.waitUntil(lambda: all_report(win, "running", True), timeout=START_S)
        first = win.loop
        click(qtbot, controls.stop_button)
        qtbot.waitUntil(lambda: win.loop is None, timeout=15_000)
        assert first.process.returncode == 0 and not first.alive()
        qtbot.waitUntil(lambda: controls.state_label.text().startswith("loop: stopped"),
                        timeout=5_000)
        assert controls.start_button.text() == "Start" and controls.start_button.isEnabled()
        for _ in range(3):  # the loop timer's ticks: the ended run is not attached again
            win._check_loop()
        assert win.bus is None and win.loop is None
        assert win.panels["activity"].n == N  # the last run's data stays shown until Start
        assert str(first.run_dir) in win.loop_error
        click(qtbot, controls.start_button)
        assert win.loop is not first
        assert win.panels["activity"].n == 0  # a new run starts on empty panels
        qtbot.waitUntil(lambda: all_report(win, "running", True), timeout=START_S)
    finally:
        win.close()
    assert not win.loop.alive()


def test_attached_window_leaves_a_loop_it_did_not_start_running(qapp, qtbot, tmp_path):
    loop = launcher(tmp_path)()
    loop.start()
    try:
        endpoints = loop.wait_endpoints(START_S / 1000)
        win = MainWindow(endpoints=endpoints)
        qtbot.addWidget(win)
        qtbot.waitUntil(lambda: all_report(win, "running", True), timeout=START_S)
        win.close()
        assert loop.alive()
    finally:
        assert loop.stop(loop.endpoints().control) == 0
