"""Frame sources, camera clock mapping and per imaging frame exposure labels."""
import sys
import time

import numpy as np
import pytest

from rig.camera import (ClockMap, ExposureAverager, GenICamSource, SourceError, StackSource,
                        VideoSource, open_source)


def test_stack_source_replays_an_array_with_counters_and_times():
    stack = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    with StackSource(stack, fps=100.0) as src:
        frames = [src.read() for _ in range(4)]
    assert [f.index for f in frames[:3]] == [0, 1, 2] and frames[3] is None and src.exhausted
    np.testing.assert_array_equal(frames[1].image, stack[1])
    assert frames[2].t_ns - frames[0].t_ns == 20_000_000


def test_stack_source_clock_starts_at_the_first_read_not_at_open():
    """A node opens its source at setup and reads after START: the wait before the first
    read must not turn into a burst of frames stamped in the past."""
    stack = np.zeros((5, 4, 4), np.uint8)
    with StackSource(stack, fps=100.0, realtime=True, timeout_s=0.05) as src:
        time.sleep(0.1)  # setup -> START: ten frames' worth of waiting
        before = time.time_ns()
        frames = []
        while len(frames) < 3:  # each read waits at most timeout_s for the next frame
            frame = src.read()
            if frame is not None:
                frames.append(frame)
        after = time.time_ns()
    assert frames[0].t_ns >= before  # stamped when read, not 0.1 s earlier
    assert after - before >= 2 * 10_000_000  # paced at 100 Hz: frame 2 is due 20 ms later
    assert [f.index for f in frames] == [0, 1, 2]


def test_stack_source_reads_a_tiff_stack(tmp_path):
    import tifffile

    stack = np.random.default_rng(1).integers(0, 65535, (4, 6, 7), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")  # one page a frame
    with StackSource(tmp_path / "s.tif") as src:
        got = [src.read() for _ in range(5)]
        assert src.n_frames == 4
    np.testing.assert_array_equal(np.array([f.image for f in got[:4]]), stack)
    assert got[4] is None and src.exhausted


@pytest.mark.parametrize("name, content, words", [
    ("bad.h5", b"not hdf5 at all", "not a readable HDF5"),
    ("bad.tif", b"not a tiff", "not a readable TIFF"),
    ("bad.npy", b"not numpy", "not a readable .npy"),
])
def test_an_unreadable_stack_file_is_a_source_error_naming_it(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SourceError, match=words):
        StackSource(tmp_path / name).open()


def test_stack_source_reads_npy_and_hdf5_and_loops(tmp_path):
    import h5py

    stack = np.random.default_rng(0).integers(0, 255, (2, 6, 7), dtype=np.uint8)
    np.save(tmp_path / "s.npy", stack)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["video"] = stack
    for name in ("s.npy", "s.h5"):
        with StackSource(tmp_path / name, loop=True) as src:
            got = [src.read() for _ in range(3)]
        np.testing.assert_array_equal(got[2].image, stack[0])
        assert got[2].index == 2 and not src.exhausted


def test_stack_source_explains_a_missing_file(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        StackSource(tmp_path / "nope.h5").open()
    with pytest.raises(ValueError, match="choose one of"):
        open_source("firewire", 0)


def test_stack_source_with_several_datasets_none_named_video_asks_for_one(tmp_path):
    import h5py

    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((2, 4, 4), np.uint8)
        f["b"] = np.ones((2, 4, 4), np.uint8)
    with pytest.raises(SourceError, match=r"choose one of \['a', 'b'\]"):
        StackSource(tmp_path / "two.h5").open()
    with StackSource(tmp_path / "two.h5", dataset="b") as src:
        assert src.read().image[0, 0] == 1


def test_video_source_without_opencv_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    with pytest.raises(SourceError, match="opencv"):
        VideoSource(tmp_path / "fish.avi").open()


def test_genicam_source_without_harvesters_says_what_to_install(monkeypatch):
    for name in ("harvesters", "harvesters.core", "genicam", "genicam.gentl"):
        monkeypatch.setitem(sys.modules, name, None)  # as if harvesters were not installed
    with pytest.raises(SourceError, match="pip install harvesters"):
        GenICamSource("/opt/vendor/producer.cti").open()


class _FakeCv2:
    """OpenCV's names the video source uses; cvtColor as OpenCV's BGR -> grey weights."""

    COLOR_BGR2GRAY, COLOR_BGRA2GRAY = 6, 10

    class error(Exception):
        pass

    @staticmethod
    def cvtColor(image, code):
        w = np.array([0.114, 0.587, 0.299])
        return np.rint(image[:, :, :3] @ w).astype(image.dtype)


class _ColourCapture:
    def read(self):
        image = np.zeros((4, 6, 3), np.uint8)
        image[..., 1] = 100  # green
        return True, image


class _DeadCapture:
    def read(self):
        return False, None


def test_a_live_video_camera_that_gives_no_frame_raises_source_error():
    src = VideoSource(0)
    with pytest.raises(SourceError, match="not open"):
        src.read()
    src._cv2, src._cap = _FakeCv2, _DeadCapture()
    with pytest.raises(SourceError, match="unplugged"):
        src.read()
    assert not src.exhausted


def test_video_source_gives_grey_frames_from_colour(tmp_path):
    src = VideoSource(tmp_path / "fish.avi")
    src._cv2, src._cap = _FakeCv2, _ColourCapture()
    frame = src.read()
    assert frame.image.shape == (4, 6) and frame.image.dtype == np.uint8
    assert frame.image[0, 0] == 59 and frame.index == 0


def test_a_video_file_that_ends_is_exhausted_not_an_error(tmp_path):
    src = VideoSource(tmp_path / "fish.avi")
    src._cv2, src._cap = _FakeCv2, _DeadCapture()
    assert src.read() is None and src.exhausted


class _Timeout(Exception):
    pass


class _UnpluggedAcquirer:
    def fetch(self, timeout):
        raise RuntimeError("GenTL: device lost")


def test_genicam_backend_errors_and_a_closed_camera_raise_source_error():
    src = GenICamSource("/opt/vendor/producer.cti")
    with pytest.raises(SourceError, match="not open"):
        src.read()
    src._ia, src._timeout_exc = _UnpluggedAcquirer(), _Timeout
    with pytest.raises(SourceError, match="device lost"):
        src.read()


def test_camera_module_never_imports_opencv():
    import subprocess
    import sys

    code = "import sys, rig.camera, rig.camera.sources; print('cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_clock_map_recovers_camera_drift_and_offset_under_transfer_jitter():
    rng = np.random.default_rng(0)
    cam = np.arange(2000) * 1_428_571  # 700 Hz in camera ticks (ns)
    true = 5_000_000_000 + cam * (1 + 50e-6)  # 50 ppm fast, 5 s offset
    host = true + rng.exponential(200_000, len(cam))  # USB delay only ever adds
    cmap = ClockMap(window=500)
    for c, h in zip(cam, host):
        cmap.update(int(c), int(h))
    err = [cmap.to_acq(int(c)) - t for c, t in zip(cam[-500:], true[-500:])]
    assert np.max(np.abs(err)) < 50_000  # 50 us, against 200 us mean jitter


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clock_map_refit_every_32_pairs_is_as_accurate_as_refitting_every_pair(seed):
    rng = np.random.default_rng(seed)
    cam = np.arange(6000) * 1_428_571
    true = 5_000_000_000 + cam * (1 - 80e-6)
    host = true + rng.exponential(200_000, len(cam))
    errs = {}
    for every in (1, 32):  # 1: the plain fit over the whole window at every pair
        cmap = ClockMap(window=500, refit_every=every)
        e = []
        for c, h, t in zip(cam, host, true):
            cmap.update(int(c), int(h))
            e.append(cmap.to_acq(int(c)) - t)
        errs[every] = np.abs(e[500:])
    # the same scale; the envelope pair is re-sought only every 32 pairs: the error against
    # the truth stays within 10 us of the plain fit's
    # (the fit's own error here is ~50-100 us, from 200 us mean jitter over 500 pairs)
    assert errs[32].max() <= errs[1].max() + 10_000
    assert np.percentile(errs[32], 99) <= np.percentile(errs[1], 99) + 10_000


def test_clock_map_before_any_pair_is_an_error():
    with pytest.raises(ValueError, match="update"):
        ClockMap().to_acq(0)


def test_exposure_mean_covers_the_window_and_skips_lost_frames():
    avg = ExposureAverager(2, capacity=16)
    for i in range(10):
        avg.add(i * 10, np.array([i, -i], np.float32), lost=(i == 3), moving=(i == 8))
    out = np.zeros(2, np.float32)
    assert avg.mean(20, 60, out) == (3, 1, 1)  # frames 2, 4, 5 good; 3 lost (so moving)
    np.testing.assert_allclose(out, [11 / 3, -11 / 3], rtol=1e-6)
    assert avg.mean(70, 100, out).n_moving == 1
    assert avg.mean(1000, 2000, out) == (0, 0, 0) and np.all(np.isnan(out))
