"""The camera nodes: behaviour per camera frame, tail labels per imaging frame, counted bad
input. Handlers are driven directly (a recording publisher), and once through a real bus."""
import math
import time

import numpy as np
import pytest

from rig.bus import Endpoints
from rig.camera import FrameSource, SourceError
from rig.camera.sources import Frame
from rig.camera.node import Camera
from rig.messages import Message, decode, encode
from rig.node import NodeSpec
from sims.camera import CameraRenderer, SimCamera, fish_tail


class Recorder:
    """Stands in for the node's Publisher; keeps what was published, after a trip through
    the wire format (so meta that cannot be sent fails here too)."""

    def __init__(self):
        self.msgs = []

    def publish(self, topic, arrays=None, meta=None, frame=-1, t_acq_ns=0):
        msg = Message(topic, dict(arrays or {}), dict(meta or {}), frame, t_acq_ns)
        frames = [bytes(f) for f in encode(msg)]
        self.msgs.append(decode(frames))

    def topic(self, name):
        return [m for m in self.msgs if m.topic == name]


def _node(cls, settings, tmp_path):
    spec = NodeSpec("camera", f"{cls.__module__}:{cls.__name__}", settings,
                    Endpoints("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"),
                    str(tmp_path), seed=0)
    rec = Recorder()
    node = cls(spec, rec)
    node.setup()
    node.running = True
    return node, rec


@pytest.fixture(scope="module")
def fish():
    angles, t_ns, bouts = fish_tail(4.0, 200.0, 8, seed=3, spont_bout_hz=2.0)
    return angles, t_ns, bouts


def _sim_tail(angles, t_ns, frame, per=100, bout=None):
    sl = slice(frame * per, (frame + 1) * per)
    arrays = {"angles": angles[sl], "t_ns": t_ns[sl] + 10**18}
    if bout is not None:
        arrays["bout"] = bout[sl]
    return Message("sim.tail", arrays, {"camera_rate_hz": 200.0}, frame, int(t_ns[sl][-1]) + 10**18)


def test_sim_camera_publishes_behaviour_per_camera_frame_and_tail_per_volume(fish, tmp_path):
    angles, t_ns, bouts = fish
    flag = np.zeros(len(angles), bool)
    for s, e in bouts:
        flag[s:e] = True
    node, rec = _node(SimCamera, {"preview_fps": 1000.0}, tmp_path)
    for v in range(8):
        node.on_message(_sim_tail(angles, t_ns, v, bout=flag))
    beh = rec.topic("behaviour")
    assert len(beh) == 800
    assert [m.meta["camera_frame"] for m in beh] == list(range(800))
    tracked = np.array([m["angles"] for m in beh])
    rms = math.degrees(float(np.sqrt(np.mean((tracked - angles[:800]) ** 2))))
    assert rms < 1.5 and node.stats()["tracked_vs_true_rms_deg"] == pytest.approx(rms, rel=1e-3)
    labels = rec.topic("tail")
    assert [m.frame for m in labels] == list(range(8))
    np.testing.assert_allclose(labels[3]["angles"], tracked[300:400].mean(axis=0), atol=1e-6)
    assert labels[3].meta["n_camera"] == 100
    bout_volumes = {f // 100 for f in np.flatnonzero(flag[:800])}
    assert {m.frame for m in labels if m.meta["moving"]} >= bout_volumes  # detector lags a bit
    assert node.stats()["true_bouts"] == sum(1 for s, e in bouts if s < 800)
    assert any(m.meta["bout"] for m in beh) and not beh[0].meta["moving"]
    frames = rec.topic("camera.frame")
    assert frames and frames[0]["image"].shape == (256, 256) and frames[0]["points"].shape == (9, 2)
    assert rec.topic("camera.stats")


def test_sim_camera_counts_skipped_camera_time_as_dropped(fish, tmp_path):
    angles, t_ns, _ = fish
    node, rec = _node(SimCamera, {}, tmp_path)
    node.on_message(_sim_tail(angles, t_ns, 0))
    node.on_message(_sim_tail(angles, t_ns, 2))  # volume 1 never arrived
    assert node.stats()["dropped"] == 100
    assert rec.topic("behaviour")[-1].meta["camera_frame"] == 299


def _stack(n=40):
    renderer = CameraRenderer((96, 128), 8, seed=1, direction=0.0, base=(30, 48), length=80)
    frames = np.array([renderer.render(np.zeros(8, np.float32)) for _ in range(n)])
    return frames, [30, 48], [110, 48]


def test_camera_node_replays_a_stack_and_labels_imaging_frames(tmp_path):
    frames, base, tip = _stack()
    np.save(tmp_path / "cam.npy", frames)
    node, rec = _node(Camera, {"source": "stack", "target": str(tmp_path / "cam.npy"),
                               "fps": 2000.0, "base": base, "tip": tip, "n_segments": 8,
                               "imaging_period_s": 0.005, "stop_at_end": False}, tmp_path)
    before = time.time_ns()
    node.step()  # the first 10 ms of frames
    t0 = rec.topic("behaviour")[0].meta["t_ns"]
    # the stack's clock starts at the first read, not at setup: no stale burst of frames
    assert t0 >= before
    node.on_message(Message("traces", {}, {}, 0, t0))  # imaging frame 0: [t0, t0 + 5 ms)
    while node.running:
        node.step()
    assert (time.time_ns() - before) / 1e9 >= 39 / 2000.0  # paced as a 2 kHz camera, not burst
    beh = rec.topic("behaviour")
    assert len(beh) == 40 and not any(m.meta["lost"] for m in beh)
    assert all(abs(m.meta["cum_angle"]) < math.radians(3) for m in beh)
    label = rec.topic("tail")
    assert len(label) == 1 and label[0].frame == 0 and label[0].meta["n_camera"] == 10
    node.teardown()


@pytest.mark.parametrize("kind", ["npy", "avi"])
def test_a_stack_or_video_that_ends_stops_the_run_through_the_supervisor(tmp_path, kind):
    from rig import config as cfg
    from rig.supervisor import Supervisor

    frames, base, tip = _stack(30)
    path = tmp_path / f"short.{kind}"
    if kind == "npy":
        np.save(path, frames)
    else:
        cv2 = pytest.importorskip("cv2", reason="OpenCV reads .avi: pip install "
                                                "opencv-python-headless")
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 200.0, (128, 96),
                                 False)
        for f in frames:
            writer.write(f)
        writer.release()
    raw = {"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1},
           "nodes": {"camera": {"class": "rig.camera.node:Camera",
                                "source": "stack" if kind == "npy" else "video",
                                "target": str(path), "fps": 200.0,
                                "base": base, "tip": tip, "n_segments": 8}}}
    sup = Supervisor(cfg.parse(raw), run_dir=tmp_path / "run")
    try:
        sup.start()
        sup.run(duration_s=120)  # returns when the camera asks to stop
        assert sup.stop_reason == "stop requested on the control channel"
    finally:
        sup.shutdown()
    assert sup.report()["summaries"]["camera"]["frames"] == 30


def test_camera_node_counts_bad_frames_and_treats_them_as_moving(tmp_path):
    frames, base, tip = _stack(5)
    np.save(tmp_path / "x.npy", frames)
    node, rec = _node(Camera, {"source": "stack", "target": str(tmp_path / "x.npy"),
                               "base": base, "tip": tip, "n_segments": 8, "stop_at_end": False},
                      tmp_path)
    pipe = node.pipe
    pipe.process(frames[0], 0, 1_000)
    pipe.process(frames[1][:50], 1, 2_000)  # wrong size
    pipe.process(frames[2].astype(np.float64), 2, 3_000)  # wrong dtype
    pipe.process(frames[3], 7, 4_000)  # counter jumped: 4 frames dropped
    beh = rec.topic("behaviour")
    assert [m.meta["lost"] for m in beh] == [False, True, True, False]
    assert beh[1].meta["moving"] and np.all(np.isnan(beh[1]["angles"]))
    st = node.stats()
    assert st["bad_frames"] == 2 and st["dropped"] == 4 and st["lost"] == 2
    node.teardown()


def test_a_tail_base_outside_the_frame_is_a_counted_bad_frame(tmp_path):
    frames, _, _ = _stack(2)
    np.save(tmp_path / "far.npy", frames)
    node, rec = _node(Camera, {"source": "stack", "target": str(tmp_path / "far.npy"),
                               "base": [500, 48], "tip": [580, 48], "n_segments": 8}, tmp_path)
    node.pipe.process(frames[0], 0, 1_000)
    node.pipe.process(frames[1], 1, 2_000)
    beh = rec.topic("behaviour")
    assert [m.meta["lost"] for m in beh] == [True, True]
    assert node.stats()["bad_frames"] == 2
    node.teardown()


def test_camera_node_without_tail_geometry_says_how_to_set_it(tmp_path):
    with pytest.raises(ValueError, match="base/tip"):
        _node(Camera, {"target": "x.npy"}, tmp_path)


def test_sim_camera_runs_beside_the_simulated_microscope_through_the_bus(tmp_path):
    from rig import config as cfg
    from rig.supervisor import Supervisor

    raw = {"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1},
           "nodes": {"fish": {"class": "sims.node:SimMicroscope", "n_neurons": 100,
                              "volume_rate_hz": 10.0, "camera_rate_hz": 200.0,
                              "n_segments": 8},
                     "camera": {"class": "sims.camera:SimCamera", "height": 128,
                                "width": 128}}}
    sup = Supervisor(cfg.parse(raw), run_dir=tmp_path / "run")
    try:
        sup.start()
        assert sup.wait_for(lambda s: s.stats("camera").get("labels", 0) >= 10, timeout_s=60)
        st = sup.stats("camera")
        assert st["frames"] >= 200 and st["lost"] == 0 and st["bad_frames"] == 0
        # 128 px frames give 7-px segments: coarser than the 256 px default, so a wider bound
        assert st["tracked_vs_true_rms_deg"] < 5.0
    finally:
        sup.shutdown()


def test_dashboard_clicks_reset_the_tail_geometry(tmp_path):
    from rig.node import Verb

    frames, base, tip = _stack(3)
    np.save(tmp_path / "y.npy", frames)
    node, rec = _node(Camera, {"source": "stack", "target": str(tmp_path / "y.npy"),
                               "base": [60, 20], "tip": [120, 20], "n_segments": 8}, tmp_path)
    node.pipe.process(frames[0], 0, 1_000)
    assert rec.topic("behaviour")[-1].meta["lost"]  # wrong place: no tail there
    node.on_control(Verb.SET, {"node": "camera", "key": "tail", "value": base + tip})
    node.pipe.process(frames[1], 1, 2_000)
    assert not rec.topic("behaviour")[-1].meta["lost"]
    with pytest.raises(ValueError, match="base_x, base_y, tip_x, tip_y"):
        node.on_control(Verb.SET, {"node": "camera", "key": "tail", "value": [1, 2]})
    node.teardown()


class SilentSource(FrameSource):
    """A camera that delivers nothing: each read waits its timeout, as a driver's fetch does."""

    def __init__(self, target):
        self.unplugged = target == "unplugged"

    def read(self):
        if self.unplugged:
            raise SourceError("device disconnected")
        time.sleep(0.002)
        return None


@pytest.mark.parametrize("target, counter", [("silent", "silent_periods"),
                                             ("unplugged", "source_errors")])
def test_a_silent_or_unplugged_camera_is_counted_not_fatal(tmp_path, target, counter):
    node, rec = _node(Camera, {"source": "tests.test_camera_node:SilentSource", "target": target,
                               "base": [10, 10], "tip": [10, 60], "silent_s": 0.01}, tmp_path)
    for _ in range(200):  # bounded: each step waits one read timeout
        node.step()
        if node.counters[counter]:
            break
    assert node.counters[counter] >= 1 and not rec.topic("behaviour")


class FlakySource(FrameSource):
    """A camera-clock source that fails once, then comes back with a new counter and clock."""

    host_clock = False

    def __init__(self, target):
        self.reads = 0
        self.opens = 0

    def open(self):
        self.opens += 1
        self.index = 0 if self.opens == 1 else 100

    def read(self):
        self.reads += 1
        if self.reads == 3:
            raise SourceError("device disconnected")
        if self.reads > 5:
            return None
        self.index += 1
        return Frame(np.zeros((96, 128), np.uint8), self.index, self.index * 1_000_000,
                     time.time_ns())


def test_a_reopened_camera_starts_a_fresh_clock_and_counter(tmp_path):
    node, rec = _node(Camera, {"source": "tests.test_camera_node:FlakySource",
                               "base": [30, 48], "tip": [110, 48], "n_segments": 8}, tmp_path)
    old_clock = node.clock
    for _ in range(10):
        node.step()
    assert node.source.opens == 2 and node.counters["source_errors"] == 1
    assert node.clock is not old_clock and node.clock._n == 2  # only the new camera's pairs
    assert node.stats()["dropped"] == 0  # counter went 2 -> 101: a restart, not a gap
    assert [m.meta["camera_frame"] for m in rec.topic("behaviour")] == [1, 2, 101, 102]


def test_the_runtime_never_imports_the_simulator():
    """``rig/`` is the runtime; the simulated camera lives in ``sims/`` and imports ``rig``,
    never the other way round."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "rig"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(root.parent)}: {n}" for n in names
                          if n == "sims" or n.startswith("sims.")]
    assert not offenders
