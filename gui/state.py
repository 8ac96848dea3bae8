"""What the loop is doing, in one word and one line, from what the nodes and supervisor say.

The dashboard never shows a state its buttons assume: ``loop_state`` reads the nodes'
heartbeats, the supervisor's STATUS reply (which lists every node, ready or not, while the
loop starts) and whether the loop's process is alive. States:

* ``no loop``: nothing attached or launched;
* ``starting``: nodes still being spawned or loading (``N/M nodes ready``, what each is
  waiting for, a decoder's phase), or all ready but not yet started;
* ``running`` / ``paused``: after the supervisor's START, by the nodes' ``running`` flags
  (the planner alone may be paused: that is "mapping paused", not a paused loop);
* ``stopped``: the loop ended after a Stop from this window; ``ended``: it ended otherwise
  (its duration, a failure, another client's stop).
"""
from __future__ import annotations

from dataclasses import dataclass

READY_STATUSES = ("ready", "idle", "running")


@dataclass(frozen=True)
class LoopState:
    state: str
    detail: str = ""

    def text(self) -> str:
        return f"loop: {self.state}" + (f" ({self.detail})" if self.detail else "")


def loop_state(beats: dict, status: dict | None, alive: bool | None, ever_ran: bool,
               stop_requested: bool = False, planner: str | None = None,
               end_reason: str = "") -> LoopState:
    """The loop's state.

    Parameters
    ----------
    beats : dict
        node -> latest heartbeat meta.
    status : dict or None
        The supervisor's latest STATUS reply (node -> {"status", ...}), if any.
    alive : bool or None
        Whether the loop is still there (None: no loop attached or launched).
    ever_ran : bool
        Some node has reported ``running`` since this run began.
    stop_requested : bool
        This window sent Stop to this run.
    planner : str, optional
        The mapping node, whose own pause is not the loop's.
    end_reason : str
        Why the loop ended, when known.
    """
    if alive is None:
        return LoopState("no loop", "press Start" if not end_reason else end_reason)
    if not alive:
        return LoopState("stopped" if stop_requested else "ended", end_reason)
    names = set(beats) | set(status or {})
    live = {n: b for n, b in beats.items() if b.get("status") != "exited"}
    ready = [n for n in names if beats.get(n, {}).get("status") in READY_STATUSES]
    loading = phases(beats)
    if not ever_ran or len(ready) < len(names) or not names:
        waiting = sorted(n for n in names if n not in ready)
        parts = [f"{len(ready)}/{len(names)} nodes ready" if names else "waiting for nodes"]
        if waiting:
            parts.append("waiting for " + ", ".join(waiting))
        parts += loading
        return LoopState("starting", "; ".join(parts))
    running = any(b.get("running") for n, b in live.items() if n != planner)
    return LoopState("running" if running else "paused", "; ".join(loading))


def phases(beats: dict) -> list[str]:
    """What nodes report they are still doing, e.g. "decoder fitting, ready in 23 s".

    Read from a heartbeat's ``stats``: "phase" (loading / fitting / ready) and
    "ready_in_s"; a node that says nothing of a phase says nothing here.
    """
    out = []
    for name, beat in sorted(beats.items()):
        stats = beat.get("stats")
        if not isinstance(stats, dict):
            continue
        phase = stats.get("phase")
        if not phase or phase == "ready" or beat.get("status") == "exited":
            continue
        eta = stats.get("ready_in_s")
        when = f", ready in {eta:.0f} s" if isinstance(eta, (int, float)) and eta >= 0 else ""
        out.append(f"{name} {phase}{when}")
    return out
