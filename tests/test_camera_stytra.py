"""The tracker on a real recording no one here made: stytra's example head-restrained larva.

``stytra/examples/assets/fish_compressed.h5`` (220 frames of 70 x 148 uint8, a dark larva on a
bright background, head on the right, tail pointing left; two bouts, frames ~18-68 and
~177-213). stytra is GPL-3: its code is never imported and the file is never copied; the
file is located through ``importlib.util.find_spec`` and read with h5py. Install it for the
tests with ``pip install --no-deps stytra==0.8.34``.

How the trace was checked: the tail points in ``MARKS`` were read by eye off 8x-enlarged
PNGs of six frames (one at rest, five mid-bout) with a 5-pixel grid drawn over them, before
comparing with the tracker; every marked point must lie within 2.5 px of the traced
centreline (the tail is 2-8 px wide; marking by eye is good to about 1 px). The tips in
``TIPS`` were read the same way off 16x-enlarged, contrast-stretched 30 x 30 px crops with a
1-pixel grid, on 15 strongly bent frames (the crops were centred on an earlier tracker's end
point, the marks taken where the dark tail fades into the background); the traced end must
lie within 6 px of each (the faint last pixels of a tail are a judgement call: ~1-2 px).

Robustness: noise (sd 10 grey levels, several seeds), halved contrast, a mirrored and a
90-degree-rotated video (the clicks mirrored or rotated with it) must give the same trace:
correlation of the cumulative angle with the clean one >= 0.95 and rest frames within 5 deg.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from rig.camera import TailTracker, detect_bouts


def _stytra_video() -> Path | None:
    spec = importlib.util.find_spec("stytra")  # finds the package without running its code
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    path = root / "examples" / "assets" / "fish_compressed.h5"
    return path if path.exists() else None


VIDEO = _stytra_video()
pytestmark = pytest.mark.skipif(
    VIDEO is None, reason="stytra's example video is absent: pip install --no-deps stytra==0.8.34")

BASE, TIP = (100.0, 33.0), (8.0, 38.0)  # set once, as two clicks in the dashboard would
# (x, y) pixels on the tail, marked by eye; frame 0 rests, the others are mid-bout.
MARKS = {
    0: [(10, 38), (30, 38), (50, 37), (70, 35), (90, 34)],
    22: [(17.5, 26.3), (27.5, 32.5), (37.5, 38.8), (50, 41.9),
         (60, 42.8), (70, 40.6), (80, 38.1), (90, 35)],
    30: [(19.4, 50.3), (30, 50.3), (40, 45.3), (50, 40), (60, 35.6), (70, 32.8), (85, 32.3)],
    40: [(23.8, 49.4), (25.6, 41.3), (30, 33.8), (37.5, 30),
         (50, 29.8), (60, 31.3), (70, 33.1), (85, 35.6)],
    52: [(21.9, 22.5), (27.5, 31.3), (35, 38.8), (45, 42.8),
         (55, 43.8), (65, 41.3), (75, 38.1), (90, 35)],
    190: [(19.4, 52.5), (30, 50.6), (40, 45), (50, 40), (60, 35.6), (70, 32.5)],
}
# (x, y) pixels of the tail's tip, marked by eye on strongly bent frames (pixel centres at
# integer coordinates, as the tracker samples).
TIPS = {22: (16.5, 25.5), 24: (15.0, 36.0), 28: (21.0, 21.0), 32: (22.5, 57.5),
        36: (21.0, 32.5), 40: (22.5, 53.5), 44: (22.5, 24.5), 48: (22.3, 59.5),
        52: (21.0, 22.0), 184: (23.0, 62.0), 188: (21.5, 27.0), 192: (19.0, 47.5),
        196: (21.0, 29.0), 200: (15.0, 45.0), 204: (17.5, 33.5)}
REST = np.r_[0:14, 90:165]  # the tail starts to stir a few frames before frame 18
BOUTS = [(18, 68), (177, 213)]  # frames where consecutive frames differ by > 1 grey level (mean)
NOMINAL_FPS = 300.0  # the file carries no rate; vigour windows are counted in frames from it


@pytest.fixture(scope="module")
def video():
    import h5py

    with h5py.File(VIDEO, "r") as f:
        video = f["video"][:]
    assert video.shape == (220, 70, 148) and video.dtype == np.uint8
    return video


def _trace(video, base=BASE, tip=TIP):
    tracker = TailTracker.from_points(base, tip, 10)
    cum = np.zeros(len(video))
    points = np.zeros((len(video), 11, 2))
    lost = np.zeros(len(video), bool)
    for i, frame in enumerate(video):
        r = tracker.track(frame)
        cum[i], points[i], lost[i] = r.cum_angle, r.points, r.lost
    return cum, points, lost


@pytest.fixture(scope="module")
def traced(video):
    return _trace(video)


def _distance_to_polyline(p, poly):
    a, b = poly[:-1], poly[1:]
    d = b - a
    t = np.clip(np.einsum("ij,ij->i", p - a, d) / np.einsum("ij,ij->i", d, d), 0, 1)
    return float(np.min(np.hypot(*(a + t[:, None] * d - p).T)))


def test_tracker_follows_hand_marked_tail_points_through_the_bout(traced):
    _, points, lost = traced
    assert not lost.any()
    for frame, marks in MARKS.items():
        for mark in marks:
            d = _distance_to_polyline(np.asarray(mark, float), points[frame])
            assert d < 2.5, f"frame {frame}: marked point {mark} is {d:.1f} px from the trace"


def test_traced_end_lies_on_the_hand_marked_tip_of_bent_tails(traced):
    _, points, _ = traced
    errors = {f: float(np.hypot(*(points[f, -1] - tip))) for f, tip in TIPS.items()}
    assert len(errors) >= 8 and max(errors.values()) <= 6.0, errors  # 0.2-4.9 px measured


def test_rest_frames_read_near_zero_and_bouts_swing_wide(traced):
    cum = np.degrees(traced[0])
    # the clicked tip is a little off the true resting tail: rest reads about 2 deg
    assert np.all(np.abs(cum[REST]) <= 5.0)
    assert np.std(cum[REST]) < 1.0
    for s, e in BOUTS:
        assert np.ptp(cum[s:e]) > 120.0  # full tail beats, both sides
        assert cum[s:e].max() > 40.0 and cum[s:e].min() < -40.0


def test_both_bouts_in_the_video_are_found(traced):
    bouts, _ = detect_bouts(traced[0], NOMINAL_FPS)
    assert len(bouts) == 2
    for found, (s, e) in zip(bouts, BOUTS):
        assert abs(found.start - s) <= 4 and found.end >= e - 2


def _perturbed(video, how, seed=0):
    """(video, base, tip, sign of the cumulative angle) after one change to the picture."""
    h, w = video.shape[1:]
    if how == "noise":
        noisy = video + np.random.default_rng(seed).normal(0.0, 10.0, video.shape)
        return np.clip(noisy, 0, 255).round().astype(np.uint8), BASE, TIP, 1
    if how == "contrast":
        level = np.median(video)  # the background: the tail's contrast against it halves
        return ((video - level) * 0.5 + level).round().astype(np.uint8), BASE, TIP, 1
    if how == "mirror":  # x -> w - 1 - x turns every angle the other way
        return (video[:, :, ::-1], (w - 1 - BASE[0], BASE[1]), (w - 1 - TIP[0], TIP[1]), -1)
    # rot90 (counter-clockwise on screen): (x, y) -> (y, w - 1 - x); angles unchanged
    return (np.rot90(video, 1, axes=(1, 2)), (BASE[1], w - 1 - BASE[0]),
            (TIP[1], w - 1 - TIP[0]), 1)


@pytest.mark.parametrize("how, seed", [("noise", 0), ("noise", 1), ("noise", 2),
                                       ("contrast", 0), ("mirror", 0), ("rot90", 0)])
def test_trace_holds_under_noise_contrast_mirroring_and_rotation(video, traced, how, seed):
    changed, base, tip, sign = _perturbed(video, how, seed)
    cum, _, lost = _trace(np.ascontiguousarray(changed), base, tip)
    assert not lost.any()
    cum = sign * cum
    r = np.corrcoef(cum, traced[0])[0, 1]
    assert r >= 0.95, f"{how}: correlation with the clean trace {r:.3f}"  # 0.993-1.000 measured
    rest = np.degrees(np.abs(cum[REST]))
    assert rest.max() <= 5.0, f"{how}: a rest frame reads {rest.max():.1f} deg"  # <= 2.7 measured


def test_rig_track_on_the_real_video_finds_both_bouts(tmp_path, capsys):
    from rig.cli import main

    out = tmp_path / "track"
    assert main(["track", str(VIDEO), "--base", *map(str, BASE), "--tip", *map(str, TIP),
                 "--fps", str(NOMINAL_FPS), "--out", str(out), "--no-progress"]) == 0
    assert "tracked 220 frames at 300 Hz: 0 lost (0.0%), 2 bouts" in capsys.readouterr().out
    starts = [int(line.split(",")[0]) for line in
              (out / "bouts.csv").read_text().splitlines()[1:]]
    assert [abs(s - b[0]) <= 4 for s, b in zip(starts, BOUTS)] == [True, True]
