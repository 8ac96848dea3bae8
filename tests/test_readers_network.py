"""Frames pushed over ZeroMQ by an acquisition PC, on real sockets."""
import json

import numpy as np
import pytest
import zmq

from rig.readers import FrameSizeError
from rig.readers.network import NetworkReader, send_end, send_frame
from rig.readers.tiff import FramesStopped

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def link():
    reader = NetworkReader("tcp://127.0.0.1:0", timeout_s=2.0)
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.linger = 0
    push.connect(reader.endpoint)
    yield reader, push
    push.close(0)
    reader.close()


def test_frames_arrive_with_number_time_and_extra_fields(link):
    reader, push = link
    images = np.random.default_rng(0).integers(0, 4000, (3, 32, 48), dtype=np.uint16)
    for k, image in enumerate(images):
        send_frame(push, image, frame=k, t_ns=1_000 + k, plane=0)
    got = [reader.next_frame() for _ in range(3)]
    np.testing.assert_array_equal([g.image for g in got], images)
    assert [g.index for g in got] == [0, 1, 2] and got[2].t_acq_ns == 1_002
    assert got[0].meta == {"plane": 0}


def test_matlab_column_major_frames_are_read_the_right_way_round(link):
    reader, push = link
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    header = {"v": 1, "frame": 0, "dtype": "uint16", "shape": [3, 4], "order": "F"}
    push.send_multipart([b"frame", json.dumps(header).encode(), image.tobytes(order="F")])
    np.testing.assert_array_equal(reader.next_frame().image, image)


def test_gaps_in_frame_numbers_count_as_drops_and_end_is_reported(link):
    reader, push = link
    for k in (0, 1, 4):
        send_frame(push, np.zeros((4, 4), np.uint16), frame=k)
    send_end(push)
    assert [reader.next_frame().index for _ in range(3)] == [0, 1, 4]
    assert reader.dropped == 2
    assert reader.next_frame() is None and reader.ended


def test_malformed_messages_are_counted_and_skipped(link):
    reader, push = link
    push.send_multipart([b"frame", b"{not json", b""])
    push.send_multipart([b"frame", json.dumps({"frame": 1, "dtype": "uint16",
                                               "shape": [4, 4]}).encode(), b"short"])
    push.send_multipart([b"frame", json.dumps({"frame": 2, "dtype": "object",
                                               "shape": [1, 1]}).encode(), b"x"])
    send_frame(push, np.ones((4, 4), np.uint16), frame=3)
    assert reader.next_frame().index == 3
    assert reader.malformed == 3 and "dtype 'object'" in reader.last_error


def test_a_frame_of_the_wrong_size_is_a_clear_error(link):
    reader, push = link
    reader.shape = (512, 512)
    send_frame(push, np.zeros((256, 512), np.uint16), frame=0)
    with pytest.raises(FrameSizeError, match="frame 0: 256 x 512 pixels, expected 512 x 512"):
        reader.next_frame()


def test_silence_times_out_naming_the_endpoint(link):
    reader, _ = link
    with pytest.raises(FramesStopped, match=r"tcp://127\.0\.0\.1:\d+: no frame for 0\.1 s"):
        reader.next_frame(timeout_s=0.1)


def test_a_busy_port_is_named():
    first = NetworkReader("tcp://127.0.0.1:0")
    try:
        with pytest.raises(ValueError, match="cannot listen for frames on"):
            NetworkReader(first.endpoint)
    finally:
        first.close()


def test_cancel_from_another_thread_ends_a_long_wait(link):
    import threading

    from rig.readers import ReaderCancelled

    reader, _ = link
    cancelled = threading.Event()

    def cancel():
        cancelled.set()  # before the reader can see the cancel and raise
        reader.cancel()

    threading.Timer(0.05, cancel).start()
    with pytest.raises(ReaderCancelled):  # its 10 s timeout would raise FramesStopped
        reader.next_frame(timeout_s=10.0)
    # the wait ended because of the cancel, whatever the load: no bound on the time it took
    assert cancelled.is_set()
