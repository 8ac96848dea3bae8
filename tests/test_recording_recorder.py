"""The recorder node in-process on a real proxy: what it keeps, what it counts as lost."""
import time

import numpy as np
import pytest

from rig.bus import Endpoints, Publisher
from rig.node import NodeSpec
from rig.recording.format import RecordingReader
from rig.recording.recorder import Recorder

pytestmark = pytest.mark.timeout(30)


def until(condition, timeout_s=10.0):
    """Wait for ``condition()`` (checked every 10 ms), failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def recorder(proxy, tmp_path):
    (tmp_path / "truth").mkdir()
    np.save(tmp_path / "truth" / "presyn.npy", np.arange(6).reshape(3, 2))
    np.save(tmp_path / "truth" / ".presyn.tmp.npy", np.zeros(1))  # a write in progress
    spec = NodeSpec("recorder", "rig.recording.recorder:Recorder", {"flush_s": 0.1},
                    Endpoints(proxy.pub, proxy.sub, ""), str(tmp_path))
    node = Recorder(spec, Publisher(proxy.pub, "recorder"))
    node.setup()
    yield node
    node.teardown()
    node._pub.close()


def test_sequence_gaps_are_counted_as_errors_and_the_rest_is_kept(recorder, proxy):
    pub = Publisher(proxy.pub, "fish")
    from rig.bus import Subscriber, wait_connected

    probe = Subscriber(proxy.sub, ())
    wait_connected(pub, probe, "_hello.test")  # (probes are not recorded)
    probe.close()
    for k in range(6):
        if k == 3:
            pub._seq["traces"] += 2  # two messages lost upstream
        pub.publish("traces", {"dff": np.full(4, k, np.float32)}, frame=k)
    until(lambda: recorder.per_topic.get("traces", 0) == 6)
    assert recorder.lost == 2 and recorder.counters["errors"] == 2
    assert "lost 2 message(s) on 'traces'" in recorder.counters["last_error"]
    until(lambda: recorder.flushed == recorder.recorded)  # flushed on its timer
    recorder.teardown()
    reader = RecordingReader(recorder.path)
    topics = [e.topic for e in reader.entries()]
    assert topics.count("traces") == 6 and not any(t.startswith("_hello") for t in topics)
    assert reader.json("recorder")["lost"] == 2
    assert list(reader.attachments) == ["truth/presyn.npy"]
    pub.close()


def test_record_off_skips_messages_and_record_on_resumes(recorder, proxy):
    from rig.bus import Subscriber, wait_connected
    from rig.node import Verb

    pub = Publisher(proxy.pub, "fish")
    probe = Subscriber(proxy.sub, ())
    wait_connected(pub, probe, "_hello.test")
    probe.close()
    recorder.on_control(Verb.RECORD, {"on": False})
    assert recorder.stats()["recording"] is False
    pub.publish("traces", {"dff": np.zeros(4, np.float32)}, frame=0)
    until(lambda: recorder.skipped == 1)
    recorder.on_control(Verb.RECORD, {"on": True})
    pub.publish("traces", {"dff": np.ones(4, np.float32)}, frame=1)
    until(lambda: recorder.per_topic.get("traces", 0) == 1)
    assert recorder.lost == 0  # skipped on purpose is not lost
    pub.close()
