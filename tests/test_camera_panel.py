"""The camera panel as a real (offscreen) Qt widget: frame + trace, history, two-click tail."""
import numpy as np
import pytest

from gui.panels.camera import CameraPanel


@pytest.fixture
def panel(qtbot):
    p = CameraPanel(capacity=100, window_s=1.0)
    qtbot.addWidget(p)
    p.show()
    return p


def test_frame_and_traced_tail_are_drawn_with_fixed_levels(panel):
    img = np.full((64, 80), 200, np.uint8)
    pts = np.array([[10, 32], [20, 33], [30, 35]], np.float32)
    panel.update_frame(img, pts)
    assert panel.image.image.shape == (64, 80)
    assert tuple(panel.image.levels) == (0, 255)
    x, y = panel.trace.getData()
    np.testing.assert_allclose(x, pts[:, 0] + 0.5)
    with pytest.raises(ValueError, match="expected \\(H, W\\)"):
        panel.update_frame(np.zeros((4, 4, 3), np.uint8))


def test_float_frames_keep_the_first_frames_levels(panel):
    panel.update_frame(np.linspace(0, 5, 64 * 80, dtype=np.float32).reshape(64, 80))
    panel.update_frame(np.full((64, 80), 50.0, np.float32))  # brighter: not re-levelled
    assert tuple(panel.image.levels) == (0.0, 5.0)


def test_a_window_of_lost_frames_redraws_without_warnings(panel):
    import warnings

    panel.append(np.arange(5) / 100.0, np.nan, np.nan, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        panel.redraw()
    bx, by = panel.bout_curve.getData()
    assert np.isnan(by).all()


def test_history_keeps_the_newest_samples_in_order(panel):
    t = np.arange(150) / 100.0
    panel.append(t[:120], np.sin(t[:120]), 0.01, t[:120] > 1.0)
    for i in range(120, 150):
        panel.append(t[i], np.sin(t[i]), 0.02, True)  # one sample at a time, as it arrives
    ht, hc, hv, hb = panel.history()
    np.testing.assert_allclose(ht, t[50:])
    np.testing.assert_allclose(hc, np.sin(t[50:]))
    assert hb[-1] and not hb[0]
    panel.redraw()
    x, y = panel.cum_curve.getData()
    assert x[-1] == 0.0 and x[0] >= -1.0  # the last window_s seconds, newest at 0
    bx, by = panel.bout_curve.getData()
    assert np.isnan(by[~hb[-len(by):]]).all() and np.isfinite(by[hb[-len(by):]]).all()


def test_two_clicks_set_tail_base_then_tip(panel, qtbot):
    panel.click_at(5, 5)  # not armed: ignored
    assert panel.base is None
    panel.start_setting_tail()
    with qtbot.waitSignal(panel.geometryChanged) as sig:
        panel.click_at(100, 33)
        panel.click_at(8, 38)
    assert sig.args == [100.0, 33.0, 8.0, 38.0]
    assert panel.base == (100.0, 33.0) and panel.tip == (8.0, 38.0)


def test_stats_line_shows_lost_dropped_and_bad_frames(panel):
    panel.set_stats({"frames": 10, "lost": 2, "dropped": 3, "bad_frames": 1, "moving": True})
    text = panel.info.text()
    assert "lost 2" in text and "dropped 3" in text and "bad 1" in text and "MOVING" in text


def test_mouse_clicks_on_the_image_land_in_image_pixels(panel, qtbot):
    from PyQt6.QtCore import QPoint, QPointF, Qt

    panel.resize(600, 600)
    panel.update_frame(np.zeros((70, 148), np.uint8))
    panel.image_box.autoRange(padding=0)
    qtbot.wait(50)
    panel.start_setting_tail()
    for x, y in ((100.0, 33.0), (8.0, 38.0)):  # click the drawn centre of pixel (x, y)
        scene = panel.image_box.mapViewToScene(QPointF(x + 0.5, y + 0.5))
        widget = panel.view.mapFromScene(scene)
        qtbot.mouseClick(panel.view.viewport(), Qt.MouseButton.LeftButton,
                         pos=QPoint(widget.x(), widget.y()))
    # ~4 screen pixels per image pixel: rounding to a screen pixel moves a click < 0.2 image
    # pixels, so 0.3 catches the half-pixel offset between the view and the tracker
    assert panel.base == pytest.approx((100.0, 33.0), abs=0.3)
    assert panel.tip == pytest.approx((8.0, 38.0), abs=0.3)
    mx, my = panel.marks.getData()
    np.testing.assert_allclose(mx, np.array([panel.base[0], panel.tip[0]]) + 0.5)  # as the trace
