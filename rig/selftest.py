"""Small nodes that exercise the runtime without any science: a paced source, a sink, and a
planner stand-in that asks for a stimulation at a fixed rate.

``rig run --selftest`` runs them; tests use them to check the runtime itself.
"""
from __future__ import annotations

import os
import signal
import time

import msgspec
import numpy as np

from rig.messages import STIM_PLAN, TRACES
from rig.node import Node, Verb


class Source(Node):
    """Publishes ``traces`` of random dF/F at a fixed rate, like a microscope would."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        n_neurons: int = 1000
        rate_hz: float = 30.0  # 0: as fast as possible
        n_frames: int = 0  # stop after this many (0: no limit)

    def setup(self):
        self.step_interval_s = 1.0 / self.settings.rate_hz if self.settings.rate_hz else 0.0
        self.rng = np.random.default_rng(self.seed)
        self.frame = 0

    def step(self):
        if self.settings.n_frames and self.frame >= self.settings.n_frames:
            self.running = False
            return
        dff = self.rng.standard_normal(self.settings.n_neurons, dtype=np.float32)
        self.publish(TRACES, {"dff": dff}, frame=self.frame, t_acq_ns=time.time_ns())
        self.frame += 1

    def stats(self):
        return {"frames": self.frame}

    def summary(self):
        return {"frames published": self.frame}


class Sink(Node):
    """Receives ``traces`` and checks them; ``delay_ms`` makes it a deliberately slow reader."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        delay_ms: float = 0.0
        fail_every: int = 0  # raise in every Nth handler call (tests of error handling)
        exit_on_frame: int = -1  # the process dies on this frame (tests of restarts)
        always_exit: bool = False  # the process dies on every frame (restart budget tests)
        unsendable_stats: bool = False  # stats() returns what msgpack cannot carry
        setup_s: float = 0.0  # setup takes this long, deaf to SIGTERM (a model loading)

    subscribe = (TRACES,)

    def setup(self):
        self.frames = 0
        if self.settings.setup_s:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(self.settings.setup_s)  # the deliberately slow load under test

    def on_message(self, msg):
        self.frames += 1
        if self.settings.always_exit or msg.frame == self.settings.exit_on_frame:
            os._exit(3)  # a crash the handler cannot catch
        if self.settings.fail_every and self.frames % self.settings.fail_every == 0:
            raise RuntimeError(f"deliberate failure on frame {msg.frame}")
        if self.settings.delay_ms:
            time.sleep(self.settings.delay_ms / 1000)  # the deliberate slowness under test

    def on_control(self, verb, args):
        if verb is Verb.SET:  # remembered and reported: tests of the control path
            self.last_set = f"{args['key']}={args['value']}"
        elif verb is Verb.RECORD:
            self.recording = args["on"]

    def stats(self):
        if self.settings.unsendable_stats:
            return {"frames": self.frames, "bad": np.bool_(True)}
        return {"frames": self.frames, "set": getattr(self, "last_set", ""),
                "recording": getattr(self, "recording", None)}

    def summary(self):
        return {"frames received": self.frames}


class PlanSource(Node):
    """Asks for a one-target stimulation (``stim.plan``) every ``1 / rate_hz`` s, as a
    planner would: a stand-in to test the SLM's safety without the science."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        rate_hz: float = 20.0
        power_mw: float = 1.0

    def setup(self):
        self.step_interval_s = 1.0 / self.settings.rate_hz
        self.plans = 0

    def step(self):
        self.publish(STIM_PLAN, {"targets": np.array([self.plans % 5], np.int32),
                                 "power_mw": np.array([self.settings.power_mw], np.float32)},
                     frame=self.plans, t_acq_ns=time.time_ns())
        self.plans += 1

    def stats(self):
        return {"plans": self.plans}
