"""The Microscope node at a (simulated) rig: TIFF frames in, traces and frames on the bus."""
import numpy as np
import pytest

from naive_readers import GrowingTiff
from rig import config as cfg
from rig.readers.roi import MotionCorrector, RoiMasks, TraceExtractor
from rig.recording import read_session
from rig.recording.format import RecordingReader
from rig.supervisor import Supervisor
from test_readers_roi import blobs, scene

pytestmark = pytest.mark.timeout(60)
N_FRAMES = 30


def run(tmp_path, microscope, until):
    raw = {"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1},
           "nodes": {"microscope": {"class": "rig.readers.node:Microscope", **microscope},
                     "recorder": {"class": "rig.recording.recorder:Recorder"}}}
    sup = Supervisor(cfg.parse(raw), run_dir=tmp_path / "run")
    try:
        sup.start()
        assert sup.wait_for(until, timeout_s=40), sup.status()
        return sup.stats("microscope")
    finally:
        sup.shutdown()


def test_tiff_frames_become_traces_and_decimated_frames_on_the_bus(tmp_path):
    labels = blobs()
    np.save(tmp_path / "labels.npy", labels)
    rng = np.random.default_rng(0)
    base = scene()
    images = [(base + rng.integers(0, 50, base.shape)).astype(np.uint16)
              for _ in range(N_FRAMES)]
    writer = GrowingTiff(tmp_path / "acq.tif")
    for image in images:
        writer.append(image)
    stats = run(tmp_path, {"reader_settings": {"path": str(tmp_path / "acq.tif")},
                           "rois": str(tmp_path / "labels.npy"),
                           "rate_hz": 10.0, "crop": 64, "max_shift": 8, "ref_frames": 5},
                lambda s: s.stats("recorder").get("topics", {}).get("traces", 0) >= N_FRAMES
                and s.stats("microscope").get("frames", 0) >= N_FRAMES)
    assert stats["frames"] == N_FRAMES and "failed" not in stats
    session = read_session(tmp_path / "run")
    assert session.traces.shape == (N_FRAMES, labels.max())
    # the same numbers as the extractor run offline on the same frames
    offline = TraceExtractor(RoiMasks.from_labels(labels), 10.0,
                             motion=MotionCorrector(labels.shape, None, 64, 8, 5))
    expected = np.stack([offline.process(im).copy() for im in images])
    np.testing.assert_array_equal(session.traces, expected)
    reader = RecordingReader(tmp_path / "run" / "session.mcap")
    frames = [e for e in reader.entries(topics={"frame"})]
    assert len(frames) == N_FRAMES // 10


def test_frames_of_the_wrong_size_stop_the_reader_with_a_clear_message(tmp_path):
    np.save(tmp_path / "labels.npy", blobs())
    writer = GrowingTiff(tmp_path / "acq.tif")
    writer.append(np.zeros((8, 8), np.uint16))
    stats = run(tmp_path, {"reader_settings": {"path": str(tmp_path / "acq.tif")},
                           "rois": str(tmp_path / "labels.npy")},
                lambda s: "failed" in s.stats("microscope"))
    assert "acq.tif page 0: 8 x 8 pixels, expected 96 x 128" in stats["failed"]
