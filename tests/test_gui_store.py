"""The dashboard's ring buffers and the bus pump, without any window."""
import threading

import numpy as np
import pytest

from gui.bus_thread import pump
from gui.panels import quantize
from gui.store import LiveStore, Ring
from rig.bus import Publisher, Subscriber, wait_connected
from rig.messages import Message


def traces(frame, n=5, value=None):
    dff = np.full(n, frame if value is None else value, np.float32)
    return Message("traces", {"dff": dff}, frame=frame, t_acq_ns=1_000 + frame, t_send_ns=1)


def test_ring_returns_newest_rows_oldest_first_after_wrapping():
    ring = Ring(4, 2)
    for i in range(7):
        ring.push(np.array([i, -i]), frame=i, t_ns=10 * i)
    rows, frames, t_ns = ring.last(10)
    assert frames.tolist() == [3, 4, 5, 6]
    assert rows[:, 0].tolist() == [3, 4, 5, 6]
    assert t_ns.tolist() == [30, 40, 50, 60]


def test_ring_since_gives_only_unseen_rows_and_at_most_capacity():
    ring = Ring(4, 1)
    for i in range(3):
        ring.push(np.array([i]), frame=i)
    assert ring.since(1)[1].tolist() == [1, 2]
    for i in range(3, 20):
        ring.push(np.array([i]), frame=i)
    assert ring.since(3)[1].tolist() == [16, 17, 18, 19]
    assert len(ring.since(ring.total)[1]) == 0


def test_ring_refuses_zero_capacity():
    with pytest.raises(ValueError, match="capacity"):
        Ring(0, 3)


def test_store_starts_afresh_when_neuron_count_changes():
    store = LiveStore(capacity=8)
    for f in range(3):
        store.add(traces(f, n=5))
    _, _, _, seen = store.frames_since("traces", 0)
    store.add(traces(3, n=7))
    rows, frames, _, total = store.frames_since("traces", seen)
    assert rows.shape == (1, 7) and frames.tolist() == [3] and total == 1


def test_store_picks_columns_without_copying_all_neurons():
    store = LiveStore(capacity=8)
    for f in range(3):
        store.add(Message("traces", {"dff": np.arange(6, dtype=np.float32) + f}, frame=f))
    rows, frames, _ = store.last_frames("traces", 2, cols=[5, 0, 99])
    assert rows.tolist() == [[6, 1], [7, 2]]  # out-of-range 99 dropped
    assert frames.tolist() == [1, 2]


def test_store_keeps_latest_heartbeat_per_node_and_counts_topics():
    store = LiveStore()
    store.add(Message("heartbeat", meta={"status": "ready"}, source="a"))
    store.add(Message("heartbeat", meta={"status": "running"}, source="a"))
    store.add(Message("heartbeat", meta={"status": "idle"}, source="b"))
    nodes = store.nodes()
    assert nodes["a"][0]["status"] == "running" and nodes["b"][0]["status"] == "idle"
    assert store.counts["heartbeat"] == 3


def test_store_measures_its_own_latency_from_acquisition():
    store = LiveStore()
    msg = Message("traces", {"dff": np.zeros(3, np.float32)}, frame=0, t_acq_ns=1_000_000,
                  t_send_ns=3_000_000)
    store.add(msg, now_ns=5_000_000)
    hist = store.latency["traces"]
    assert hist["hop"].max_ns == 2_000_000 and hist["age"].max_ns == 4_000_000


def test_store_reads_anatomy_and_truth_from_sim_truth():
    store = LiveStore()
    pos = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    store.add(Message("sim.truth", {"positions": pos, "regions": np.array([0, 1, 1, 0]),
                                    "presyn": np.zeros((4, 2), np.int32)},
                      meta={"region_names": ["a", "b"]}))
    assert np.array_equal(store.anatomy["positions"], pos)
    assert store.anatomy["region_names"] == ["a", "b"]
    assert "presyn" in store.truth and store.version("anatomy") == 1
    store.add(Message("anatomy", {"positions": pos.copy(), "regions": np.array([0, 1, 1, 0])},
                      meta={"region_names": ["a", "b"]}))
    assert store.version("anatomy") == 1  # republished unchanged: the views keep their zoom
    store.add(Message("anatomy", {"positions": pos + 1, "regions": np.array([0, 1, 1, 0])},
                      meta={"region_names": ["a", "b"]}))
    assert store.version("anatomy") == 2
    assert np.array_equal(store.anatomy["positions"], pos + 1)


def test_quantize_maps_levels_to_bytes_and_nan_to_zero():
    out = quantize(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]), 0.0, 1.0)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 127, 255, 255, 0]


def test_pump_files_every_message_from_a_real_bus(proxy):
    pub = Publisher(proxy.pub, "src")
    sub = Subscriber(proxy.sub, ("traces",))
    try:
        wait_connected(pub, sub, "_hello.gui")
        store = LiveStore(capacity=64)
        stop = threading.Event()
        thread = threading.Thread(target=pump, args=(sub, store, stop), kwargs={"poll_ms": 10})
        thread.start()
        for f in range(50):
            pub.publish("traces", {"dff": np.full(10, f, np.float32)}, frame=f)
        deadline = threading.Event()
        for _ in range(200):
            if store.counts["traces"] == 50:
                break
            deadline.wait(0.01)
        stop.set()
        thread.join(2)
        rows, frames, _, total = store.frames_since("traces", 0)
        assert total == 50 and frames.tolist() == list(range(50))
        assert rows[:, 0].tolist() == list(range(50))
    finally:
        pub.close()
        sub.close()
