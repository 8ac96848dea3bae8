"""The dashboard as a real X11 window (Qt's xcb plugin under Xvfb), clicked through its
controls on a real loop: what the offscreen tests cannot show is that the window opens at
all on a plain Linux machine (the xcb plugin's system libraries, see install.sh).

The window runs in a child process: a process's Qt platform is fixed when its first
QApplication starts, and this test process's is offscreen (conftest.py). pytest-xvfb starts
the X server for the session; without Xvfb the test is skipped and says what to install.
"""
import os
import subprocess
import sys

import pytest

CLICKS = r'''
import sys, time
from functools import partial
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QGuiApplication
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QApplication

app = QApplication(["rig gui test"])
from gui.app import MainWindow
from gui.loop import LoopProcess
from rig import config as cfg

assert QGuiApplication.platformName() == "xcb", QGuiApplication.platformName()
launcher = partial(LoopProcess.for_config, cfg.builtin("selftest"), sys.argv[1], "xvfb",
                   ("nodes.source.n_neurons=50", "nodes.source.rate_hz=10"))
win = MainWindow(launcher=launcher)
win.resize(1366, 768)
win.show()
controls = win.panels["controls"]
controls.confirm = lambda *_: True  # the Arm and Stop dialogs, answered Yes

def wait(what, condition, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            print(f"FAIL: {what}; state: {controls.state_label.text()!r}, "
                  f"banner: {controls.armed_label.text()!r}, "
                  f"reply: {controls.reply_label.text()!r}", flush=True)
            win.close()
            sys.exit(1)
        app.processEvents()
        time.sleep(0.02)
    print("ok:", what, flush=True)

def click(button):
    wait(f"{button.text()} can be clicked", lambda: button.isVisible() and button.isEnabled(),
         5.0)
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)

try:
    wait("the window is exposed", lambda: win.isVisible() and win.windowHandle().isExposed())
    wait("running", lambda: win.state.state == "running")
    click(controls.pause_button)
    wait("paused, Start reads Resume", lambda: win.state.state == "paused"
         and controls.start_button.text() == "Resume")
    click(controls.start_button)
    wait("running again", lambda: win.state.state == "running")
    click(controls.arm_button)
    wait("armed", lambda: controls.armed_label.text() == "STIMULATION ARMED")
    click(controls.disarm_button)
    wait("disarmed", lambda: controls.armed_label.text() == "stimulation disarmed")
    click(controls.stop_button)
    wait("stopped, banner cleared", lambda: win.state.state == "stopped"
         and controls.armed_label.text() == "stimulation: off"
         and controls.start_button.text() == "Start" and controls.start_button.isEnabled())
finally:
    win.close()
print("DONE", flush=True)
'''


def test_a_real_x11_window_clicks_through_start_pause_arm_and_stop(xvfb, tmp_path):
    if xvfb is None:
        pytest.skip("no X server for a real window: Xvfb is not installed (Debian/Ubuntu: "
                    "apt-get install xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1; "
                    "./install.sh --test does it as root)")
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": f":{xvfb.display}"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
    done = subprocess.run([sys.executable, "-c", CLICKS, str(tmp_path)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=110)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "DONE" in done.stdout, out[-3000:]
