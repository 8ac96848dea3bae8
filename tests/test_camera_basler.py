"""A real camera driver end to end: pylon's emulated Basler camera (``PYLON_CAMEMU=1``, no
hardware) plays rendered tail frames from a folder; the camera node grabs them through
pypylon, traces them and publishes ``behaviour`` on a real bus."""
import importlib.util

import numpy as np
import pytest

from rig.camera import BaslerSource, SourceError
from sims.camera import CameraRenderer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pypylon") is None,
                                reason="pypylon is not installed: pip install pypylon")

N_SEG = 8
BENDS = [0.0, 0.4, -0.4]  # rad of cumulative angle, one per image file, played in a loop


@pytest.fixture
def emulated_camera(tmp_path, monkeypatch):
    """A folder of tail images the emulated camera plays, and its feature settings."""
    from PIL import Image

    monkeypatch.setenv("PYLON_CAMEMU", "1")  # inherited by spawned node processes too
    renderer = CameraRenderer((96, 128), N_SEG, seed=1, direction=0.0, base=(20, 48),
                              length=80)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, bend in enumerate(BENDS):
        image = renderer.render(np.full(N_SEG, bend / N_SEG, np.float32).cumsum())
        Image.fromarray(image.copy()).save(folder / f"frame{i:03d}.png")
    features = {"Width": 128, "Height": 96, "TestImageSelector": "Off", "ImageFileMode": "On",
                "ImageFilename": str(folder), "ExposureTime": 1000.0,
                "AcquisitionFrameRate": 200.0}
    return features, [20.0, 48.0], [100.0, 48.0]


def test_basler_source_grabs_the_emulated_cameras_frames(emulated_camera):
    features, _, _ = emulated_camera
    with BaslerSource("", features=features) as src:
        frames = []
        while len(frames) < 6:  # bounded: a silent camera would raise nothing but loop
            frame = src.read()
            assert frame is not None, "the emulated camera sent no frame within 0.1 s"
            frames.append(frame)
    assert all(f.image.shape == (96, 128) and f.image.dtype == np.uint8 for f in frames)
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + 6))
    np.testing.assert_array_equal(frames[0].image, frames[3].image)  # three files, looped
    assert src.host_clock  # the emulation stamps nothing: host time it is


def test_a_bad_feature_or_a_missing_camera_is_a_source_error_naming_it(emulated_camera):
    with pytest.raises(SourceError, match="cannot set NoSuchFeature"):
        BaslerSource("", features={"NoSuchFeature": 1}).open()
    with pytest.raises(SourceError, match="no Basler camera with serial '12345678'"):
        BaslerSource("12345678").open()


def test_camera_node_traces_the_emulated_basler_camera_onto_the_bus(emulated_camera, tmp_path):
    from rig import config as cfg
    from rig.bus import Subscriber
    from rig.supervisor import Supervisor

    features, base, tip = emulated_camera
    raw = {"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1},
           "nodes": {"camera": {"class": "rig.camera.node:Camera", "source": "basler",
                                "features": features, "fps": 200.0, "base": base, "tip": tip,
                                "n_segments": N_SEG}}}
    sup = Supervisor(cfg.parse(raw), run_dir=tmp_path / "run")
    try:
        sup.start()
        sub = Subscriber(sup.endpoints.sub, ("behaviour",), hwm=10_000)
        try:
            got = []
            assert sup.wait_for(lambda s: _take(sub, got) >= 30, timeout_s=60), \
                f"only {len(got)} behaviour messages from the emulated camera"
        finally:
            sub.close()
        assert sup.stats("camera")["bad_frames"] == 0
    finally:
        sup.shutdown()
    cum = np.array([m.meta["cum_angle"] for m in got])
    assert not any(m.meta["lost"] for m in got)
    # every traced angle is one of the three played bends (the fit is exact to ~1 deg here)
    nearest = np.min(np.abs(cum[:, None] - np.array(BENDS)[None, :]), axis=1)
    assert np.degrees(nearest).max() < 3.0, np.degrees(cum)
    assert {int(np.argmin(np.abs(c - np.array(BENDS)))) for c in cum} == {0, 1, 2}
    frames = [m.meta["camera_frame"] for m in got]
    assert frames == sorted(frames)


def _take(sub, got) -> int:
    while (msg := sub.recv(timeout_ms=0)) is not None:
        got.append(msg)
    return len(got)
