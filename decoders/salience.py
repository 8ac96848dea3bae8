"""Which neurons carry the decoded behaviour: gradient attribution back to the N inputs.

For a set of frames, each frame's causal window of normalised screened inputs z (w, k) is
attributed by

- ``"grad_x_input"``: z * d pred / d z, or
- ``"ig"``: integrated gradients from the all-zero window (every neuron at its running
  mean) to z, with ``steps`` Riemann points (Sundararajan et al. 2017).

Attributions are summed over the window's frames, taken in absolute value per tail variable,
summed over variables and averaged over the frames: one score per screened neuron. Neurons
the decoder never reads (screened out) score 0. ``save`` writes the scores with the neurons'
positions and regions so the dashboard can draw them on the anatomy.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from decoders.model import Decoder

METHODS = ("ig", "grad_x_input")


def salience(decoder: Decoder, traces: np.ndarray, frames: np.ndarray | None = None,
             method: str = "ig", steps: int = 16, max_frames: int = 256,
             batch: int = 32) -> np.ndarray:
    """Score every neuron (N,) by attribution of the decoder's output on ``frames``.

    Parameters
    ----------
    traces : (T, N) session activity (normalised from its start, as when decoding).
    frames : frame ids to attribute (default: all frames with a full window).
    max_frames : at most this many frames, drawn evenly (cost: frames x steps backward passes).
    """
    if method not in METHODS:
        raise ValueError(f"salience method {method!r}: choose one of {METHODS}")
    if steps < 1:
        raise ValueError(f"salience steps={steps}: need >= 1")
    z = torch.as_tensor(decoder.normalise(traces))  # (T, k)
    W = decoder.config.window
    if frames is None:
        frames = np.arange(W - 1, len(z))
    frames = np.asarray(frames, np.int64)
    if len(frames) == 0 or frames.min() < W - 1 or frames.max() >= len(z):
        raise ValueError(f"salience frames must lie in [{W - 1}, {len(z)}) (full windows)")
    if len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).astype(int)]
    total = torch.zeros(z.shape[1], dtype=torch.float64)
    idx = torch.as_tensor(frames[:, None] - np.arange(W - 1, -1, -1)[None, :])
    for i in range(0, len(frames), batch):
        attr = attributions(decoder.net, z[idx[i:i + batch]], method, steps)  # (B, W, k, S)
        total += attr.sum(1).abs().sum(-1).sum(0).double()
    scores = np.zeros(decoder.config.n_neurons)
    scores[decoder.screen] = (total / len(frames)).numpy()
    return scores


def attributions(net, win: torch.Tensor, method: str = "ig", steps: int = 16) -> torch.Tensor:
    """Signed attribution (B, w, k, S) of each output at the last position to each input.

    For ``"ig"`` the attributions of a window sum (over w, k) to f(win) - f(0) up to the
    Riemann error of ``steps`` midpoints.
    """
    alphas = (np.arange(steps) + 0.5) / steps if method == "ig" else np.array([1.0])
    n_out = None
    grads = None
    for a in alphas:
        x = (win * float(a)).detach().requires_grad_(True)
        out = net(x)[:, -1]  # (B, S)
        if grads is None:
            n_out = out.shape[1]
            grads = torch.zeros((*win.shape, n_out))
        for s in range(n_out):
            (g,) = torch.autograd.grad(out[:, s].sum(), x, retain_graph=s + 1 < n_out)
            grads[..., s] += g / len(alphas)
    return win[..., None] * grads


def save(path: str | Path, scores: np.ndarray, positions: np.ndarray | None = None,
         regions: np.ndarray | None = None, region_names=(), top: int = 50,
         meta: dict | None = None) -> Path:
    """Write ``path`` (.npz: scores, rank, positions, regions) and a JSON of the top neurons."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), np.int64)
    rank[order] = np.arange(len(scores))
    arrays = {"scores": scores, "rank": rank}
    if positions is not None:
        arrays["positions"] = np.asarray(positions, np.float32)
    if regions is not None:
        arrays["regions"] = np.asarray(regions, np.int16)
    np.savez(path, **arrays)
    named = regions is not None and len(region_names) > 0

    def entry(n):
        return {"neuron": int(n), "score": float(scores[n]),
                "position_um": positions[n].tolist() if positions is not None else None,
                "region": region_names[int(regions[n])] if named else None}

    doc = {"top": [entry(n) for n in order[:top]], **(meta or {})}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    return path
