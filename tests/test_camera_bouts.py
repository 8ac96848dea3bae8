"""Vigour and bouts: the online kernel against brute force, and against the simulated fish's
own bouts through the rendered camera (>= 95% precision and recall)."""

import numpy as np
import pytest

from rig.camera import BoutDetector, TailTracker, detect_bouts
from sims.camera import CameraRenderer, fish_tail
from tests import naive_camera as naive


def _overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


def test_vigour_is_the_rolling_std_of_the_cumulative_angle():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal(3000)) * 0.01 + 5.0  # offset: the running sums must cope
    bouts, vigour = detect_bouts(x, fps=700.0, window_s=0.05)
    np.testing.assert_allclose(vigour, naive.rolling_std(x, 35), atol=1e-7)


def test_bouts_follow_the_hysteresis_of_the_naive_detector():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(4000) * 0.005
    for s in (500, 1500, 2600):
        x[s:s + 120] += 0.5 * np.sin(np.arange(120) * 2 * np.pi * 25 / 700)
    bouts, vigour = detect_bouts(x, 700.0, on=0.08, off=0.03)
    assert [(b.start, b.end) for b in bouts] == naive.bouts_from_vigour(vigour, 0.08, 0.03)
    assert len(bouts) == 3


def test_online_detector_reports_the_same_bouts_as_offline():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(2000) * 0.005
    x[300:450] += np.linspace(0, -0.9, 150) + 0.3 * np.sin(np.arange(150) * 0.9)
    offline, vig = detect_bouts(x, 500.0)
    det = BoutDetector(500.0)
    online = [b for v in x if (b := det.update(v)) is not None]
    assert online == offline and len(online) == 1
    assert det.vigour == pytest.approx(vig[-1])
    bout = online[0]
    assert bout.direction == -1 and bout.side == "right" and bout.max_angle < -0.8
    assert bout.duration_s == pytest.approx((bout.end - bout.start) / 500.0)


def test_lost_frames_count_as_moving_and_do_not_make_bouts():
    det = BoutDetector(500.0)
    for _ in range(100):
        det.update(0.0)
    assert not det.moving
    det.update(float("nan"))  # a trace the tracker could not read
    assert det.moving and not det.in_bout and det.n_lost == 1
    det.update(0.0, lost=True)
    assert det.moving and det.n_lost == 2
    det.update(0.0)
    assert not det.moving and det.bouts == []


@pytest.mark.parametrize("kwargs, field", [
    (dict(fps=0.0), "fps"), (dict(window_s=0.001), "window_s"),
    (dict(on=0.01, off=0.02), "on/off")])
def test_bad_detector_settings_name_the_field(kwargs, field):
    args = dict(fps=500.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        BoutDetector(**args)


def test_bouts_through_the_simulated_camera_match_the_fish_at_95_percent():
    fps = 300.0
    angles, _, true_bouts = fish_tail(40.0, fps, 10, seed=1)
    assert len(true_bouts) >= 20
    renderer = CameraRenderer((256, 256), 10, seed=2)
    tracker = TailTracker(**renderer.tracker_geometry())
    cum = np.array([tracker.track(renderer.render(a)).cum_angle for a in angles])
    found, _ = detect_bouts(cum, fps)
    spans = [(b.start, b.end) for b in found]
    recall = np.mean([any(_overlap(t, f) for f in spans) for t in true_bouts])
    precision = np.mean([any(_overlap(f, t) for t in true_bouts) for f in spans])
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)
    # onsets are found within the 50 ms vigour window (measured: median 1 frame)
    onset = [f[0] - t[0] for t in true_bouts for f in spans if _overlap(t, f)]
    assert np.median(np.abs(onset)) <= 0.05 * fps


def test_finish_closes_a_bout_still_open_at_the_end_as_the_offline_detector_does():
    x = np.zeros(200)
    x[150:] = 0.5 * np.sin(np.arange(50) * 0.9)  # a bout running to the last frame
    det = BoutDetector(200.0)
    for v in x:
        det.update(v)
    assert det.in_bout and not det.bouts
    bout = det.finish()
    offline, _ = detect_bouts(x, 200.0)
    assert bout == offline[-1] and bout.end == 200 and not det.in_bout
    assert det.finish() is None  # nothing left open
