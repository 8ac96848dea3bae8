"""Plain, slow reference versions of decoders/ numerics, for the tests."""
from __future__ import annotations

import numpy as np
import torch


def running_norm(x: np.ndarray, tau: float, eps: float) -> np.ndarray:
    """Explicit exponentially weighted mean/variance per frame, recomputed from scratch."""
    T = len(x)
    out = np.zeros(x.shape)
    for t in range(T):
        # weights of frames 0..t implied by a_n = max(1/n, 1/tau)
        w = np.zeros(t + 1)
        for n in range(1, t + 2):
            a = max(1.0 / n, 1.0 / tau)
            w *= 1 - a
            w[n - 1] = a
        m = (w[:, None] * x[:t + 1]).sum(0)
        v = (w[:, None] * (x[:t + 1] - m) ** 2).sum(0)
        out[t] = (x[t] - m) / np.sqrt(v + eps)
    return out


def window_predict(net, z: np.ndarray, W: int) -> np.ndarray:
    """Each frame's window fed alone through the network; last position read."""
    out = []
    with torch.no_grad():
        for t in range(len(z)):
            w = torch.as_tensor(z[max(0, t - W + 1):t + 1], dtype=torch.float32)[None]
            out.append(net(w)[0, -1].numpy())
    return np.array(out)


def ridge(X: np.ndarray, Y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Centered ridge by the normal equations."""
    mx, my = X.mean(0), Y.mean(0)
    Xc = X - mx
    coef = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ (Y - my))
    return coef, my - mx @ coef


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])
