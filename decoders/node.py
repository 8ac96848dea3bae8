"""The decoder on the bus: ``traces`` in, ``decoded`` out for every frame, scored against ``tail``.

Two modes:

- ``decoder = "FOLDER"``: a decoder trained by ``rig train``, streamed frame by frame
  (``decoders.stream.StreamingDecoder``; online == offline).
- ``decoder = ""`` (default, what ``rig run --sim`` uses): ``decoders.online.OnlineRidgeDecoder``,
  the pretrained backbone frozen, screened inputs, a ridge head fitted from the first
  ``warmup_frames`` labelled frames and refitted every ``refit_every``. Until then ``decoded``
  carries zeros with ``meta.ready = False``.

Every ``decoded`` message carries the frame's index and acquisition time, ``pred`` float32
(S,), and meta ``moving`` (decoded vigour above the bout threshold; the planner stimulates in
quiescence), ``vigour`` and ``ready``. The running Pearson r of predictions against the
``tail`` labels (each prediction made before its label was used) goes into the heartbeat stats
and the closing summary, side by side with the ablation's: the same head without the LLM's
features (online mode), or a trained decoder's linear path alone (``rig train --lags``). The
stats also carry ``phase`` ("fitting": warm-up before the first fit; "ready") and ``load_s``,
the seconds the backbone or decoder took to load at setup (the first start converts the
packaged GGUF backbone once, ``decoders.backbone``; later starts load the cached copy).
"""
from __future__ import annotations

import time
from collections import OrderedDict

import msgspec
import numpy as np

from decoders.evaluate import RunningPearson
from rig.messages import DECODED, TAIL, TRACES
from rig.node import Node

PENDING = 512  # frames of predictions / labels held while waiting for their partner


class Decoder(Node):
    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        decoder: str = ""  # trained decoder folder; "" = fit online from the run's first frames
        backbone: str = "smollm2"  # online mode: backbone spec (decoders.backbone)
        pretrained: bool = True  # online mode: False = the random-init twin
        layers: int = 0  # online mode: backbone blocks kept (0 = all 30 of SmolLM2)
        head_lags: int = 0  # online mode: 0 = head on LLM features only; L = also last L inputs
        window: int = 16  # online mode: frames of context (latency grows with it)
        screen: int = 64  # online mode: neurons kept
        warmup_frames: int = 60  # online mode: labelled frames before the first fit (30 s at 2 Hz)
        refit_every: int = 30  # online mode: labelled frames between ridge refits
        n_segments: int = 8  # size of pred before anything is known (then from labels)
        moving_threshold: float = 0.0  # rad of mean |angle|; 0 = from the labels / decoder
        threads: int = 1  # torch CPU threads: >1 on oversubscribed cores is many times slower

    subscribe = (TRACES, TAIL)

    def setup(self) -> None:
        import torch

        s = self.settings
        if (s.window < 1 or s.screen < 1 or s.warmup_frames < 10 or s.refit_every < 1
                or s.threads < 1):
            raise ValueError(f"decoder settings: window={s.window}, screen={s.screen}, "
                             f"warmup_frames={s.warmup_frames}, refit_every={s.refit_every}, "
                             f"threads={s.threads}; need >=1, >=1, >=10, >=1, >=1")
        torch.set_num_threads(s.threads)
        t0 = time.perf_counter()
        self.log.info("loading decoder (%s)", s.decoder or f"backbone {s.backbone}")
        self.stream = self.online = None
        self.horizon = 0  # frames ahead each prediction is of (a trained decoder's horizon)
        self.n_out = s.n_segments
        self.threshold = s.moving_threshold or np.inf
        if s.decoder:
            from decoders.model import Decoder as Trained
            from decoders.stream import StreamingDecoder

            dec = Trained.load(s.decoder)
            self.stream = StreamingDecoder(dec)
            self.n_out = dec.config.n_outputs
            self.horizon = dec.config.horizon
            self.threshold = s.moving_threshold or dec.config.extra.get("bout_threshold", np.inf)
            self.mode = f"trained:{s.decoder}"
        else:
            # Load the backbone now (seconds to a minute), not at the first frame.
            from decoders import backbone as bb

            self._backbone = bb.load(bb.BackboneSpec(s.backbone, s.pretrained, self.seed, s.layers))
        self.load_s = time.perf_counter() - t0
        self.log.info("decoder loaded in %.1f s", self.load_s)
        # frame -> (prediction, ablation prediction or None), frame -> label
        self.preds: OrderedDict[int, tuple] = OrderedDict()
        self.labels: OrderedDict[int, np.ndarray] = OrderedDict()
        self.scorer: RunningPearson | None = None
        self.ablation_scorer: RunningPearson | None = None
        self._shape_warned = False
        self.n_decoded = 0

    def _online(self, n_neurons: int):
        from decoders.online import OnlineRidgeDecoder

        s = self.settings
        self.log.info("online decoder: backbone %s (pretrained=%s), %d neurons", s.backbone,
                      s.pretrained, n_neurons)
        self.mode = f"online-ridge:{s.backbone}{'' if s.pretrained else ' (random init)'}"
        return OnlineRidgeDecoder(n_neurons, s.backbone, s.pretrained, s.window, s.screen,
                                  s.warmup_frames, s.refit_every, seed=self.seed, layers=s.layers,
                                  model=self._backbone, head_lags=s.head_lags)

    def on_message(self, msg) -> None:
        if msg.topic == TRACES:
            self._decode(msg)
        elif msg.topic == TAIL:
            self._label(msg.frame, np.array(msg["angles"], np.float64))

    def _decode(self, msg) -> None:
        x = msg["dff"]
        if self.stream is not None:
            pred = self.stream.push(x)
            ablation = self.stream.linear_pred
        else:
            if self.online is None:
                self.online = self._online(len(x))
            pred = self.online.push(msg.frame, x)
            ablation = self.online.ablation_pred
            if self.online.ready and not self.settings.moving_threshold:
                self.threshold = self.online.threshold
        ready = pred is not None
        if not ready:
            pred = np.zeros(self.n_out, np.float32)
        pred = np.asarray(pred, np.float32)
        vigour = float(np.abs(pred).mean()) if pred.size else 0.0
        self.publish(DECODED, {"pred": pred},
                     {"moving": bool(ready and vigour > self.threshold), "ready": ready,
                      "vigour": vigour}, frame=msg.frame, t_acq_ns=msg.t_acq_ns)
        self.n_decoded += 1
        if ready:  # frame t's prediction is of the tail at t + horizon: score it against that
            self._pair(msg.frame + self.horizon, pred=pred, ablation=ablation)

    def _label(self, frame: int, y: np.ndarray) -> None:
        self.n_out = len(y)
        self._pair(frame, label=y)  # score first: the prediction came before this label
        if self.online is not None:
            self.online.label(frame, y)

    def _pair(self, frame: int, pred=None, label=None, ablation=None) -> None:
        if pred is not None:
            self.preds[frame] = (pred, ablation)
        if label is not None:
            self.labels[frame] = label
        if frame in self.preds and frame in self.labels:
            (p, ablation), y = self.preds.pop(frame), self.labels.pop(frame)
            if p.shape == y.shape:
                if self.scorer is None:
                    self.scorer = RunningPearson(len(y))
                    self.ablation_scorer = RunningPearson(len(y))
                self.scorer.add(p, y)
                if ablation is not None:
                    self.ablation_scorer.add(ablation, y)
            elif not self._shape_warned:
                self._shape_warned = True
                self.log.warning("frame %d: prediction %s vs tail label %s: such frames are not "
                                 "scored (decoder outputs and tail segments differ; warned once)",
                                 frame, p.shape, y.shape)
        for d in (self.preds, self.labels):
            while len(d) > PENDING:
                d.popitem(last=False)

    @staticmethod
    def _r(scorer) -> tuple[float, list]:
        if scorer is None:
            return float("nan"), []
        r = scorer.r()
        return (float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")), \
            [round(float(v), 3) for v in r]

    def _phase(self) -> str:
        ready = self.stream is not None or (self.online is not None and self.online.ready)
        return "ready" if ready else "fitting"

    def stats(self) -> dict:
        return {"r": self._r(self.scorer)[0], "r_without_llm": self._r(self.ablation_scorer)[0],
                "frames": self.n_decoded, "ready": self._phase() == "ready",
                "phase": self._phase(), "load_s": round(self.load_s, 2),
                "scored": self.scorer.n if self.scorer else 0}

    def summary(self) -> dict:
        r, per = self._r(self.scorer)
        return {"mode": getattr(self, "mode", "online (no frames)"), "frames": self.n_decoded,
                "decoding_r": r, "decoding_r_without_llm": self._r(self.ablation_scorer)[0],
                "decoding_r_per_segment": per,
                "scored_frames": self.scorer.n if self.scorer else 0,
                "load_s": round(self.load_s, 2),
                "note": "held-out: each prediction made before its label was used to fit; "
                        "without_llm: " + self._ablation_note()}

    def _ablation_note(self) -> str:
        if self.stream is not None:
            return ("the decoder's linear path alone" if self.stream.decoder.net.linear
                    is not None else "none (this decoder has no linear path: train with --lags)")
        return "the same ridge head on the screened inputs alone"
