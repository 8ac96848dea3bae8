"""Raw plane images with known neuron footprints."""
import numpy as np
import pytest

from sims import Fish, FishConfig
from sims.imaging import PlaneImager


@pytest.fixture(scope="module")
def plane():
    fish = Fish(FishConfig(n_neurons=3000, seed=1))
    return fish, PlaneImager(fish.positions, z_um=150.0, shape=(256, 256), pixel_um=4.0, seed=0)


def test_footprints_are_suite2p_style_stat_entries(plane):
    fish, im = plane
    assert im.n_rois > 20 and len(im.stat) == im.n_rois
    z = fish.positions[im.roi_ids, 2]
    assert np.all(np.abs(z - 150.0) <= 5.0)
    for st in im.stat[:10]:
        assert st["ypix"].shape == st["xpix"].shape == st["lam"].shape == (st["npix"],)
        assert st["lam"].max() == pytest.approx(1.0, abs=0.25)
        assert np.all((st["ypix"] >= 0) & (st["ypix"] < 256))
        assert np.all((st["xpix"] >= 0) & (st["xpix"] < 256))
        assert abs(st["ypix"].mean() - st["med"][0]) < 1.0


def test_rendered_roi_brightness_follows_dff(plane):
    fish, im = plane
    quiet = im.render(np.zeros(fish.config.n_neurons), noise=False).astype(float)
    dff = np.zeros(fish.config.n_neurons)
    dff[im.roi_ids[0]] = 2.0
    lit = im.render(dff, noise=False).astype(float)
    st = im.stat[0]
    assert (lit - quiet)[st["ypix"], st["xpix"]].sum() > 0
    diff = lit - quiet
    diff[st["ypix"], st["xpix"]] = 0
    assert np.abs(diff).max() <= 1.0  # nothing else changed (only rounding)
    frame = im.render(dff)
    assert frame.dtype == np.uint16 and frame.shape == (256, 256)


def test_rigid_shift_moves_the_whole_image(plane):
    fish, im = plane
    dff = fish.step().dff
    still = im.render(dff, noise=False)
    moved = im.render(dff, shift=(5, -3), noise=False)
    assert np.array_equal(moved[5:, :-3], still[:-5, 3:])
    with pytest.raises(ValueError, match="smaller than the image"):
        im.render(dff, shift=(300, 0))


def test_render_rejects_a_wrong_length(plane):
    _, im = plane
    with pytest.raises(ValueError, match="one per ROI"):
        im.render(np.zeros(3))


def test_stack_follows_the_motion_trace(plane):
    fish, im = plane
    traces = np.stack([fish.step().dff for _ in range(3)])
    shifts = np.array([[0, 0], [2, 1], [-1, 3]])
    stack = im.render_stack(traces, shifts, noise=False)
    assert stack.shape == (3, 256, 256) and stack.dtype == np.uint16
    assert np.array_equal(stack[1], im.render(traces[1], (2, 1), noise=False))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        im.render_stack(traces, shifts[:2])
