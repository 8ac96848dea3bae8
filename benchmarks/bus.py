"""Bus benchmark: Rig's proxy + typed messages against a bare pyzmq PUB/SUB pair.

Two processes (a sender spawned here; this process receives and, for the bus, runs the
proxy thread as the supervisor does). For each payload: one-way latency of paced messages
(receive time - send stamp, same clock), then throughput of an unpaced burst, then frames
paced at 30/s that must arrive with zero drops.

    python -m benchmarks.bus [--quick] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import msgspec
import numpy as np
import zmq

from benchmarks.common import percentiles_ms, table, write_json
from rig.bus import Proxy, Publisher, Subscriber
from rig.messages import FRAME, TRACES

PAYLOADS = {
    "traces 1k f32": (TRACES, "dff", (1_000,), np.float32),
    "traces 10k f32": (TRACES, "dff", (10_000,), np.float32),
    "traces 100k f32": (TRACES, "dff", (100_000,), np.float32),
    "frame 512x512 u16": (FRAME, "image", (512, 512), np.uint16),
}


def _bare_header(seq: int, probe: bool) -> bytes:
    return msgspec.msgpack.encode({"seq": seq, "t": time.time_ns(), "p": probe})


def _sender(mode, endpoint, payload, plan, ready, done):
    """plan: list of (count, interval_s) phases; each message carries its send time."""
    topic, name, shape, dtype = PAYLOADS[payload]
    array = np.ones(shape, dtype)
    ctx = zmq.Context()
    if mode == "bus":
        pub = Publisher(endpoint, "bench", hwm=100_000, ctx=ctx)
        send = lambda seq, meta: pub.publish(topic, {name: array}, meta)  # noqa: E731
    else:
        sock = ctx.socket(zmq.PUB)
        sock.sndhwm = 100_000
        sock.connect(endpoint)  # the receiver bound it (port 0): no port to race for
        flat = array.reshape(-1).view(np.uint8)
        send = lambda seq, meta: sock.send_multipart(  # noqa: E731
            [topic.encode(), _bare_header(seq, "probe" in meta), flat], copy=False)
    seq = 0
    while not ready.is_set():  # slow joiner: probe until the receiver has heard us
        send(seq, {"probe": True})
        seq += 1
        time.sleep(0.01)
    for count, interval in plan:
        t_next = time.perf_counter()
        for _ in range(count):
            send(seq, {})
            seq += 1
            if interval:
                t_next += interval
                while time.perf_counter() < t_next:
                    pass  # pacing by spin: sleep() jitter would be measured as latency
        done.wait(30)
        done.clear()
    ctx.destroy(linger=2000)


def run_case(mode: str, payload: str, plan: list[tuple[int, float]]) -> list[dict]:
    """Receive every phase of ``plan``; return per-phase latency, rate and drops."""
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    proxy = None
    zctx = zmq.Context()
    if mode == "bus":
        proxy = Proxy(hwm=100_000)
        sub = Subscriber(proxy.sub, ("",), hwm=100_000, ctx=zctx)
        endpoint = proxy.pub
    else:
        sock = zctx.socket(zmq.SUB)
        sock.rcvhwm = 100_000
        sock.subscribe(b"")
        endpoint = "tcp://127.0.0.1:%d" % sock.bind_to_random_port("tcp://127.0.0.1")
    sender = ctx.Process(target=_sender, args=(mode, endpoint, payload, plan, ready, done))
    sender.start()
    nbytes = int(np.prod(PAYLOADS[payload][2])) * np.dtype(PAYLOADS[payload][3]).itemsize
    results = []
    last_seq = None
    for phase, (count, interval) in enumerate(plan):
        latencies, got, drops, t_first, t_last = [], 0, 0, 0.0, 0.0
        deadline = time.monotonic() + 30 + count * max(interval, 0.002)
        while got + drops < count and time.monotonic() < deadline:
            if mode == "bus":
                if not sub.sock.poll(1000):
                    continue
                msg = sub.accept(sub.sock.recv_multipart(copy=False))
                now = time.time_ns()
                if msg is None:  # malformed: the subscriber counts it
                    continue
                seq, t_send, probe = msg.seq, msg.t_send_ns, msg.meta.get("probe")
            else:
                if not sock.poll(1000):
                    continue
                frames = sock.recv_multipart(copy=False)
                now = time.time_ns()
                header = msgspec.msgpack.decode(frames[1].buffer)
                np.frombuffer(frames[2].buffer, np.uint8)
                seq, t_send, probe = header["seq"], header["t"], header["p"]
            if probe:
                ready.set()
                last_seq = seq
                continue
            if last_seq is not None and seq > last_seq + 1:
                drops += seq - last_seq - 1
            last_seq = seq
            got += 1
            latencies.append(now - t_send)
            t_last = time.perf_counter()
            t_first = t_first or t_last
        done.set()
        span = max(t_last - t_first, 1e-9)
        rate = (got - 1) / span if got > 1 else 0.0
        results.append({"phase": phase, "received": got, "drops": drops, "msgs_per_s": rate,
                        "MB_per_s": rate * nbytes / 1e6, **percentiles_ms(latencies)})
    sender.join(10)
    if mode == "bus":
        sub.close()
        proxy.close()
    else:
        sock.close(0)
    zctx.term()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/bus.json)")
    args = parser.parse_args(argv)
    n_lat, n_burst, n_paced = (200, 500, 30) if args.quick else (1000, 3000, 150)
    rows = []
    for payload in PAYLOADS:
        is_frame = payload.startswith("frame")
        plan = [(n_lat, 0.005), (n_burst, 0.0)] + ([(n_paced, 1 / 30)] if is_frame else [])
        for mode in ("bare", "bus"):
            latency, burst, *paced = run_case(mode, payload, plan)
            rows.append({"payload": payload, "path": mode,
                         "p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"],
                         "msgs_per_s": burst["msgs_per_s"], "MB_per_s": burst["MB_per_s"],
                         "burst_drops": burst["drops"],
                         "drops_at_30fps": paced[0]["drops"] if paced else ""})
    for payload in PAYLOADS:
        bare, bus = (r for r in rows if r["payload"] == payload)
        bus["p99_vs_bare"] = bus["p99_ms"] / bare["p99_ms"]
    columns = ["payload", "path", "p50_ms", "p99_ms", "p99_vs_bare", "msgs_per_s", "MB_per_s",
               "burst_drops", "drops_at_30fps"]
    print(table(rows, columns))
    path = write_json("bus", {"rows": rows, "quick": args.quick}, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
