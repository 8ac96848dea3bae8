"""The decoder: neuron activities per frame -> tail variables per frame, causally.

Pipeline for the frame at time t (nothing after t is ever used)::

    x_t (N,) -> screen (keep k of N neurons) -> causal normalisation (k,)
      -> window of the last W normalised frames (w <= W, fewer at the start)
      -> frame embedding (each frame and its change since the last, 2k -> H: Linear, or a
         one-hidden-layer GELU MLP; one token per frame)
      -> backbone(inputs_embeds) (w, H) -> last position -> head Linear(H -> S)
      [K members: K embeddings and heads on the one backbone, their predictions averaged]
      [mixed with the linear path: lagged inputs (L*k) -> S]
      -> de-standardise -> prediction of the tail at t + horizon

The optional linear path (``lags`` = L > 0) is a lagged ridge read of the last L normalised
frames beside the transformer. Training fits it in closed form (lagged ridge), trains the
transformer on its own, then mixes the two, ``mix[0] * transformer + mix[1] * linear``, with
the share chosen on validation frames (0 keeps ridge alone), so the decoder is never worse than
lagged ridge on validation; ``Decoder.predict(path=...)`` scores each path alone, so the
transformer's share is reported separately.

``members`` = K > 1 trains K frame embeddings and heads side by side from different random
starts, each on its own input noise, through one shared backbone (one pass with K times the
batch); the transformer path is their mean, a seed ensemble whose members differ only where
the training does.

The window is recomputed for every frame with positions 0..w-1, so a prediction depends only
on the last W frames (and the normalisation state): online and offline decoding run the same
function on the same input and agree to float32 round-off (see ``decoders.stream``).

Input selection and drift handling are first-class (DESIGN.md, science 1): ``screen`` keeps the
neurons most correlated with the tail on the training split; ``norm="running"`` standardises
each neuron by exponentially forgetting running statistics (time constant ``norm_tau`` frames)
so slow gain drift is removed without looking at future frames; ``norm="fixed"`` uses the
training split's statistics.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from decoders import backbone as bb

NORMS = ("running", "fixed", "none")
FORMAT = 2  # 2: embeddings and heads are lists (members)
VAR_EPS = 1e-4  # variance floor, (dF/F)^2: a silent neuron maps to ~0, never to inf


@dataclass
class DecoderConfig:
    """Everything needed to rebuild a decoder; saved as ``decoder.json``.

    Attributes
    ----------
    n_neurons : int
        N, neurons per frame the decoder expects.
    n_outputs : int
        S, tail variables decoded per frame.
    window : int
        W, frames of context (the current frame included).
    backbone : dict
        ``BackboneSpec`` fields (name, pretrained, seed).
    screen : list of int
        Neuron ids kept (all of them when screening is off).
    norm : str
        "running", "fixed" or "none".
    norm_tau : float
        Running-normalisation time constant, frames.
    horizon : int
        Frames ahead decoded (0: the current frame's tail).
    finetune : str
        "frozen" (input map and head trained), "full" (the backbone too) or "lora" (low-rank
        adapters on every linear layer of the backbone, with peft: ``pip install rig[lora]``).
    lags : int
        L, frames the linear path beside the transformer reads (0: no linear path); L <= W.
    embed_hidden : int
        Hidden units of the frame embedding MLP (k -> embed_hidden -> H, GELU); 0: one Linear.
    onsets : bool
        Each token embeds its frame and the change since the frame before it in the window
        (zero for the window's first frame, offline and streamed alike).
    members : int
        K, frame embeddings and heads trained side by side on the one backbone; the transformer
        path predicts their mean (1: a single embedding and head).
    mix : list of float
        Weights of the transformer and the linear path in the prediction (their sum is the
        decoder's output; training sets them on validation frames).
    """

    n_neurons: int
    n_outputs: int
    window: int = 16
    backbone: dict = field(default_factory=lambda: bb.BackboneSpec().to_dict())
    screen: list = field(default_factory=list)
    norm: str = "running"
    norm_tau: float = 300.0
    horizon: int = 0
    finetune: str = "frozen"
    lags: int = 0
    embed_hidden: int = 0
    onsets: bool = False
    members: int = 1
    mix: list = field(default_factory=lambda: [1.0, 1.0])
    x_mean: list = field(default_factory=list)  # (k,) training-split mean, "fixed" norm
    x_std: list = field(default_factory=list)  # (k,)
    y_mean: list = field(default_factory=list)  # (S,) target standardisation
    y_std: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # training record: split, metrics, seed

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"DecoderConfig.norm: {self.norm!r}; choose one of {NORMS}")
        if self.window < 1:
            raise ValueError(f"DecoderConfig.window: {self.window}; need >= 1 frame")
        if self.finetune not in FINETUNE:
            raise ValueError(f"DecoderConfig.finetune: {self.finetune!r}; one of {FINETUNE}")
        if self.members < 1:
            raise ValueError(f"DecoderConfig.members: {self.members}; need >= 1 embedding and head")
        if not 0 <= self.lags <= self.window:
            raise ValueError(f"DecoderConfig.lags: {self.lags}; use 0 (no linear path) .. "
                             f"window={self.window}")
        if not self.screen:
            self.screen = list(range(self.n_neurons))


FINETUNE = ("frozen", "full", "lora")
LORA_RANK = 8


def add_lora(backbone: nn.Module, rank: int = LORA_RANK) -> nn.Module:
    """Wrap ``backbone`` with trainable low-rank adapters (peft); its own weights freeze."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("finetune='lora' needs peft: pip install 'rig[lora]'") from None
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                        target_modules="all-linear")
    return get_peft_model(backbone, config)


class CausalNorm:
    """Per-neuron standardisation from past and present frames only.

    ``running``: mean and variance are exponentially weighted with weight
    ``max(1/n, 1/tau)`` for the n-th frame (a plain average until n = tau, so the start is not
    dominated by the first frame). ``fixed``: training statistics. ``none``: identity.
    State is float64 so that a frame-by-frame stream and a whole-array pass agree exactly.
    """

    def __init__(self, mode: str, tau: float, mean: np.ndarray, std: np.ndarray):
        self.mode, self.tau = mode, float(tau)
        self.fixed_mean = np.asarray(mean, np.float64)
        self.fixed_std = np.asarray(std, np.float64)
        self.reset()

    def reset(self) -> None:
        k = len(self.fixed_mean)
        self.n = 0
        self.mean = np.zeros(k)
        self.var = np.zeros(k)

    def step(self, x: np.ndarray) -> np.ndarray:
        """Normalise one frame (k,) and update the state; returns float32 (k,)."""
        if self.mode == "none":
            return x.astype(np.float32)
        if self.mode == "fixed":
            return ((x - self.fixed_mean) / self.fixed_std).astype(np.float32)
        self.n += 1
        a = max(1.0 / self.n, 1.0 / self.tau)
        d = x - self.mean
        self.mean += a * d
        # West's weighted incremental variance: exact for the EW mean above.
        self.var = (1.0 - a) * (self.var + a * d * d)
        return ((x - self.mean) / np.sqrt(self.var + VAR_EPS)).astype(np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Normalise a whole array (T, k) frame by frame from the current state."""
        out = np.empty(x.shape, np.float32)
        for t in range(len(x)):
            out[t] = self.step(x[t])
        return out


PATHS = ("all", "transformer", "linear")


class LaggedLinear(nn.Module):
    """Causal linear read of the last L frames at every position: (B, w, k) -> (B, w, S).

    Row order of ``weight`` (L*k, S) is that of ``decoders.baselines.lagged``: frame t first,
    then t-1, ...; frames before the window's start count as zeros (as before a session's).
    """

    def __init__(self, n_in: int, n_out: int, lags: int):
        super().__init__()
        self.lags = lags
        self.weight = nn.Parameter(torch.zeros(lags * n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B, w, k = z.shape
        padded = torch.cat([z.new_zeros(B, self.lags - 1, k), z], 1)  # (B, L-1+w, k)
        X = padded.unfold(1, self.lags, 1).flip(-1)  # (B, w, k, L), newest first
        return X.transpose(2, 3).reshape(B, w, -1) @ self.weight + self.bias


def frame_embedding(n_in: int, hidden: int, embed_hidden: int = 0) -> nn.Module:
    """One token per frame: Linear(k -> H), or k -> embed_hidden -> H with a GELU between (a
    per-frame nonlinearity before the backbone, e.g. rectified onsets; the same weights for
    every frame)."""
    if not embed_hidden:
        return nn.Linear(n_in, hidden)
    return nn.Sequential(nn.Linear(n_in, embed_hidden), nn.GELU(), nn.Linear(embed_hidden, hidden))


class DecoderNet(nn.Module):
    """Frame embeddings -> backbone(inputs_embeds) -> heads, averaged [and mixed with the lagged
    linear path], on windows (B, w, k) -> (B, w, S)."""

    def __init__(self, n_in: int, n_out: int, backbone: nn.Module, hidden: int, lags: int = 0,
                 embed_hidden: int = 0, mix=(1.0, 1.0), onsets: bool = False, members: int = 1):
        super().__init__()
        self.onsets = onsets
        n_tok = 2 * n_in if onsets else n_in
        self.input_maps = nn.ModuleList(frame_embedding(n_tok, hidden, embed_hidden)
                                        for _ in range(members))
        self.backbone = backbone
        self.heads = nn.ModuleList(nn.Linear(hidden, n_out) for _ in range(members))
        self.linear = LaggedLinear(n_in, n_out, lags) if lags else None
        self.mix = tuple(float(m) for m in mix)

    def members(self, z: torch.Tensor) -> torch.Tensor:
        """Each member's transformer prediction (K, B, w, S) of normalised windows z: (B, w, k)
        shared by the members, or (K, B, w, k) one per member (training noise)."""
        K = len(self.heads)
        if self.onsets:  # each token also sees the change since the frame before it
            z = torch.cat([z, torch.diff(z, dim=-2, prepend=z[..., :1, :])], -1)
        if z.dim() == 3:  # one window for every member (a view, not K copies)
            z = z.expand(K, *z.shape)
        e = torch.cat([m(z[i]) for i, m in enumerate(self.input_maps)])  # (K*B, w, H)
        h = self.backbone(inputs_embeds=e).last_hidden_state.unflatten(0, (K, -1))
        return torch.stack([head(h[i]) for i, head in enumerate(self.heads)])

    def forward(self, z: torch.Tensor, path: str = "all") -> torch.Tensor:
        """Prediction (B, w, S): both paths mixed by ``mix``, or the ``transformer`` (the mean
        of its members) or the ``linear`` one alone (unweighted); ``members``: (K, B, w, S)."""
        if path == "members":
            return self.members(z)
        if self.linear is None or path == "transformer":
            return self.members(z).mean(0)
        if path == "linear":
            return self.linear(z)
        a, b = self.mix
        out = b * self.linear(z)
        return out if a == 0 else out + a * self.members(z).mean(0)


class Decoder:
    """A fitted decoder: config + network, with causal offline prediction and save/load.

    Use ``decoders.train.fit`` to make one, ``Decoder.load(folder)`` to reload it,
    ``decoders.stream.StreamingDecoder(decoder)`` to run it frame by frame.
    """

    def __init__(self, config: DecoderConfig, net: DecoderNet):
        self.config, self.net = config, net.eval()
        self.screen = np.asarray(config.screen, np.int64)
        self.y_mean = np.asarray(config.y_mean or [0.0] * config.n_outputs, np.float32)
        self.y_std = np.asarray(config.y_std or [1.0] * config.n_outputs, np.float32)

    @classmethod
    def build(cls, config: DecoderConfig, dtype=torch.float32,
              weights: bool = True) -> "Decoder":
        """A fresh (untrained map and head) decoder around the configured backbone.

        ``weights=False``: the backbone's architecture randomly initialised, never its
        pretrained weights (for ``load`` when the file holds the whole backbone).
        """
        spec = bb.BackboneSpec(**config.backbone)
        model, hidden = bb.load(spec if weights else replace(spec, pretrained=False), dtype=dtype)
        if config.finetune == "lora":
            model = add_lora(model)
        return cls(config, DecoderNet(len(config.screen), config.n_outputs, model, hidden,
                                      config.lags, config.embed_hidden, config.mix,
                                      config.onsets, config.members))

    def new_norm(self) -> CausalNorm:
        c = self.config
        k = len(self.screen)
        return CausalNorm(c.norm, c.norm_tau, c.x_mean or np.zeros(k), c.x_std or np.ones(k))

    def check_traces(self, traces: np.ndarray) -> np.ndarray:
        traces = np.asarray(traces)
        if traces.ndim != 2 or traces.shape[1] != self.config.n_neurons:
            raise ValueError(f"traces: shape {traces.shape}, this decoder was trained on "
                             f"{self.config.n_neurons} neurons; pass (frames, "
                             f"{self.config.n_neurons}) from the same neuron set")
        return traces

    def normalise(self, traces: np.ndarray) -> np.ndarray:
        """Screened, causally normalised inputs (T, k) float32 of a session from its start."""
        traces = self.check_traces(traces)
        return self.new_norm().run(traces[:, self.screen].astype(np.float64))

    @torch.inference_mode()
    def predict_windows(self, z: np.ndarray, start: int = 0, batch: int = 64,
                        path: str = "all") -> np.ndarray:
        """Prediction at the last frame of every causal window of z (T, k) -> (T, S).

        Frame t sees frames max(0, t-W+1)..t; the first W-1 frames use the shorter window
        they have, exactly as the stream does. Rows before ``start`` are left NaN (skipped).
        ``path``: "all", or only the "transformer" or the "linear" path (its share).
        """
        if path not in PATHS:
            raise ValueError(f"path={path!r}: choose one of {PATHS}")
        if path == "linear" and self.net.linear is None:
            raise ValueError("path='linear': this decoder has no linear path (lags=0)")
        W = self.config.window
        T = len(z)
        out = np.full((T, self.config.n_outputs), np.nan, np.float32)
        p = next(self.net.parameters())
        zt = torch.as_tensor(z).to(p.dtype)
        for t in range(start, min(W - 1, T)):
            out[t] = self.net(zt[None, :t + 1], path)[0, -1].float().numpy()
        first = max(start, W - 1)
        if T > first:
            wins = zt[first - W + 1:].unfold(0, W, 1).transpose(1, 2)  # (T-first, W, k)
            for i in range(0, len(wins), batch):
                pred = self.net(wins[i:i + batch], path)[:, -1]
                out[first + i:first + i + batch] = pred.float().numpy()
        return out * self.y_std + self.y_mean

    def predict(self, traces: np.ndarray, start: int = 0, path: str = "all") -> np.ndarray:
        """Causal offline decoding of a session (T, N) -> (T, S), tail units (rad).

        The normalisation runs from frame 0 (cheap); the network runs only from ``start`` on
        (earlier rows NaN), e.g. on a test part and the window before it. ``path``: see
        ``predict_windows``.
        """
        return self.predict_windows(self.normalise(traces), start, path=path)

    def save(self, folder: str | Path) -> Path:
        """Write ``decoder.json`` and ``weights.safetensors``.

        A frozen pretrained backbone is not copied (it is rebuilt from its spec), nor is the
        base of a LoRA one (only its adapters); a random-init or fully fine-tuned backbone is
        saved with the map and head.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        keep_backbone = backbone_saved(self.config)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()
                 if keep_backbone or not k.startswith("backbone.") or "lora_" in k}
        save_file(state, str(folder / "weights.safetensors"))
        doc = {"format": FORMAT, **asdict(self.config)}
        (folder / "decoder.json").write_text(json.dumps(doc, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Decoder":
        """Rebuild a saved decoder; needs only the folder (and the backbone's source)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        path = folder / "decoder.json"
        if not path.exists():
            raise FileNotFoundError(f"decoder folder {folder}: no decoder.json; "
                                    "make one with `rig train SESSION --out FOLDER`")
        doc = json.loads(path.read_text())
        if doc.pop("format", None) != FORMAT:
            raise ValueError(f"{path}: format is not {FORMAT}; retrain with this Rig version")
        config = DecoderConfig(**doc)
        saved = backbone_saved(config)
        # A saved backbone's weights all come from the file: build its architecture only
        # rather than load pretrained weights just to overwrite them.
        dec = cls.build(config, weights=not saved)
        state = load_file(str(folder / "weights.safetensors"))
        missing, unexpected = dec.net.load_state_dict(state, strict=False)
        # Only a backbone that save() leaves out may be missing (LoRA adapters are always saved).
        bad = [k for k in missing if saved or not k.startswith("backbone.") or "lora_" in k]
        bad += list(unexpected)
        if bad:
            raise ValueError(f"{folder}/weights.safetensors does not match decoder.json "
                             f"(missing/unexpected: {bad[:5]})")
        return dec


def backbone_saved(config: DecoderConfig) -> bool:
    """Whether ``save`` writes the backbone's weights: not for a frozen pretrained backbone
    (rebuilt from its spec) nor for the base of a LoRA one (its adapters are saved)."""
    pretrained = bb.BackboneSpec(**config.backbone).pretrained
    return not (pretrained and config.finetune in ("frozen", "lora"))


def screen_neurons(traces: np.ndarray, tail: np.ndarray, k: int | None) -> np.ndarray:
    """Ids of the k neurons with the largest |Pearson r| with any tail variable or with the
    vigour (mean |angle|, which direction-blind motor neurons follow), on training data.

    Parameters
    ----------
    traces : (T, N) activity of the training split only (screening on test frames leaks).
    tail : (T, S) targets of the same frames.
    k : neurons kept; None or k >= N keeps all, in order.
    """
    n = traces.shape[1]
    if k is None or k >= n:
        return np.arange(n)
    if k < 1:
        raise ValueError(f"screen: k={k}; keep at least 1 neuron (or None for all)")
    r = screen_scores(traces, tail)
    return np.sort(np.argsort(-r, kind="stable")[:k])


def screen_scores(traces: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Screening score (N,) of each neuron: its largest |Pearson r| with any tail variable or
    with the vigour (mean |angle|) over the frames given (``screen_neurons`` keeps the top k).

    Parameters
    ----------
    traces : (T, N) activity.
    tail : (T, S) targets of the same frames.
    """
    tail = np.asarray(tail, np.float64).reshape(len(tail), -1)
    tail = np.concatenate([tail, np.abs(tail).mean(1, keepdims=True)], 1)
    x = traces - traces.mean(0)
    y = tail - tail.mean(0)
    xs = np.sqrt((x * x).sum(0)) + 1e-12
    ys = np.sqrt((y * y).sum(0)) + 1e-12
    return np.abs((x.T @ y) / xs[:, None] / ys[None, :]).max(1)  # (N,)
