"""The dashboard on the built-in simulated loop (`rig gui --sim`), kept light: a small fish,
the simulated camera, no decoder backbone (loading it takes a minute on two busy cores) and
no recorder. The panels that the simulator and camera feed must fill, and closing the
window must stop every process of the loop.
"""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

from functools import partial

import psutil

from gui.app import MainWindow
from gui.loop import LoopProcess
from rig import config as cfg

N = 300
SETS = (f"nodes.fish.n_neurons={N}", "nodes.fish.volume_rate_hz=4", "nodes.fish.save_truth=false",
        "nodes.decoder.enabled=false", "nodes.recorder.enabled=false")


def test_sim_loop_fills_activity_anatomy_behaviour_and_camera_then_stops_on_close(
        qapp, qtbot, tmp_path):
    launcher = partial(LoopProcess.for_config, cfg.builtin("sim"), str(tmp_path), "gui-sim", SETS)
    window = MainWindow(launcher=launcher)
    qtbot.addWidget(window)
    panels = window.panels
    try:
        qtbot.waitUntil(lambda: panels["activity"].n == N, timeout=90_000)
        qtbot.waitUntil(lambda: panels["anatomy"].n == N, timeout=10_000)
        qtbot.waitUntil(lambda: panels["behaviour"].observed in ("camera", "true (sim)"),
                        timeout=10_000)
        qtbot.waitUntil(lambda: panels["camera"].image.image is not None, timeout=20_000)
        # sim.toml arms on start: the banner must say so once the nodes report it.
        qtbot.waitUntil(lambda: panels["controls"].armed, timeout=10_000)
        processes = [psutil.Process(window.loop.pid),
                     *psutil.Process(window.loop.pid).children(recursive=True)]
    finally:
        window.close()
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, f"still running after close: {alive}"
