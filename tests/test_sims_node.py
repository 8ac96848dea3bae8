"""The simulated microscope node: driven in-process, then once through the real supervisor."""
import numpy as np
import pytest

from rig.bus import Endpoints
from rig.messages import Message
from rig.node import NodeSpec
from sims.node import SimMicroscope


class Collect:
    """Stands in for the node's publisher: keeps what would go on the bus."""

    def __init__(self):
        self.sent = []

    def publish(self, topic, arrays=None, meta=None, frame=-1, t_acq_ns=0):
        self.sent.append(Message(topic, dict(arrays or {}), dict(meta or {}), frame, t_acq_ns))

    def topic(self, name):
        return [m for m in self.sent if m.topic == name]


def make_node(tmp_path, **settings):
    spec = NodeSpec("fish", "sims.node:SimMicroscope", {"n_neurons": 200, **settings},
                    Endpoints("", "", ""), str(tmp_path), seed=3)
    pub = Collect()
    node = SimMicroscope(spec, pub)
    node.setup()
    node.running = True
    return node, pub


def test_every_volume_carries_its_frame_and_acquisition_time(tmp_path):
    node, pub = make_node(tmp_path, volume_rate_hz=30.0, publish_tail=True, publish_frame=True,
                          frame_shape=(64, 64), realtime=False)
    for _ in range(10):
        node.step()
    for topic in ("traces", "stimulus", "sim.tail", "tail", "frame"):
        msgs = pub.topic(topic)
        assert [m.frame for m in msgs] == list(range(10)), topic
        assert all(m.t_acq_ns > 0 for m in msgs), topic
    traces = pub.topic("traces")
    assert traces[0]["dff"].dtype == np.float32 and traces[0]["dff"].shape == (200,)
    tails = pub.topic("sim.tail")
    assert sum(len(m["angles"]) for m in tails) in (66, 67)  # 10/30 s at 200 Hz
    for m in tails:
        assert m["angles"].shape[1] == 8 and np.all(m["t_ns"] <= m.t_acq_ns)
        assert m["t_ns"].dtype == np.int64 and len(m["t_ns"]) == len(m["angles"])
    cam_t = np.concatenate([m["t_ns"] for m in tails])
    assert np.all(np.diff(cam_t) >= 0)  # monotonic even when volumes come faster than real time
    assert pub.topic("frame")[0]["image"].dtype == np.uint16


def test_real_time_camera_frames_are_evenly_spaced_on_the_wall_clock(tmp_path, monkeypatch):
    import sims.node

    node, pub = make_node(tmp_path, volume_rate_hz=30.0)
    # A wall clock at which each volume is published 1/30 s after the last, +- 3 ms jitter.
    jitter = np.random.default_rng(0).uniform(0, 3e6, 30).astype(np.int64)
    clock = iter(10**18 + np.arange(1, 31) * round(1e9 / 30) + jitter)
    monkeypatch.setattr(sims.node.time, "time_ns", lambda: int(next(clock)))
    for _ in range(30):
        node.step()
    tails = pub.topic("sim.tail")
    cam_t = np.concatenate([m["t_ns"] for m in tails])
    gaps = np.diff(cam_t)
    assert len(cam_t) == 200 and np.all(gaps > 0)
    # Exactly 5 ms apart, except a short gap where a volume came earlier than all before.
    assert np.count_nonzero(np.abs(gaps - 5_000_000) > 1) <= 6
    assert np.all(gaps[np.abs(gaps - 5_000_000) > 1] < 5_000_000)
    assert all(np.all(m["t_ns"] <= m.t_acq_ns) for m in tails)
    assert pub.topic("frame") == [] and pub.topic("stimulus")[0].meta["name"] == "still"


def test_truth_is_published_at_the_start(tmp_path):
    node, pub = make_node(tmp_path)
    for _ in range(3):
        node.step()
    truth, anatomy = pub.topic("sim.truth"), pub.topic("anatomy")
    assert len(truth) == 1 and len(anatomy) == 1
    assert np.array_equal(truth[0]["presyn"], node.fish.presyn)
    assert anatomy[0]["positions"].shape == (200, 3)
    assert pub.sent.index(truth[0]) < pub.sent.index(pub.topic("traces")[0])


def test_fired_stimulation_reaches_the_fish_at_the_next_volume(tmp_path):
    node, pub = make_node(tmp_path)
    node.step()
    node.on_message(Message("stim.fired", {"targets": np.array([1, 2, 3], np.int32)}, {}, 0, 1))
    node.on_message(Message("stim.fired", {"targets": np.array([999], np.int32)}, {}, 0, 1))
    node.step()
    assert len(node.fish.stimulations) == 1 and node.fish.stimulations[0].frame == 1
    done = pub.topic("sim.stimulated")
    assert len(done) == 1 and done[0].frame == 1 and list(done[0]["targets"]) == [1, 2, 3]
    assert node.summary()["stims"] == 1 and node.summary()["stims refused"] == 1


def test_node_is_seeded_by_the_run(tmp_path):
    a, pa = make_node(tmp_path)
    b, pb = make_node(tmp_path)
    for n in (a, b):
        n.step()
        n.step()
    assert np.array_equal(pa.topic("traces")[1]["dff"], pb.topic("traces")[1]["dff"])


def test_n_frames_stops_the_microscope(tmp_path):
    node, pub = make_node(tmp_path, n_frames=4)
    for _ in range(6):
        node.step()
    assert len(pub.topic("traces")) == 4 and not node.running


@pytest.mark.timeout(90)
def test_microscope_runs_as_a_process_under_the_supervisor(tmp_path):
    from rig import config as cfg
    from rig.supervisor import Supervisor

    raw = {"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1},
           "nodes": {"fish": {"class": "sims.node:SimMicroscope", "n_neurons": 300,
                              "volume_rate_hz": 30.0},
                     "sink": {"class": "rig.selftest:Sink"}}}
    sup = Supervisor(cfg.parse(raw), run_dir=tmp_path / "run")
    try:
        sup.start()
        assert sup.wait_for(lambda s: s.stats("sink").get("frames", 0) >= 15, timeout_s=60)
        # Heartbeats come every 0.1 s: the fish's own count may lag the sink's a little.
        assert sup.wait_for(lambda s: s.stats("fish").get("frames", 0) >= 15, timeout_s=10)
    finally:
        sup.shutdown()


def test_truth_files_are_left_for_the_recorder(tmp_path):
    node, pub = make_node(tmp_path)
    assert (tmp_path / "truth" / "presyn.npy").exists()  # static truth at setup
    node.step()
    node.on_message(Message("stim.fired", {"targets": np.array([4, 5], np.int32)}, {}, 0, 1))
    for _ in range(3):
        node.step()
    node.teardown()
    load = {p.stem: np.load(p) for p in (tmp_path / "truth").glob("*.npy")}
    assert np.array_equal(load["presyn"], node.fish.presyn)
    assert load["bout"].shape == (4,) and load["latents"].shape == (4, 10)
    assert load["tail_true"].shape == (4, 8) and list(load["stim_applied_frame"]) == [1]
    ptr = load["stim_postsynaptic_ptr"]
    assert list(ptr) == [0, len(load["stim_postsynaptic"])]
    assert not list((tmp_path / "truth").glob(".*"))  # no temporary files left


def test_a_slow_truth_save_spaces_out_the_next(tmp_path, monkeypatch):
    node, _ = make_node(tmp_path, truth_every_s=0.0)
    clock = iter([100.0, 100.5, 100.5])  # a rewrite that took 0.5 s
    monkeypatch.setattr("sims.node.time.monotonic", lambda: next(clock))
    node._periodic_save()
    assert node.next_save == 100.5 + 0.5 / node.SAVE_SHARE  # saves <= SAVE_SHARE of the time
    assert (tmp_path / "truth" / "latents.npy").exists()
