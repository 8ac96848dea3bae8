"""Decode live without a pre-trained decoder folder: frozen pretrained backbone, ridge head.

Chosen for ``rig run --sim`` (no decoder exists when a fresh simulated fish starts):

1. Warm-up (``warmup`` frames with labels): every frame is normalised causally (running
   statistics over all N neurons, so any neuron can be chosen later) and kept; running sums
   of the raw activity give each neuron's correlation with the tail labels and with vigour.
2. First fit: screen the ``screen`` most correlated neurons; the input map is a fixed random
   Gaussian projection k -> H scaled to the backbone's token-embedding RMS (the backbone was
   trained on inputs of that size); the backbone is frozen; the buffered frames' windows are
   run through it once, in batches, and a ridge head (features at the last window position
   -> tail) is fitted.
   Nothing is trained by gradient, so the fit takes seconds on a CPU.
3. Afterwards only the screened neurons are normalised and kept (their running statistics
   carry on unchanged); each frame costs one window forward; its features and, when it
   arrives, its label are kept and the ridge head is refitted every ``refit_every`` labelled
   frames.

Each prediction is made before its own label is used in any fit (prequential), so the
running Pearson r against the tail is a held-out score. The labels come from the ``tail``
topic (per imaging frame tail angles); a label may arrive before or after its frame.

The ablation: beside the head, the same ridge (same frames, refits and penalty) is fitted on
the head's inputs without the backbone's features, i.e. the screened inputs of the last
``head_lags`` frames (of the whole window when ``head_lags`` = 0, all the backbone saw). Its
held-out prediction (``ablation_pred``) is what the decoder would score without the LLM.
"""
from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
import torch

from decoders import backbone as bb
from decoders.evaluate import bout_threshold
from decoders.model import CausalNorm

log = logging.getLogger(__name__)


class OnlineRidgeDecoder:
    """Frozen backbone features + ridge head fitted during the run (see module docstring).

    Parameters
    ----------
    n_neurons : N, neurons per frame.
    backbone : spec for ``decoders.backbone`` ("smollm2" by default; "tiny-llama" in tests).
    pretrained : text-pretrained backbone weights (False: random-init twin).
    window : W, frames of context per prediction.
    screen : neurons kept at the first fit.
    warmup : labelled frames before the first fit.
    refit_every : labelled frames between head refits.
    alpha : ridge penalty on standardised features (1000 scored best of 10..1e4 for SmolLM2
        features on a simulated fish, prequentially).
    head_lags : 0: the head reads the backbone features only (the LLM decoder). L > 0: it also
        reads the screened inputs of the last L frames (then it can do at least as well as
        lagged ridge); the ablation head tells what the LLM's features add.
    norm_tau : running-normalisation time constant, frames.
    max_rows : most recent labelled frames kept for refits.
    layers : backbone blocks kept (0: all).
    model : (module, hidden) already loaded by ``decoders.backbone.load`` (the node loads it at
        setup, before the neuron count is known), or None to load here.
    """

    def __init__(self, n_neurons: int, backbone: str = "smollm2", pretrained: bool = True,
                 window: int = 16, screen: int = 64, warmup: int = 120, refit_every: int = 60,
                 alpha: float = 1000.0, norm_tau: float = 300.0, max_rows: int = 5000,
                 seed: int = 0,
                 layers: int = 0, model: tuple | None = None, head_lags: int = 0):
        if (n_neurons < 1 or window < 1 or warmup < 10 or refit_every < 1
                or not 0 <= head_lags <= window):
            raise ValueError(f"OnlineRidgeDecoder: n_neurons={n_neurons}, window={window}, "
                             f"warmup={warmup}, refit_every={refit_every}, head_lags={head_lags}; "
                             "need >= 1, >= 1, >= 10, >= 1, 0..window")
        self.N, self.W, self.k = n_neurons, window, min(screen, n_neurons)
        self.warmup, self.refit_every = warmup, refit_every
        self.alpha, self.max_rows = alpha, max_rows
        self.seed, self.head_lags = seed, head_lags
        self.model, self.H = model or bb.load(bb.BackboneSpec(backbone, pretrained, seed, layers))
        self.norm = CausalNorm("running", norm_tau, np.zeros(n_neurons), np.ones(n_neurons))
        # normalised frames: all N neurons in warm-up, the k screened ones after the first fit
        self.ring = np.zeros((window, n_neurons), np.float32)
        self.n_frames = 0
        self.ready = False
        self.screen: np.ndarray | None = None
        self.proj: torch.Tensor | None = None
        self.coef: np.ndarray | None = None
        self.threshold = np.inf
        self.ablation_pred: np.ndarray | None = None  # last frame's prediction without the LLM
        self._heads: dict[str, tuple] = {}  # "llm" / "ablation" -> (f_mean, f_std, coef, y_mean)
        self._z = OrderedDict()  # frame -> normalised frame (N,) in warm-up, head inputs after
        self._y = OrderedDict()  # frame -> label
        self._raw = OrderedDict()  # frame -> raw activity (warm-up only, for screening)
        self._stats = None  # running sums for screening
        self._since_fit = 0
        self.n_fits = 0

    # -- streaming -------------------------------------------------------------------------
    def push(self, frame: int, x: np.ndarray) -> np.ndarray | None:
        """Add frame ``frame`` (N,); returns its decoded tail (S,) once fitted, else None."""
        x = np.asarray(x)
        if x.shape != (self.N,):
            raise ValueError(f"frame {frame}: shape {x.shape}, expected ({self.N},)")
        if self.ready:  # only the screened neurons are normalised and kept from here on
            x = x[self.screen]
        z = self.norm.step(x.astype(np.float64))
        self.ring[self.n_frames % self.W] = z
        self.n_frames += 1
        if not self.ready:
            self._z[frame] = z.astype(np.float32)  # all neurons: the screen is chosen later
            self._raw[frame] = x.astype(np.float32)
            self._trim()
            if frame in self._y:  # its label came first
                self._on_pair(frame)
            return None
        f = self._features(self._window()[None])[0]
        self._z[frame] = f
        self._trim()
        pred = self._head(f)  # before a refit can use this frame's label: held out
        self.ablation_pred = self._head(f, "ablation")
        if frame in self._y:
            self._on_pair(frame)
        return pred

    def label(self, frame: int, y: np.ndarray) -> None:
        """The tail labels (S,) of frame ``frame``; triggers the first fit and refits."""
        y = np.asarray(y, np.float64).ravel()
        if frame in self._y:  # a second label source for the same frame: keep the first
            return
        self._y[frame] = y
        self._trim()
        if frame in self._z:
            self._on_pair(frame)

    # -- internals -------------------------------------------------------------------------
    def _window(self) -> np.ndarray:
        w = min(self.n_frames, self.W)
        idx = (np.arange(self.n_frames - w, self.n_frames)) % self.W
        return self.ring[idx]

    def _trim(self) -> None:
        # Before the first fit frames hold all N neurons: keep only what the fit can use.
        limit = self.max_rows if self.ready else 2 * self.warmup + self.W
        for d in (self._z, self._y, self._raw):
            while len(d) > limit:
                d.popitem(last=False)

    def _paired(self) -> list[int]:
        return [f for f in self._z if f in self._y]

    def _on_pair(self, frame: int) -> None:
        """Frame ``frame`` now has both its inputs and its label (whichever came second calls
        this): add it to the screening sums, count it, fit or refit when due."""
        if not self.ready:
            self._update_stats(frame)
        self._since_fit += 1
        if not self.ready and len(self._paired()) >= self.warmup:
            self._first_fit()
        elif self.ready and self._since_fit >= self.refit_every:
            self._fit_head()

    def _update_stats(self, frame: int) -> None:
        """Screening sums over warm-up frames whose window and label are both known."""
        # Raw activity: early running statistics rest on few frames and scramble correlations
        # (checked on a simulated fish: raw screening found the motor neurons in 60 frames,
        # normalised screening did not).
        x = self._raw[frame].astype(np.float64)
        y = self._y[frame]
        y = np.concatenate([y, [np.abs(y).mean()]])
        if self._stats is None:
            self._stats = [0, np.zeros(self.N), np.zeros(self.N), np.zeros(len(y)),
                           np.zeros(len(y)), np.zeros((self.N, len(y)))]
        st = self._stats
        st[0] += 1
        st[1] += x
        st[2] += x * x
        st[3] += y
        st[4] += y * y
        st[5] += np.outer(x, y)

    def _first_fit(self) -> None:
        n, sx, sxx, sy, syy, sxy = self._stats
        cov = sxy - np.outer(sx, sy) / n
        den = np.sqrt(np.maximum(np.outer(sxx - sx * sx / n, syy - sy * sy / n), 1e-12))
        r = np.abs(cov / den).max(1)
        self.screen = np.sort(np.argsort(-r, kind="stable")[:self.k])
        # Per-neuron state, so dropping the other neurons changes no value.
        for name in ("mean", "var", "fixed_mean", "fixed_std"):
            setattr(self.norm, name, getattr(self.norm, name)[self.screen])
        self.ring = np.ascontiguousarray(self.ring[:, self.screen])
        rng = np.random.default_rng(self.seed)
        scale = self._embedding_rms() / np.sqrt(self.k)
        self.proj = torch.as_tensor(rng.normal(0, scale, (self.k, self.H)), dtype=torch.float32)
        # Warm-up frames -> features, each from the window it had live (frames in push order;
        # the live ring holds the same frames, so the features are the ones streaming would give).
        frames = list(self._z)
        zs = np.stack([self._z[f][self.screen] for f in frames])
        for f, row in zip(frames, self._window_features(zs)):
            self._z[f] = row
        self.ready = True
        self._raw.clear()
        labels = np.stack([self._y[f] for f in self._paired()])
        self.threshold = bout_threshold(labels)
        self._fit_head()
        log.info("online decoder fitted on %d frames, %d neurons screened", len(labels), self.k)

    def _embedding_rms(self) -> float:
        get = getattr(self.model, "get_input_embeddings", None)
        emb = get() if get is not None else None
        if emb is None or not hasattr(emb, "weight"):
            return 1.0
        return float(emb.weight.detach().float().pow(2).mean().sqrt())

    def _window_features(self, z: np.ndarray, batch: int = 64) -> np.ndarray:
        """Head inputs at every frame of z (T, k), each from its causal window -> (T, F).

        Frame t sees frames max(0, t-W+1)..t, as it did live; the full-length windows go
        through the backbone ``batch`` at a time (as ``Decoder.predict_windows``), so the first
        fit costs ~T/batch forwards, not T.
        """
        W, T = self.W, len(z)
        out = [self._features(z[None, :t + 1]) for t in range(min(W - 1, T))]
        if T >= W:
            wins = np.lib.stride_tricks.sliding_window_view(z, W, axis=0).transpose(0, 2, 1)
            out += [self._features(np.ascontiguousarray(wins[i:i + batch]))  # (b, W, k)
                    for i in range(0, len(wins), batch)]
        return np.concatenate(out)

    @torch.inference_mode()
    def _features(self, win: np.ndarray) -> np.ndarray:
        """Features of each window's last frame (B, w, k) -> (B, H + A*k): backbone output (H),
        then the last A = ``head_lags`` (or W) inputs, newest first; the head reads the first
        H + ``head_lags``*k columns, the ablation the A*k inputs."""
        e = torch.as_tensor(win, dtype=torch.float32) @ self.proj  # (B, w, H)
        f = self.model(inputs_embeds=e).last_hidden_state[:, -1].float().numpy()
        B, w, k = win.shape
        lags = self.head_lags or self.W
        lag = np.zeros((B, lags, k), np.float32)
        n = min(lags, w)
        lag[:, :n] = win[:, ::-1][:, :n]  # newest first, zeros before the start
        return np.concatenate([f, lag.reshape(B, -1)], 1)

    def _columns(self, head: str) -> slice:
        if head == "llm":
            return slice(0, self.H + self.head_lags * self.k)
        return slice(self.H, None)

    def _fit_head(self) -> None:
        frames = self._paired()[-self.max_rows:]
        Y = np.stack([self._y[f] for f in frames])
        for head in ("llm", "ablation"):
            F = np.stack([self._z[f][self._columns(head)] for f in frames]).astype(np.float64)
            f_mean, f_std = F.mean(0), F.std(0) + 1e-6
            Fs = (F - f_mean) / f_std
            A = Fs.T @ Fs + self.alpha * np.eye(Fs.shape[1])
            coef = np.linalg.solve(A, Fs.T @ (Y - Y.mean(0)))
            self._heads[head] = (f_mean, f_std, coef, Y.mean(0))
        self.coef = self._heads["llm"][2]
        self._since_fit = 0
        self.n_fits += 1

    def _head(self, f: np.ndarray, head: str = "llm") -> np.ndarray:
        f_mean, f_std, coef, y_mean = self._heads[head]
        return (((f[self._columns(head)] - f_mean) / f_std) @ coef + y_mean).astype(np.float32)
