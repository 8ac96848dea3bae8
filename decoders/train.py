"""Fit a decoder on sessions: time-ordered split, windows, AdamW on MSE, early stopping.

Each session is cut in time into train / validation / test (70/10/20 by default): the first
70% of frames train, the next 10% pick the epoch (early stopping), the last 20% are only ever
scored. Screening, fixed normalisation statistics and target standardisation come from the
training frames alone. Validation and test windows may reach back into earlier frames as
*input* context, exactly as a live decoder would; no label outside the training part is used
for fitting.

Beyond one machine: launched by ``torchrun`` (``WORLD_SIZE`` > 1), ``fit`` joins the process
group (gloo on CPU, NCCL on GPUs), wraps the network in ``DistributedDataParallel`` and lets
each process compute its share of every batch; the loss is scaled so that the averaged
gradient is the single-process one, so N processes train the same decoder as one (to float
round-off). Rank 0 alone writes the folder.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from decoders import DEFAULTS
from decoders import backbone as bb
from decoders.model import Decoder, DecoderConfig, screen_neurons

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Frame ranges [start, stop) of one session's train / validation / test parts."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]


def split_frames(n_frames: int, fractions=(0.7, 0.1, 0.2)) -> Split:
    """Time-ordered split of ``n_frames`` frames by ``fractions`` (train, val, test)."""
    f = np.asarray(fractions, float)
    if f.shape != (3,) or (f <= 0).any() or abs(f.sum() - 1) > 1e-6:
        raise ValueError(f"split fractions {tuple(fractions)}: need three positive parts "
                         "summing to 1, e.g. (0.7, 0.1, 0.2)")
    a = int(round(n_frames * f[0]))
    b = int(round(n_frames * (f[0] + f[1])))
    if a < 2 or b - a < 1 or n_frames - b < 1:
        raise ValueError(f"session of {n_frames} frames is too short to split {tuple(f)}; "
                         "record or simulate more frames")
    return Split((0, a), (a, b), (b, n_frames))


def _arrays(sessions) -> tuple[list[np.ndarray], list[np.ndarray]]:
    xs, ys = [], []
    for i, s in enumerate(sessions):
        if s.tail is None or len(s.tail) != s.n_frames:
            raise ValueError(f"session {i}: no per-frame tail; training needs Session.tail (T, S)")
        xs.append(np.asarray(s.traces, np.float64))
        ys.append(np.asarray(s.tail, np.float32).reshape(s.n_frames, -1))
    n = {x.shape[1] for x in xs}
    if len(n) != 1:
        raise ValueError(f"sessions have different neuron counts {sorted(n)}; a decoder "
                         "needs one neuron set (register the sessions first)")
    return xs, ys


def _window_index(ends: np.ndarray, W: int) -> np.ndarray:
    return ends[:, None] - np.arange(W - 1, -1, -1)[None, :]  # (B, W) frame ids, oldest first


def fit(sessions, model: str = DEFAULTS["model"], pretrained: bool = True,
        window: int = DEFAULTS["window"], screen: int | None = DEFAULTS["screen"],
        norm: str = "running", norm_tau: float = 300.0, horizon: int = 0,
        finetune: str = "frozen", epochs: int = DEFAULTS["epochs"], lr: float = DEFAULTS["lr"],
        batch: int = DEFAULTS["batch"], patience: int = DEFAULTS["patience"], seed: int = 0,
        fractions=(0.7, 0.1, 0.2), out: str | Path | None = None, progress: bool = False,
        device: str | None = None, layers: int = DEFAULTS["layers"],
        stride: int | None = None, lags: int = DEFAULTS["lags"],
        embed_hidden: int = DEFAULTS["embed_hidden"], onsets: bool = DEFAULTS["onsets"],
        noise: float = DEFAULTS["noise"], gain: float = DEFAULTS["gain"],
        members: int = DEFAULTS["members"]) -> tuple[Decoder, dict]:
    """Train a decoder on ``sessions`` (list of ``rig.session.Session``).

    Parameters
    ----------
    model : backbone spec (``decoders.backbone``): "smollm2", "minilm", folder, hub id, tiny-*.
    pretrained : text-pretrained weights (True) or the same architecture at random (False).
    window : W, frames of context.
    screen : keep this many neurons most correlated with the tail on training frames (None: all).
    norm, norm_tau : causal input normalisation ("running", "fixed", "none"), tau in frames.
    horizon : decode the tail ``horizon`` frames after the last frame seen.
    finetune : "frozen" trains input map and head only; "full" also the backbone; "lora"
        low-rank adapters on the backbone's linear layers (peft).
    epochs, lr, batch, patience : AdamW on MSE; stop after ``patience`` epochs without a
        better validation loss and keep the best epoch.
    out : folder to save the decoder and ``metrics.jsonl`` into.
    layers : keep only the first ``layers`` backbone blocks (0: all).
    stride : frames between the ends of consecutive training windows (default: the positions
        scored per window, so each training frame is a target once: W - W // 2 for a causal
        backbone, whose loss covers the later half of each window; 1 for an encoder).
    lags : L > 0 adds the linear path (``decoders.model.LaggedLinear``) beside the transformer:
        lagged ridge (penalty chosen on validation); the transformer is trained on its own and
        the two are mixed with the share that scores best on validation (``_mix_on_validation``).
    embed_hidden : hidden units of the frame embedding MLP (0: one Linear per frame).
    onsets : each token also carries the change since the frame before it in the window.
    noise : sd of Gaussian noise added to the normalised training inputs (0: none); a
        regulariser that the frozen backbone's rich features need to generalise over time.
    gain : sd of the log of a random gain per neuron and training window that multiplies its
        (noisy) normalised inputs (0: none): the slow gain drift of a recording (bleaching,
        focus, expression), which the running normalisation follows only with a lag, seen
        in training so that the test part's gains are not new.
    members : K frame embeddings and heads trained side by side on the one backbone, each from
        its own random start and on its own input noise; the transformer predicts their mean.

    Returns
    -------
    decoder, record : the best-validation decoder and a dict of split and per-epoch losses.
    """
    for name, v in (("noise", noise), ("gain", gain)):
        if v < 0:
            raise ValueError(f"{name}={v}: the training input {name} sd must be >= 0 (0: none)")
    xs, ys = _arrays(sessions)
    splits = [split_frames(len(x), fractions) for x in xs]
    if horizon < 0 or any(sp.train[1] - horizon <= window for sp in splits):
        raise ValueError(f"horizon={horizon}, window={window}: need 0 <= horizon and a training "
                         "part longer than window + horizon frames")
    tr_x = np.concatenate([x[sp.train[0]:sp.train[1]] for x, sp in zip(xs, splits)])
    tr_y = np.concatenate([y[sp.train[0]:sp.train[1]] for y, sp in zip(ys, splits)])
    keep = screen_neurons(tr_x, tr_y, screen)
    y_mean, y_std = tr_y.mean(0), tr_y.std(0) + 1e-6
    config = DecoderConfig(
        n_neurons=xs[0].shape[1], n_outputs=ys[0].shape[1], window=window,
        backbone=bb.BackboneSpec(model, pretrained, seed, layers).to_dict(), screen=keep.tolist(),
        norm=norm, norm_tau=norm_tau, horizon=horizon, finetune=finetune, lags=lags,
        embed_hidden=embed_hidden, onsets=onsets, members=members,
        x_mean=tr_x[:, keep].mean(0).tolist(), x_std=(tr_x[:, keep].std(0) + 1e-3).tolist(),
        y_mean=y_mean.tolist(), y_std=y_std.tolist())
    torch.manual_seed(seed)
    dec = Decoder.build(config)
    net = dec.net
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device)
    causal = bb.is_causal(net.backbone)
    if finetune != "lora":  # peft already froze the base and left the adapters trainable
        for p in net.backbone.parameters():
            p.requires_grad_(finetune == "full")
    # Normalise each session once from its start (causal), standardise targets, index windows.
    zs = [torch.as_tensor(dec.normalise(x)) for x in xs]
    yts = [torch.as_tensor((y - y_mean) / y_std) for y in ys]
    if lags:
        _fit_linear_path(net, zs, yts, splits, lags, horizon)
        net.linear.requires_grad_(False)  # closed form; the transformer trains on its own
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    world, rank = _join_process_group(device)
    model = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net)
    rng = np.random.default_rng(seed)
    # the same noise in every process (drawn for the whole batch before it is shared)
    noise_gen = torch.Generator().manual_seed(seed)
    # Training windows lie wholly inside the training part. A causal backbone's loss covers the
    # positions from `first` on (each sees only its past): the later half of the window, where
    # the context, and the linear path's lags, are nearly what the last position has live
    # (the earliest positions, with a frame or two of context and zero-padded lags, would
    # teach the transformer to patch a start-up that never occurs in streaming). An encoder
    # is scored at the last position only.
    first = min(max(window // 2, lags - 1), window - 1) if causal else window - 1
    if stride is None:
        stride = window - first  # every training frame a target once
    if stride < 1:
        raise ValueError(f"stride={stride}: need >= 1 frame between training windows")
    train_ends = [(i, np.arange(window - 1, sp.train[1] - horizon, stride))
                  for i, sp in enumerate(splits)]
    val_ends = [(i, np.arange(max(sp.val[0], window - 1), sp.val[1] - horizon))
                for i, sp in enumerate(splits)]
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else _null()

    def batches(ends_list, shuffle):
        pairs = np.concatenate([np.stack([np.full(len(e), i), e], 1) for i, e in ends_list])
        if shuffle:
            pairs = pairs[rng.permutation(len(pairs))]
        for j in range(0, len(pairs), batch):
            chunk = pairs[j:j + batch]
            idx = [(int(i), _window_index(chunk[chunk[:, 0] == i, 1], window))
                   for i in np.unique(chunk[:, 0])]
            z = torch.cat([zs[i][w] for i, w in idx]).to(device)
            y = torch.cat([yts[i][w + horizon] for i, w in idx]).to(device)
            yield z, y

    def share(z, y):
        """This process's part of a batch (z: (K, B, w, k), one noisy copy per member), and the
        factor that makes the averaged gradient over processes equal to the gradient of the
        whole batch's mean loss."""
        parts = np.array_split(np.arange(len(y)), world)[rank]
        return z[:, parts], y[parts], world * len(parts) / len(y)

    def val_loss() -> float:
        net.eval()
        tot, n = 0.0, 0
        with torch.inference_mode(), amp:
            for z, y in batches(val_ends, False):
                pred = net(z, "transformer")[:, -1].float()
                tot += float(((pred - y[:, -1]) ** 2).sum())
                n += y[:, -1].numel()
        return tot / max(n, 1)

    record = {"splits": [sp.__dict__ for sp in splits], "epochs": []}
    best, best_state, bad = val_loss(), _trainable_state(net), 0
    record["epochs"].append({"epoch": 0, "train_loss": None, "val_loss": best})
    metrics = None
    out = out if rank == 0 else None  # one writer
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        metrics = open(Path(out) / "metrics.jsonl", "w")
        metrics.write(json.dumps(record["epochs"][0]) + "\n")
    bar = _tqdm(range(1, epochs + 1), progress)
    for ep in bar:
        net.train(finetune != "frozen")
        t0, tot, n = time.perf_counter(), 0.0, 0
        for z, y in batches(train_ends, True):
            n_batch = len(z)
            z = z.expand(members, *z.shape)  # each member trains on its own noisy copy
            if noise:
                z = z + noise * torch.randn(z.shape, generator=noise_gen).to(z)
            if gain:  # one factor per member, window and neuron
                g = torch.randn((*z.shape[:2], 1, z.shape[-1]), generator=noise_gen)
                z = z * torch.exp(gain * g).to(z)
            z, y, scale = share(z, y)
            with amp:
                pred = model(z, "members").float()  # (K, B, w, S)
            err = (pred[:, :, first:] - y[None, :, first:]) ** 2
            loss = err.mean() * scale
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot, n = tot + loss.item() / world * n_batch, n + n_batch
        vl = val_loss()
        row = {"epoch": ep, "train_loss": tot / max(n, 1), "val_loss": vl,
               "seconds": time.perf_counter() - t0}
        record["epochs"].append(row)
        if metrics:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(train=f"{row['train_loss']:.3f}", val=f"{vl:.3f}")
        if vl < best - 1e-6:
            best, best_state, bad = vl, _trainable_state(net), 0
        else:
            bad += 1
            if bad >= patience:
                break
    if metrics:
        metrics.close()
    net.load_state_dict(best_state, strict=False)
    net.to("cpu").float().eval()
    record["best_val_loss"] = best
    if lags:
        with torch.inference_mode():
            config.mix = net.mix = _mix_on_validation(net, batches(val_ends, False))
    from decoders.evaluate import bout_threshold

    config.extra = {"split_fractions": list(fractions), "splits": record["splits"],
                    "bout_threshold": bout_threshold(tr_y),
                    "best_val_loss": best, "epochs_run": len(record["epochs"]) - 1, "lr": lr,
                    "noise": noise, "gain": gain,
                    "processes": world}
    dec = Decoder(config, net)
    if out is not None:
        dec.save(out)
    return dec, record


MIX_GRID = np.linspace(0.0, 1.0, 21)  # transformer shares tried on validation frames


def _mix_on_validation(net, val_batches) -> list[float]:
    """[a, 1 - a]: the transformer's share a (of MIX_GRID) whose mix with the linear path has
    the lowest validation MSE; a = 0 (lagged ridge alone) when the transformer adds nothing.

    Mixing two separately fitted predictors, rather than training the transformer on what
    ridge leaves (tried first), lets it learn the whole mapping: on the residual of a ridge fit
    to the same training frames, it, and a GRU, stopped near the ridge start.
    """
    t, lin, ys = [], [], []
    for z, y in val_batches:
        t.append(net(z, "transformer")[:, -1].float())
        lin.append(net(z, "linear")[:, -1].float())
        ys.append(y[:, -1])
    if not ys:
        return [0.0, 1.0]
    a = best_share(*(torch.cat(v).double().numpy() for v in (t, lin, ys)))
    return [a, 1.0 - a]


def best_share(p: np.ndarray, q: np.ndarray, y: np.ndarray) -> float:
    """The share a of MIX_GRID whose mix ``a * p + (1 - a) * q`` of two predictions of y has
    the lowest mean squared error."""
    err = [float(((a * p + (1 - a) * q - y) ** 2).mean()) for a in MIX_GRID]
    return float(MIX_GRID[int(np.argmin(err))])


def _fit_linear_path(net, zs, yts, splits, lags: int, horizon: int) -> None:
    """Linear path := lagged ridge on the training frames (penalty by validation MSE), on the
    standardised tail."""
    from decoders.baselines import lagged, ridge_solve

    parts = {"train": ([], []), "val": ([], [])}
    for z, y, sp in zip(zs, yts, splits):
        X = lagged(z.numpy().astype(np.float64), lags)
        for name, (xl, yl) in parts.items():
            a, b = getattr(sp, name)
            xl.append(X[max(a, lags - 1):b - horizon])
            yl.append(y.numpy()[max(a, lags - 1) + horizon:b])
    _, coef, intercept = ridge_solve(*(np.concatenate(v) for v in parts["train"]),
                                     *(np.concatenate(v) for v in parts["val"]))
    with torch.no_grad():
        net.linear.weight.copy_(torch.as_tensor(coef))
        net.linear.bias.copy_(torch.as_tensor(intercept))


def _join_process_group(device: str) -> tuple[int, int]:
    """(world size, rank): join torchrun's process group when launched by it, else (1, 0)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist.get_world_size(), dist.get_rank()


def _trainable_state(net) -> dict:
    return {k: v.detach().clone() for k, v in net.named_parameters() if v.requires_grad}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _tqdm(it, enable: bool):
    if not enable:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc="epochs", unit="epoch")
