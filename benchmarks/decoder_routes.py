"""Routes tried for the decoder on the harder simulated fish, one training seed each.

Each row changes one thing from ``decoders.DEFAULTS`` (what ``rig train`` does): the parts of
the default (MLP frame embedding, frame changes, training noise, linear path, members), a
longer window with more blocks, more or fewer screened neurons, LoRA; a small transformer
trained whole (is it the frozen backbone or attention itself?); the GRU at several windows
(does it need a long history?) and lagged ridge for reference; and whether the transformer
adds to a GRU what a second GRU does not: the decoder mixed with the GRU against two GRU seeds
mixed, each pair by the share that scores best on validation frames. Fish from
``benchmarks.decoder_eval.fish_design``; scored on the last 20%.

    python -m benchmarks.decoder_routes [--fish 1 4]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import table, write_json
from benchmarks.decoder_eval import _score, fish_design

ROUTES = {
    "defaults": {},
    "linear frame embedding": {"embed_hidden": 0},
    "no frame changes (onsets)": {"onsets": False},
    "no training noise": {"noise": 0.0},
    "no linear path (transformer alone)": {"lags": 0},
    "one member (no averaging)": {"members": 1},
    "W=16, 4 blocks": {"window": 16, "layers": 4},
    "128 screened neurons": {"screen": 128},
    "32 screened neurons": {"screen": 32},
    "LoRA (lr 3e-3, the default)": {"finetune": "lora"},
    "tiny transformer (H=32) trained whole, alone": {
        "model": "tiny-llama", "pretrained": False, "finetune": "full", "lr": 3e-3, "lags": 0,
        "embed_hidden": 0, "noise": 0.0},
}
GRU_WINDOWS = (2, 4, 8, 16)


class _mixed:
    """Two fitted models' predictions mixed by the share with the lowest validation MSE
    (``decoders.train.best_share``, as the decoder mixes its paths); ``predict`` as the
    models' (rows before the validation part are NaN)."""

    def __init__(self, a, b, s):
        from decoders.train import best_share, split_frames

        sp = split_frames(s.n_frames)
        self.start = sp.val[0]
        self.pa, self.pb = a.predict(s.traces, self.start), b.predict(s.traces, self.start)
        y = np.asarray(s.tail, np.float64).reshape(s.n_frames, -1)
        v = slice(*sp.val)
        self.share = best_share(self.pa[v], self.pb[v], y[v])

    def predict(self, traces, start: int = 0):
        if start < self.start:
            raise ValueError(f"start={start}: mixed on frames from {self.start} on only")
        return self.share * self.pa + (1 - self.share) * self.pb


def main(argv=None) -> int:
    from decoders import DEFAULTS
    from decoders.baselines import fit_gru, fit_ridge
    from decoders.train import fit
    from sims import simulate

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fish", type=int, nargs="+", default=[1, 4])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for i in args.fish:
        decoders_fit = {}
        config, frames = fish_design(i)
        s = simulate(config, n_frames=frames)
        for name, change in ROUTES.items():
            t0 = time.perf_counter()
            dec, _ = fit([s], **{**DEFAULTS, **change})
            decoders_fit[name] = dec
            rows.append({"fish": i, "model": name, "r": _score(dec.predict, s)["model"]["r_mean"],
                         "seconds": time.perf_counter() - t0})
            print(rows[-1], flush=True)
        models = {f"GRU-64, W={w}": fit_gru([s], hidden=64, window=w, screen=DEFAULTS["screen"],
                                            epochs=DEFAULTS["epochs"])[0] for w in GRU_WINDOWS}
        models["GRU-64, W=8, with frame changes"] = fit_gru(
            [s], hidden=64, window=8, screen=DEFAULTS["screen"], epochs=DEFAULTS["epochs"],
            onsets=True)[0]
        models.update({f"ridge, {lags} lags": fit_ridge([s], lags=lags, screen=DEFAULTS["screen"])
                       for lags in (4, 8)})
        gru_seed1 = fit_gru([s], hidden=64, window=8, screen=DEFAULTS["screen"],
                            epochs=DEFAULTS["epochs"], seed=1)[0]
        models["defaults + GRU-64, mixed on validation"] = _mixed(
            decoders_fit["defaults"], models["GRU-64, W=8"], s)
        models["GRU-64 seeds 0 + 1, mixed on validation"] = _mixed(
            gru_seed1, models["GRU-64, W=8"], s)
        for name, model in models.items():
            rows.append({"fish": i, "model": name,
                         "r": _score(model.predict, s)["model"]["r_mean"],
                         **({"share": model.share} if isinstance(model, _mixed) else {})})
    print(table(rows, ["fish", "model", "r"]))
    print(f"wrote {write_json('decoder_routes', {'rows': rows, 'defaults': DEFAULTS}, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
