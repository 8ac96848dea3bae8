"""The wire format: what goes out comes back, and anything malformed is named, never run."""
import msgspec
import numpy as np
import pytest

from rig.messages import SCHEMA_VERSION, Message, MessageError, decode, encode


def traces(n=8):
    return Message("traces", {"dff": np.arange(n, dtype=np.float32)}, {"note": "x"}, frame=3,
                   t_acq_ns=123, source="fish", seq=7)


def test_round_trip_keeps_arrays_meta_and_stamps():
    msg = Message("x", {"a": np.arange(6, dtype=np.int16).reshape(2, 3),
                        "b": np.zeros(0, np.float64)}, {"k": [1, 2], "s": "y"}, 4, 99, "n", 5)
    out = decode(encode(msg))
    assert out.topic == "x" and out.frame == 4 and out.t_acq_ns == 99 and out.seq == 5
    np.testing.assert_array_equal(out["a"], msg["a"])
    assert out["a"].dtype == np.int16 and out["b"].shape == (0,)
    assert out.meta == {"k": [1, 2], "s": "y"}
    assert out.t_send_ns >= 99


def test_non_contiguous_arrays_are_sent_as_their_values():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    out = decode(encode(Message("x", {"a": a})))
    np.testing.assert_array_equal(out["a"], a)


def test_received_arrays_are_read_only_views():
    out = decode(encode(traces()))
    with pytest.raises(ValueError):
        out["dff"][0] = 1


@pytest.mark.parametrize("frames, expected", [
    ([b"traces"], "truncated"),
    ([b"traces", b"\xff\x00garbage"], "bad header"),
    ([b"\xff\xfe", b"x"], "utf-8"),
])
def test_garbage_is_a_message_error(frames, expected):
    with pytest.raises(MessageError, match=expected):
        decode(frames)


def test_newer_schema_version_says_upgrade():
    frames = encode(traces())
    header = msgspec.msgpack.decode(frames[1])
    header["v"] = SCHEMA_VERSION + 1
    header["new_field"] = 1  # a newer schema may add fields
    frames[1] = msgspec.msgpack.encode(header)
    with pytest.raises(MessageError, match="schema version 2.*upgrade"):
        decode(frames)


def test_short_buffer_names_the_array():
    frames = encode(traces())
    frames[2] = bytes(frames[2])[:-4]
    with pytest.raises(MessageError, match=r"traces.dff: buffer holds 28 bytes.*needs 32"):
        decode(frames)


def test_missing_buffer_is_truncated():
    frames = encode(traces())[:2]
    with pytest.raises(MessageError, match="1 array.*0 buffer"):
        decode(frames)


def test_shape_mismatch_and_unknown_dtype_are_refused():
    frames = encode(traces())
    header = msgspec.msgpack.decode(frames[1])
    header["arrays"][0][2] = [3, 3]
    frames[1] = msgspec.msgpack.encode(header)
    with pytest.raises(MessageError, match="needs 36"):
        decode(frames)
    header["arrays"][0][1] = "object"
    frames[1] = msgspec.msgpack.encode(header)
    with pytest.raises(MessageError, match="unknown dtype 'object'"):
        decode(frames)


def test_known_topics_check_their_arrays():
    bad = Message("traces", {"dff": np.zeros(4, np.int16)})
    with pytest.raises(MessageError, match="traces.dff: dtype int16, expected float32"):
        decode(encode(bad))
    with pytest.raises(MessageError, match="missing array 'targets'"):
        decode(encode(Message("stim.plan", {"power_mw": np.zeros(2, np.float32)})))


def test_objects_cannot_be_sent():
    with pytest.raises(MessageError, match="dtype object cannot be sent"):
        encode(Message("x", {"a": np.array([object()])}))
    with pytest.raises(MessageError, match="meta holds only"):
        encode(Message("x", meta={"f": object()}))
