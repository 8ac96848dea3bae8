"""Online ROI extraction checked against plain loops: masks, motion, neuropil, ΔF/F."""
import numpy as np
import pytest

from naive_readers import naive_best_shift, naive_extract, naive_maximin
from rig.readers import ReaderError
from rig.readers._kernels import cell_sums, masked_integral, ring_means
from rig.readers.dff import RunningBaseline, dff_offline
from rig.readers.roi import MotionCorrector, RoiMasks, TraceExtractor

H, W = 96, 128


def blobs(n=12, seed=0):
    """A label image of n small round cells."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((H, W), dtype=np.int32)
    yy, xx = np.mgrid[:H, :W]
    for k in range(1, n + 1):
        cy, cx = rng.uniform(12, H - 12), rng.uniform(12, W - 12)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = k
    return labels


def scene(seed=1):
    """A textured image (smooth random structure) that phase correlation can lock onto."""
    rng = np.random.default_rng(seed)
    k = np.fft.rfftfreq(W)[None, :] ** 2 + np.fft.fftfreq(H)[:, None] ** 2
    spectrum = np.fft.rfft2(rng.standard_normal((H, W))) * np.exp(-k * 300)
    image = np.fft.irfft2(spectrum, s=(H, W))
    return (1000 + 400 * image / image.std()).clip(0, 65535).astype(np.uint16)


def test_cell_and_neuropil_sums_match_plain_loops_with_and_without_shift():
    masks = RoiMasks.from_labels(blobs())
    ex = TraceExtractor(masks, rate_hz=10.0, motion=False, min_pixels=60)
    frame = np.random.default_rng(2).integers(0, 3000, (H, W)).astype(np.uint16)
    for shift in [(0, 0), (3, -2), (-40, 50)]:  # the last pushes cells over the edge
        cell_sums(frame, ex.indptr, ex.ys, ex.xs, ex.weights, *shift, ex.f)
        masked_integral(frame, ex.keep, *shift, ex._sat)
        ring_means(ex._sat, ex.boxes, ex.counts, ex.fneu)
        expected = naive_extract(frame, masks.cells, ex.keep, ex.boxes, shift)
        # float32 sums of ~100 pixels of 12-bit values: relative 1e-5 is float32 rounding
        np.testing.assert_allclose(ex.f - 0.7 * ex.fneu, expected, rtol=1e-5, atol=1e-2)


def test_neuropil_rings_avoid_cells_and_hold_enough_pixels():
    masks = RoiMasks.from_labels(blobs())
    ex = TraceExtractor(masks, rate_hz=10.0, motion=False, min_pixels=60)
    assert np.all(ex.counts >= 60)
    in_cell = blobs() > 0  # from the label image itself, not from the code under test
    assert ex.keep[in_cell].sum() == 0 and ex.keep[~in_cell].min() == 1


@pytest.mark.parametrize("shift", [(0, 0), (2, 5), (-4, 3), (7, -6)])
def test_phase_correlation_finds_the_shift_the_plain_search_finds(shift):
    ref = scene()
    moved = np.roll(ref, shift, axis=(0, 1))
    noisy = (moved + np.random.default_rng(3).normal(0, 20, ref.shape)).clip(0).astype(np.uint16)
    mc = MotionCorrector(ref.shape, reference=ref, crop=64, max_shift=10)
    assert mc.shift(noisy) == shift
    assert naive_best_shift(noisy, ref, mc.window, 10) == shift


def test_motion_corrected_traces_do_not_move_with_the_brain():
    labels = blobs()
    ref = scene()
    ref[labels > 0] += 2000  # bright cells on the textured background
    masks = RoiMasks.from_labels(labels)
    still = TraceExtractor(masks, 10.0, motion=MotionCorrector(ref.shape, ref, crop=64,
                                                               max_shift=10), min_pixels=60)
    still.process(ref)
    f_ref = still.f.copy()
    still.process(np.roll(ref, (4, -3), axis=(0, 1)))
    assert still.last_shift == (4, -3)
    # cells away from the wrapped border read the same pixels as before the move
    np.testing.assert_allclose(still.f, f_ref, rtol=1e-4)


def test_reference_is_the_mean_of_the_first_frames_when_not_given():
    ref = scene()
    mc = MotionCorrector(ref.shape, crop=64, max_shift=10, ref_frames=3)
    assert [mc.shift(ref) for _ in range(3)] == [(0, 0)] * 3 and mc.ready
    assert mc.shift(np.roll(ref, (2, 2), axis=(0, 1))) == (2, 2)


def test_running_baseline_matches_the_plain_maximin():
    rng = np.random.default_rng(4)
    f = (100 + rng.standard_normal((500, 7)).cumsum(0)).astype(np.float32)
    np.testing.assert_allclose(dff_offline(f, 10.0, window_s=5.0, blocks=5),
                               naive_maximin(f, 10.0, window_s=5.0, blocks=5), atol=1e-5)


def test_dff_of_a_transient_on_a_flat_baseline():
    f = np.full((300, 1), 100.0, dtype=np.float32)
    f[200:205] = 150.0
    dff = dff_offline(f, 10.0, window_s=10.0)
    assert abs(dff[150, 0]) < 1e-6 and dff[202, 0] == pytest.approx(0.5, rel=1e-5)


def test_suite2p_stat_masks_and_their_errors(tmp_path):
    stat = np.array([{"ypix": np.array([1, 1, 2]), "xpix": np.array([3, 4, 3]),
                      "lam": np.array([1.0, 2.0, 1.0])}], dtype=object)
    np.save(tmp_path / "stat.npy", stat, allow_pickle=True)
    masks = RoiMasks.load(tmp_path / "stat.npy", shape=(8, 8))
    assert masks.n == 1 and masks.cells[0][2].tolist() == [1.0, 2.0, 1.0]
    with pytest.raises(ReaderError, match=r"stat\.npy: ROI 0 reaches pixel \(2, 4\), outside "
                                          r"the 3 x 3 frame"):
        RoiMasks.load(tmp_path / "stat.npy", shape=(3, 3))
    with pytest.raises(ReaderError, match=r"nothing\.npy: ROI file missing"):
        RoiMasks.load(tmp_path / "nothing.npy", shape=(8, 8))


def test_a_frame_of_the_wrong_size_is_refused_with_both_sizes():
    ex = TraceExtractor(RoiMasks.from_labels(blobs()), 10.0, motion=False, min_pixels=20)
    with pytest.raises(ReaderError, match="frame is 64 x 64 pixels, the ROIs are for 96 x 128"):
        ex.process(np.zeros((64, 64), np.uint16))


def test_bad_baseline_settings_name_the_fix():
    with pytest.raises(ValueError, match="rate_hz = 0: must be > 0"):
        RunningBaseline(3, 0)
    with pytest.raises(ValueError, match="got \\(2,\\) values, expected \\(3,\\)"):
        RunningBaseline(3, 10.0).update(np.zeros(2, np.float32))


def test_stat_masks_keep_only_cells_and_drop_overlapping_pixels(tmp_path):
    stat = np.array([{"ypix": np.array([1, 1]), "xpix": np.array([1, 2]),
                      "lam": np.array([1.0, 1.0]), "overlap": np.array([False, True])},
                     {"ypix": np.array([5]), "xpix": np.array([5]), "lam": np.array([1.0])},
                     {"ypix": np.array([6]), "xpix": np.array([2]), "lam": np.array([1.0])}],
                    dtype=object)
    np.save(tmp_path / "stat.npy", stat, allow_pickle=True)
    np.save(tmp_path / "iscell.npy", np.array([[1, 0.9], [0, 0.1], [1, 0.8]]))
    masks = RoiMasks.load(tmp_path / "stat.npy", shape=(8, 8))
    assert masks.n == 2  # the same ROIs the suite2p importer keeps
    assert masks.cells[0][1].tolist() == [1] and masks.cells[1][0].tolist() == [6]
