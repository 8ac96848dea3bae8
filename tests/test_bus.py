"""The bus: proxy forwarding, slow subscribers, malformed input and CURVE authentication."""
import numpy as np
import pytest
import zmq

from rig.bus import Keys, Proxy, Publisher, Subscriber, make_keys, wait_connected


@pytest.fixture
def pair(proxy):
    pub = Publisher(proxy.pub, "src")
    sub = Subscriber(proxy.sub, ("traces", "frame"))
    wait_connected(pub, sub, "_hello")
    yield pub, sub
    pub.close()
    sub.close()


def test_arrays_cross_the_proxy_unchanged(pair):
    pub, sub = pair
    image = np.random.default_rng(0).integers(0, 65535, (512, 512), dtype=np.uint16)
    pub.publish("frame", {"image": image}, frame=1, t_acq_ns=5)
    msg = sub.recv(timeout_ms=2000)
    assert msg.source == "src" and msg.frame == 1 and msg.t_acq_ns == 5
    np.testing.assert_array_equal(msg["image"], image)


def test_subscriber_gets_only_its_topics(pair):
    pub, sub = pair
    pub.publish("decoded", {"pred": np.zeros(2, np.float32)})
    pub.publish("traces", {"dff": np.zeros(3, np.float32)})
    assert sub.recv(timeout_ms=2000).topic == "traces"


def test_slow_subscriber_never_blocks_publisher_and_drops_are_counted_exactly():
    proxy = Proxy(hwm=50)
    pub = Publisher(proxy.pub, "src", hwm=50)
    slow = Subscriber(proxy.sub, ("traces",), hwm=50)
    try:
        wait_connected(pub, slow, "_hello")
        dff = np.zeros(1000, np.float32)
        # The subscriber reads nothing while 10,000 messages go out: every send must return
        # at once (NOBLOCK would raise zmq.Again if the publisher could block).
        for i in range(10_000):
            pub.publish("traces", {"dff": dff}, frame=i)
        # Then it drains; an end marker, re-sent until it arrives, closes the count.
        received, end = 0, None
        while end is None:
            pub.publish("traces", {"dff": dff}, meta={"end": True})
            while (msg := slow.recv(timeout_ms=20)) is not None:
                if msg.meta.get("end"):
                    end = msg
                    break
                received += 1
        dropped = slow.drops["traces"]
        assert dropped > 0, "a queue of 50 cannot hold 10,000 messages"
        assert 0 < received < 10_000
        # Every message up to the marker is either received or counted as dropped.
        assert received + dropped + 1 == end.seq + 1
    finally:
        pub.close()
        slow.close()
        proxy.close()


def test_malformed_messages_are_counted_and_the_stream_goes_on(pair):
    pub, sub = pair
    raw = zmq.Context.instance().socket(zmq.PUB)  # a peer that ignores the wire format
    raw.linger = 0
    raw.connect(pub.sock.last_endpoint.decode())
    try:
        for frames in ([b"traces", b"\x00garbage"], [b"traces"]):
            before = sub.malformed
            while sub.malformed == before:  # resend until it has joined and been counted
                raw.send_multipart(frames)
                assert sub.recv(timeout_ms=50) is None
        assert sub.malformed == 2 and "truncated" in sub.last_error
        pub.publish("traces", {"dff": np.ones(2, np.float32)})
        msg = sub.recv(timeout_ms=2000)
        while msg is None:  # late copies of the garbage may still be in flight
            msg = sub.recv(timeout_ms=2000)
        assert msg["dff"].tolist() == [1.0, 1.0]
    finally:
        raw.close(0)


def _handshake_failure(sock: zmq.Socket, endpoint: str, timeout_ms: int = 5000) -> int:
    """Connect ``sock`` and wait for the monitor event that says its handshake failed."""
    from zmq.utils.monitor import recv_monitor_message

    failures = {zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}
    mon = sock.get_monitor_socket()
    sock.connect(endpoint)
    try:
        while mon.poll(timeout_ms):
            event = recv_monitor_message(mon)["event"]
            if event in failures:
                return event
        raise AssertionError("no handshake failure reported")
    finally:
        sock.disable_monitor()
        mon.close(0)


def test_curve_bus_accepts_listed_keys_and_refuses_others(tmp_path, caplog):
    keys = {name: Keys(str(tmp_path / "keys"), name) for name in ("acq", "gpu")}
    make_keys(tmp_path / "keys", list(keys))
    make_keys(tmp_path / "stranger", ["acq"])  # a key pair this bus never authorised
    proxy = Proxy(keys=keys["acq"])
    acq = Publisher(proxy.pub, "acq", keys=keys["acq"])
    gpu = Subscriber(proxy.sub, ("traces",), keys=keys["gpu"])
    stranger = zmq.Context.instance().socket(zmq.PUB)
    plain = zmq.Context.instance().socket(zmq.PUB)
    stranger.linger = plain.linger = 0
    try:
        wait_connected(acq, gpu, "_hello")
        acq.publish("traces", {"dff": np.ones(3, np.float32)})
        assert gpu.recv(timeout_ms=2000)["dff"].sum() == 3

        wrong = Keys(str(tmp_path / "stranger"), "acq")
        stranger.curve_publickey, stranger.curve_secretkey = wrong.client_pair()
        stranger.curve_serverkey = keys["acq"].server_public()
        assert _handshake_failure(stranger, proxy.pub) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        refused = [r for r in caplog.records if "refused a CURVE handshake" in r.getMessage()]
        assert refused and refused[0].levelname == "WARNING"  # not silent, not DEBUG
        assert _handshake_failure(plain, proxy.pub) == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        # Nothing they send reaches a subscriber; keyed traffic goes on.
        stranger.send_multipart([b"traces", b"x"])
        plain.send_multipart([b"traces", b"x"])
        acq.publish("traces", {"dff": np.ones(1, np.float32)})
        assert gpu.recv(timeout_ms=2000)["dff"].tolist() == [1.0]
        assert gpu.malformed == 0
    finally:
        for sock in (stranger, plain):
            sock.close(0)
        acq.close()
        gpu.close()
        proxy.close()
