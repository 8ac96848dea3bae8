"""The dashboard's views against synthetic messages with the loop's fields: the imaging
plane, each stimulation's response, marks on the time axes, legible axes and scales, and a
layout that fits a laptop screen and is kept between sessions."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import numpy as np
import pytest
from PyQt6.QtCore import QSettings

from gui.app import MainWindow
from gui.panels.activity import ActivityPanel
from gui.panels.behaviour import BehaviourPanel
from gui.panels.connectivity import summary_text
from gui.panels.plane import PlanePanel
from gui.panels.stimulation import StimulationPanel
from gui.store import LiveStore, frame_interval
from rig.messages import Message

N = 300
T0 = 10**18
DT = 500_000_000  # 2 frames/s, ns


def anatomy(store, seed=0):
    rng = np.random.default_rng(seed)
    positions = np.column_stack([rng.uniform(0, 800, N), rng.uniform(-200, 200, N),
                                 rng.uniform(100, 160, N)]).astype(np.float32)
    store.add(Message("anatomy", {"positions": positions,
                                  "regions": np.zeros(N, np.int16)}, {"region_names": ["a"]}))
    return positions


def frames(store, first, last, dff=None, targets=(), fire_at=None):
    """Traces for frames [first, last); ``targets`` respond +1 dF/F after ``fire_at``."""
    rng = np.random.default_rng(first)
    for f in range(first, last):
        row = 0.01 * rng.standard_normal(N).astype(np.float32) if dff is None else dff
        if fire_at is not None and f > fire_at:
            row = row.copy()
            row[list(targets)] += 1.0
            row[7] += 0.5  # a responder that was not stimulated
        store.add(Message("traces", {"dff": row}, frame=f, t_acq_ns=T0 + f * DT))
        if f == fire_at:
            store.add(Message("stim.fired", {"targets": np.array(targets, np.int32)},
                              frame=f, t_acq_ns=T0 + f * DT))


def test_each_stimulation_reports_its_targets_responses_and_strongest_responders(qtbot):
    store = LiveStore()
    frames(store, 0, 40, targets=(3, 4, 5), fire_at=20)
    responses = store.responses
    assert len(responses.items) == 1 and responses.window == (4, 6)  # 2 s and 3 s at 2 Hz
    latest = responses.items[0]
    assert latest.frame == 20 and latest.targets.tolist() == [3, 4, 5]
    np.testing.assert_allclose(latest.target_response, 1.0, atol=0.05)
    assert latest.top_ids[0] == 7 and latest.top_response[0] == pytest.approx(0.5, abs=0.05)
    sta = responses.sta_targets / responses.sta_n
    assert abs(sta[:5]).max() < 0.05 and np.allclose(sta[5:], 1.0, atol=0.05)  # after 0 only
    panel = StimulationPanel()
    qtbot.addWidget(panel)
    panel.refresh(store)
    assert "1 fired; latest: 3 targets, mean +1.00 dF/F; strongest #7 +0.50" in panel.info.text()
    x, y = panel.sta_targets.getData()
    assert x[0] == pytest.approx(-2.0) and x[-1] == pytest.approx(3.0)


def test_a_stimulation_whose_frames_are_lost_is_skipped_not_misread():
    store = LiveStore()
    frames(store, 0, 20)
    store.add(Message("stim.fired", {"targets": np.array([1], np.int32)}, frame=19))
    frames(store, 40, 60)  # frames 20-39 never came
    assert len(store.responses.items) == 0 and not store.responses.pending


def test_mapping_progress_shows_precision_recall_and_stimulations_left(qtbot):
    store = LiveStore()
    for n in (10, 20, 30):
        store.add(Message("posterior", meta={"n_stims": n, "precision": n / 40,
                                             "recall": n / 60, "stims_to_go": 90 - n}))
    panel = StimulationPanel()
    qtbot.addWidget(panel)
    panel.refresh(store)
    x, y = panel.precision_curve.getData()
    assert x.tolist() == [10, 20, 30] and y[-1] == pytest.approx(0.75)
    assert panel.progress_info.text() == ("mapping: after 30 stimulations; precision 0.75, "
                                          "recall 0.50 vs truth; about 60 more expected")


def test_imaging_plane_draws_a_slab_and_a_click_on_a_cell_adds_its_trace(qtbot):
    store = LiveStore()
    positions = anatomy(store)
    frames(store, 0, 10, dff=np.linspace(0, 2, N, dtype=np.float32))
    store.add(Message("stim.plan", {"targets": np.arange(N, dtype=np.int32)}))
    activity = ActivityPanel()
    plane = PlanePanel(on_pick=activity.add_selected)
    activity.selection_changed = plane.set_selected
    for panel in (activity, plane):
        qtbot.addWidget(panel)
    plane.refresh(store)
    assert sum(len(ids) for ids in plane.planes) == N and len(plane.planes) == 3
    ids = plane.planes[plane.plane]
    assert len(ids) == max(len(p) for p in plane.planes)  # the fullest slab first
    assert plane.image.image.max() > 200  # the most active cells at the top of the scale
    assert len(plane.planned.data) == len(ids)  # every target in this slab, no other
    cell = int(ids[0])
    assert plane.pick_at(*positions[cell, :2] + 2.0) == cell
    assert activity.selected[-1] == cell and cell in plane.selected
    assert plane.pick_at(5000.0, 5000.0) is None
    plane.set_plane((plane.plane + 1) % 3)
    assert plane.outlines.data.size == len(plane.planes[plane.plane])


def test_microscope_frames_keep_a_running_mean_per_plane():
    store = LiveStore()
    for k in range(4):
        store.add(Message("frame", {"image": np.full((8, 8), 100 * k, np.uint16)},
                          {"plane": 1}, frame=k))
    kept = store.planes[1]
    assert kept["latest"].max() == 300 and kept["mean"][0, 0] == pytest.approx(150.0)


def shown_x(item) -> np.ndarray:
    """Where a curve's points are on its plot's x axis (its data moved by its position)."""
    return item.getData()[0] + item.pos().x()


def test_stimulations_epochs_and_bouts_are_marked_on_the_time_axes(qtbot):
    store = LiveStore()
    for f in range(40):
        t = T0 + f * DT
        store.add(Message("traces", {"dff": np.zeros(N, np.float32)}, frame=f, t_acq_ns=t))
        store.add(Message("tail", {"angles": np.zeros(8, np.float32)}, frame=f, t_acq_ns=t))
        store.add(Message("decoded", {"pred": np.zeros(8, np.float32)}, frame=f, t_acq_ns=t))
        store.add(Message("stimulus", meta={"name": "forward" if f < 20 else "still"},
                          frame=f, t_acq_ns=t))
        store.add(Message("behaviour", {"angles": np.zeros(8, np.float32)},
                          {"bout": 10 <= f < 15}, frame=f, t_acq_ns=t))
        if f in (5, 25):
            store.add(Message("stim.fired", {"targets": np.array([1], np.int32)}, frame=f,
                              t_acq_ns=t))
    marks = store.marks
    assert [name for _, name in marks.epochs] == ["forward", "still"]
    assert [list(b) for b in marks.bouts] == [[T0 + 10 * DT, T0 + 15 * DT]]
    assert list(marks.stims) == [T0 + 5 * DT, T0 + 25 * DT]
    panel = BehaviourPanel()
    qtbot.addWidget(panel)
    panel.refresh(store)
    x = shown_x(panel.marks.stim_lines)
    np.testing.assert_allclose(x, [-17.0, -17.0, -7.0, -7.0])  # seconds before the newest
    np.testing.assert_allclose(shown_x(panel.marks.bout_bars), [-14.5, -12.0])
    assert [label.toPlainText() for label in panel.marks.labels if label.toPlainText()] == \
        ["forward", "still"]


def test_behaviour_keeps_decoded_and_observed_apart_from_the_raw_camera(qtbot):
    store = LiveStore()
    for f in range(60):
        t = T0 + f * DT
        tail = np.full(8, np.radians(3.0) * np.sin(f / 5), np.float32)
        store.add(Message("tail", {"angles": tail}, frame=f, t_acq_ns=t))
        store.add(Message("decoded", {"pred": tail * 0.9}, frame=f, t_acq_ns=t))
        store.add(Message("behaviour", {"angles": tail}, {"cum_angle": np.radians(60.0)
                                                          * (f % 2), "vigour": 0.1},
                          frame=f, t_acq_ns=t))
    panel = BehaviourPanel()
    qtbot.addWidget(panel)
    panel.refresh(store)
    top = panel.plot.getViewBox().childrenBounds()[1]
    assert top[1] - top[0] < 10  # the +-3 deg signals set their own axis, not the 60 deg
    assert panel.camera_curve in panel.camera_plot.items
    assert panel.camera_curve not in panel.plot.items
    labels = [panel.plot.getAxis("left").labelString(),
              panel.r_plot.getAxis("bottom").labelString()]
    assert not any("mdeg" in text or "(ms)" in text for text in labels)


def test_frame_rate_is_not_diluted_by_a_pause_or_a_burst():
    store = LiveStore()
    for f in range(40):
        pause = 30 * 10**9 if f >= 20 else 0  # the loop was paused 30 s after frame 19
        store.add(Message("traces", {"dff": np.zeros(3, np.float32)}, frame=f,
                          t_acq_ns=T0 + f * DT + pause))
    assert frame_interval(store.traces) == pytest.approx(0.5)
    few = LiveStore()
    for f in range(3):
        few.add(Message("traces", {"dff": np.zeros(3, np.float32)}, frame=f,
                        t_acq_ns=T0 + f * 1_000_000))
    assert frame_interval(few.traces) == 0.0  # too few frames to say: not "1000 frames/s"


def test_every_scale_has_a_colour_bar_and_the_posterior_reads_as_sentences(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.redraw_timer.stop()
    panels = win.panels
    assert panels["activity"].colour_bar.levels() == (-0.5, 3.0)
    assert panels["plane"].bar.levels() == (0.0, 1.0)
    assert panels["anatomy"].bar.levels() == (0.0, 2.0)
    assert [bar.levels() for bar in panels["connectivity"].bars] == [(-3.0, 0.0), (0.0, 1.0)]
    panels["anatomy"].set_mode("salience")
    assert panels["anatomy"].bar.levels() == (0.0, 1.0)
    win.close()
    text = summary_text({"n_stims": 30, "confident_fraction": 0.999, "unsure": 1234,
                         "edges_mean": 95.2, "edges_ci95": [80.0, 110.0], "precision": 0.0,
                         "recall": 0.0, "confounded": 2})
    assert text == ("expected connections 95.2 (95%: 80-110); 1,234 pairs still unsure; "
                    "99.9% of pairs settled (almost all as 'no connection'); vs truth: "
                    "precision 0, recall 0; 2 stimulations confounded by bouts")


def test_the_window_fits_a_1366_by_768_screen_with_every_panel_usable(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.redraw_timer.stop()
    win.resize(1366, 768)
    win.show()
    qtbot.waitExposed(win)
    win.default_layout(1366)
    qtbot.wait(50)
    hint = win.minimumSizeHint()
    assert hint.width() <= 1366 and hint.height() <= 768
    assert win.width() <= 1366 and win.height() <= 768
    visible = [name for name, dock in win.docks.items() if not dock.visibleRegion().isEmpty()]
    assert set(visible) == {"activity", "behaviour", "plane", "stimulation", "controls",
                            "camera"}
    tabbed = {win.docks[name].windowTitle() for dock in ("plane", "stimulation", "camera")
              for name in ("anatomy", "connectivity", "health")
              if win.docks[name] in win.tabifiedDockWidgets(win.docks[dock])}
    assert tabbed == {"Anatomy", "Connectivity", "Loop health"}  # one click away
    for name in visible:
        size = win.docks[name].widget().size()
        assert size.width() >= 280 and size.height() >= 150, (name, size)
    controls = win.panels["controls"]
    assert controls.reply_label.isVisible() and controls.stop_button.isVisible()
    win.close()


def test_the_dock_arrangement_is_kept_between_sessions(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "rig.ini"), QSettings.Format.IniFormat)
    first = MainWindow(settings=settings)
    qtbot.addWidget(first)
    first.resize(1600, 900)
    first.show()
    first.docks["health"].close()  # a person closed one panel ...
    first.docks["anatomy"].setFloating(True)  # ... and floated another
    first.close()
    again = MainWindow(settings=QSettings(str(tmp_path / "rig.ini"),
                                          QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    again.show()
    assert again.docks["health"].isHidden() and again.docks["anatomy"].isFloating()
    assert not again.docks["activity"].isHidden()
    again.close()
