"""Decode frame by frame: a rolling window of the last W normalised frames, recomputed each frame.

Scheme (chosen for exact online == offline equality): each new frame is screened, normalised
with the running state, appended to a ring of the last W frames, and the whole window is run
through the network with positions 0..w-1; the prediction is the last position's output.
``Decoder.predict`` computes exactly this for every frame of an array, so the two agree to
float32 round-off (the tests require max |online - offline| <= 1e-4). A KV cache would be
cheaper per frame but then the positions (and, with RoPE/absolute embeddings, the function)
would depend on how long the stream has run; recomputing keeps every prediction a function of
the last W frames alone. Cost: one forward of w <= W tokens per frame (see
``benchmarks/decoder.py`` for p50/p99).
"""
from __future__ import annotations

import numpy as np
import torch

from decoders.model import Decoder


class StreamingDecoder:
    """Online decoder state around a fitted ``Decoder``.

    Examples
    --------
    >>> s = StreamingDecoder(dec)
    >>> for x in traces:             # x: (N,) dF/F of one frame
    ...     pred = s.push(x)         # (S,) float32 tail estimate for this frame
    """

    def __init__(self, decoder: Decoder):
        self.decoder = decoder
        c = decoder.config
        self.W = c.window
        self.k = len(decoder.screen)
        self.norm = decoder.new_norm()
        p = next(decoder.net.parameters())
        self._dtype, self._device = p.dtype, p.device
        self._ring = torch.zeros((self.W, self.k), dtype=self._dtype, device=self._device)
        self.n_frames = 0
        self.linear_pred: np.ndarray | None = None  # last frame's linear-path prediction

    def reset(self) -> None:
        """Forget the window and normalisation state (a new session starts)."""
        self.norm.reset()
        self._ring.zero_()
        self.n_frames = 0

    def window(self) -> torch.Tensor:
        """The current context (w, k), oldest frame first."""
        w = min(self.n_frames, self.W)
        if self.n_frames <= self.W:
            return self._ring[:w]
        head = self.n_frames % self.W  # slot of the oldest frame
        return torch.cat([self._ring[head:], self._ring[:head]])

    @torch.inference_mode()
    def push(self, x: np.ndarray) -> np.ndarray:
        """Add one frame (N,) of activity; returns the decoded tail (S,) float32 for it."""
        x = np.asarray(x)
        if x.shape != (self.decoder.config.n_neurons,):
            raise ValueError(f"frame: shape {x.shape}, decoder expects "
                             f"({self.decoder.config.n_neurons},) neuron activities")
        z = self.norm.step(x[self.decoder.screen].astype(np.float64))
        self._ring[self.n_frames % self.W] = torch.as_tensor(z, dtype=self._dtype)
        self.n_frames += 1
        win = self.window()[None]
        out = self.decoder.net(win)[0, -1].float().cpu().numpy()
        if self.decoder.net.linear is not None:  # the decoder without its transformer
            lin = self.decoder.net.linear(win)[0, -1].float().cpu().numpy()
            self.linear_pred = lin * self.decoder.y_std + self.decoder.y_mean
        return out * self.decoder.y_std + self.decoder.y_mean
