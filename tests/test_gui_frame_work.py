"""What keeps a dashboard frame cheap, as behaviour: a changing status repaints itself alone,
a hidden dock waits, slower panels take turns, time marks scroll by moving, time axes move
in steps, stimulation plots keep their layout, axes show plain values. (The figures these
buy are in ``rig bench gui``.)"""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import numpy as np
import pyqtgraph as pg
import pytest
from PyQt6.QtCore import QEvent, QObject
from PyQt6.QtWidgets import QApplication, QVBoxLayout, QWidget

from gui.app import REDRAW_HZ, MainWindow
from gui.panels import plain_axes
from gui.panels.activity import ActivityPanel
from gui.panels.behaviour import BehaviourPanel
from gui.panels.stimulation import StimulationPanel
from gui.store import LiveStore
from rig.messages import Message

N = 50
T0 = 10**18
DT = 33_333_333  # 30 frames/s, ns


def feed(store, first, last, fire_at=(), dt=DT):
    """Frames [first, last) of traces, tail and decoded; a stimulation at each ``fire_at``."""
    rng = np.random.default_rng(first)
    for f in range(first, last):
        t = T0 + f * dt
        store.add(Message("traces", {"dff": rng.standard_normal(N).astype(np.float32)},
                          frame=f, t_acq_ns=t))
        store.add(Message("tail", {"angles": np.zeros(8, np.float32)}, frame=f, t_acq_ns=t))
        store.add(Message("decoded", {"pred": np.zeros(8, np.float32)}, frame=f, t_acq_ns=t))
        if f in fire_at:
            store.add(Message("stim.fired", {"targets": np.array([1, 2, 3], np.int32)},
                              frame=f, t_acq_ns=t))


class EventCount(QObject):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.count = kind, 0

    def eventFilter(self, obj, event):
        self.count += event.type() == self.kind
        return False


def shown_window(qtbot, width=1366, height=768) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.redraw_timer.stop()
    window.resize(width, height)
    window.default_layout(width)
    window.show()
    QApplication.processEvents()
    return window


def test_a_changing_status_line_repaints_itself_without_relaying_out_the_window(qtbot):
    window = shown_window(qtbot)
    layouts = EventCount(QEvent.Type.LayoutRequest)
    for widget in (window, *window.docks.values()):
        widget.installEventFilter(layouts)
    for _ in range(10):  # until showing the window has finished laying it out
        layouts.count = 0
        QApplication.processEvents()
        if layouts.count == 0:
            break
    info = window.panels["activity"].info
    for k in range(5):  # the activity line changes every frame
        info.setText(f"{N} neurons  frame {k}  30 frames/s")
        QApplication.processEvents()
    assert info.text().endswith("frame 4  30 frames/s")
    assert layouts.count == 0


def test_a_panel_in_a_hidden_dock_waits_until_it_shows(qtbot):
    window = shown_window(qtbot)  # narrow: anatomy is a tab behind the imaging plane
    calls = {name: 0 for name in window.refreshers}
    window.refreshers = {name: (lambda store, name=name: calls.__setitem__(name, calls[name] + 1))
                         for name in window.refreshers}
    assert window.panels["anatomy"].visibleRegion().isEmpty()
    for tick in range(30):
        window.redraw(now=tick / 30)
    assert calls["anatomy"] == 0 and calls["plane"] > 0
    assert calls["controls"] > 0  # the loop's state is read from it, shown or not
    window.docks["anatomy"].raise_()
    QApplication.processEvents()
    for tick in range(30, 40):
        window.redraw(now=tick / 30)
    assert calls["anatomy"] > 0


def test_slower_panels_take_turns_instead_of_all_redrawing_on_one_tick(qtbot):
    window = MainWindow(fps=30)
    qtbot.addWidget(window)
    window.redraw_timer.stop()
    drawn: list[list[str]] = []
    window.refreshers = {name: (lambda store, name=name: drawn[-1].append(name))
                         for name in window.refreshers}
    slow = {name for name in window.refreshers if REDRAW_HZ.get(name, 30.0) < 30.0}
    for tick in range(60):
        drawn.append([])
        window.redraw(now=tick / 30)
    assert slow <= set(drawn[0])  # the first tick draws every panel at once
    assert max(len(slow.intersection(names)) for names in drawn[1:]) <= 3
    window.close()


def test_time_marks_scroll_by_moving_and_are_redrawn_only_when_a_mark_comes(qtbot):
    store = LiveStore()
    feed(store, 0, 60, fire_at=(30,))
    panel = ActivityPanel()
    qtbot.addWidget(panel)
    panel.refresh(store)
    ticks = panel.stim_marks.stim_lines
    path, moved = ticks.getData()[0].copy(), ticks.pos().x()
    feed(store, 60, 61)
    panel.refresh(store)
    np.testing.assert_array_equal(ticks.getData()[0], path)  # the same path...
    assert ticks.pos().x() == pytest.approx(moved - DT / 1e9)  # ...one frame further left
    shown = ticks.getData()[0] + ticks.pos().x()
    np.testing.assert_allclose(shown, -30 * DT / 1e9)  # frame 30, 30 frames before frame 60


def test_behaviour_time_axis_moves_in_steps_while_the_data_fill_it(qtbot):
    store = LiveStore()
    panel = BehaviourPanel()
    qtbot.addWidget(panel)
    ranges = set()
    for f in range(0, 600, 3):  # 20 s at 30 frames/s, drawn every 3rd frame
        feed(store, f, f + 3)
        panel.refresh(store)
        ranges.add(tuple(np.round(panel.plot.viewRange()[0], 6)))
    assert len(ranges) <= 3  # 5, 10, then 20 s
    assert min(lo for lo, _ in ranges) == pytest.approx(-20.2, abs=0.1)


def test_stimulation_plots_keep_their_layout_as_stimulations_come(qtbot):
    store = LiveStore()
    panel = StimulationPanel()
    qtbot.addWidget(panel)
    panel.resize(1000, 300)
    panel.show()
    plots = (panel.bars_plot, panel.sta_plot, panel.map_plot)

    def layout():
        QApplication.processEvents()
        return [(plot.titleLabel.text, plot.vb.sceneBoundingRect()) for plot in plots]

    half_hz = 500_000_000
    feed(store, 0, 35, fire_at=(20,), dt=half_hz)
    panel.refresh(store)
    first = layout()
    feed(store, 35, 60, fire_at=(40,), dt=half_hz)
    panel.refresh(store)
    assert "2 fired" in panel.info.text() and "at frame 40" in panel.info.text()
    assert layout() == first


def test_axes_show_plain_values_whatever_range_they_had_when_made_plain(qtbot):
    holder = QWidget()
    qtbot.addWidget(holder)
    plot = pg.PlotWidget()
    QVBoxLayout(holder).addWidget(plot)
    plot.setLabel("bottom", "s from stimulation")
    plot.setXRange(-0.7, 0.7, padding=0)  # an empty plot's range: would read "ms"
    plain_axes(holder)
    plot.setXRange(-2, 3, padding=0)
    axis = plot.getAxis("bottom")
    assert axis.tickStrings([1.0], axis.autoSIPrefixScale * axis.scale, 1.0) == ["1"]
