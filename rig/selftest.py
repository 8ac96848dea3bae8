"""Two small nodes that exercise the bus without any science: a paced source and a sink.

``rig run --selftest`` runs them; tests use them to check the runtime itself.
"""
from __future__ import annotations

import os
import time

import msgspec
import numpy as np

from rig.node import Node


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
        self.publish("traces", {"dff": dff}, frame=self.frame, t_acq_ns=time.time_ns())
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

    subscribe = ("traces",)

    def setup(self):
        self.frames = 0

    def on_message(self, msg):
        self.frames += 1
        if self.settings.always_exit or msg.frame == self.settings.exit_on_frame:
            os._exit(3)  # a crash the handler cannot catch
        if self.settings.fail_every and self.frames % self.settings.fail_every == 0:
            raise RuntimeError(f"deliberate failure on frame {msg.frame}")
        if self.settings.delay_ms:
            time.sleep(self.settings.delay_ms / 1000)  # the deliberate slowness under test

    def stats(self):
        if self.settings.unsendable_stats:
            return {"frames": self.frames, "bad": np.bool_(True)}
        return {"frames": self.frames}

    def summary(self):
        return {"frames received": self.frames}
