"""``rig train``, ``rig eval``, ``rig salience``: decoders from the command line.

Kept light: heavy imports (torch, transformers) happen inside the commands.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rig.argtypes import float_in, nonneg_int, positive_int


def _screen(text: str) -> int | None:
    if text.lower() in ("all", "none", "0"):
        return None
    return positive_int(text)


def _screen_arg(p) -> None:
    p.add_argument("--screen", type=_screen, default=64, metavar="K|all",
                   help="keep the K neurons most correlated with the tail on training frames "
                        "('all' keeps every neuron)")


def _behaviour_arg(p) -> None:
    p.add_argument("--behaviour", action="append", default=[], metavar="FILE",
                   help="tail angles for the session(s), one per session in order (.csv or "
                        ".npy with a time column, or tail.npy with tail_t.npy beside it); "
                        "default: what the session holds")


def _model_args(p) -> None:
    from decoders import DEFAULTS

    p.add_argument("--model", default=DEFAULTS["model"], metavar="NAME_OR_PATH",
                   help="backbone: smollm2 (default, packaged SmolLM2-135M), minilm, a local "
                        "folder, a cached hub id, gru, or tiny-llama/tiny-gpt2/tiny-bert")
    p.add_argument("--random-init", action="store_true",
                   help="same architecture, random weights (the pretrained twin's control)")
    p.add_argument("--window", type=positive_int, default=DEFAULTS["window"], metavar="FRAMES")
    _screen_arg(p)
    p.add_argument("--norm", choices=("running", "fixed", "none"), default="running",
                   help="causal input normalisation (running: against slow drift)")
    p.add_argument("--horizon", type=nonneg_int, default=0, metavar="FRAMES",
                   help="decode the tail this many frames ahead")
    p.add_argument("--layers", type=nonneg_int, default=DEFAULTS["layers"], metavar="L",
                   help="keep the first L backbone blocks (0: all; fewer = faster per frame)")
    p.add_argument("--finetune", choices=("frozen", "full", "lora"), default="frozen",
                   help="train the input map and head only, the whole backbone, or LoRA "
                        "adapters on it (needs rig[lora])")
    p.add_argument("--lags", type=nonneg_int, default=DEFAULTS["lags"], metavar="FRAMES",
                   help="linear path beside the transformer: lagged ridge on the last FRAMES "
                        "inputs, mixed in by a share chosen on validation (0: none)")
    p.add_argument("--embed-hidden", type=nonneg_int, default=DEFAULTS["embed_hidden"],
                   metavar="UNITS", help="hidden units of the per-frame embedding MLP before "
                                         "the backbone (0: one linear map)")
    p.add_argument("--no-onsets", dest="onsets", action="store_false",
                   help="tokens carry their frame only, not also its change since the last")
    p.add_argument("--noise", type=float_in(0.0, float("inf")), default=DEFAULTS["noise"],
                   metavar="SD",
                   help="sd of Gaussian noise added to the normalised training inputs (0: none)")
    p.add_argument("--gain", type=float_in(0.0, float("inf")), default=DEFAULTS["gain"],
                   metavar="SD", help="sd of the log of a random gain per neuron and training "
                                      "window (drift augmentation; 0: none)")
    p.add_argument("--members", type=positive_int, default=DEFAULTS["members"], metavar="K",
                   help="K frame embeddings and heads trained side by side on the one backbone, "
                        "their predictions averaged (1: one; K costs K times the compute)")
    p.add_argument("--epochs", type=positive_int, default=DEFAULTS["epochs"])
    p.add_argument("--patience", type=positive_int, default=DEFAULTS["patience"],
                   help="epochs without a better validation loss before stopping")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--batch", type=positive_int, default=DEFAULTS["batch"], metavar="WINDOWS",
                   help="windows per step (under torchrun: over all processes together)")
    p.add_argument("--seed", type=int, default=0)


def register(sub) -> None:
    p = sub.add_parser("train", help="fit a decoder (LLM backbone) on sessions",
                       description="Time-ordered 70/10/20 split per session, early stopping on "
                                   "validation; saves the decoder folder with metrics.jsonl and "
                                   "the held-out test scores (test.json).")
    p.add_argument("sessions", nargs="+", metavar="SESSION",
                   help="recordings (.mcap, suite2p, NWB)")
    p.add_argument("--out", required=True, metavar="DECODER_DIR")
    _behaviour_arg(p)
    _model_args(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="score decoders, baselines and chance on held-out frames",
                       description="Prints and saves a table: Pearson r, R², RMSE, bout F1 on "
                                   "each session's test part, with the chance (training mean) row.")
    p.add_argument("sessions", nargs="+", metavar="SESSION")
    p.add_argument("--decoder", action="append", default=[], metavar="DECODER_DIR",
                   help="a trained decoder folder (repeatable)")
    p.add_argument("--baselines", action="store_true",
                   help="also fit lagged ridge (screened and on all neurons) and a GRU")
    _screen_arg(p)
    p.add_argument("--lags", type=positive_int, default=4, metavar="FRAMES",
                   help="frames the ridge baseline reads (the current one included)")
    _behaviour_arg(p)
    p.add_argument("--out", default="eval.json", metavar="FILE.json")
    p.set_defaults(func=_eval)

    p = sub.add_parser("salience", help="rank neurons by gradient attribution of a decoder",
                       description="Integrated gradients (or gradient x input) of the decoded "
                                   "tail w.r.t. each neuron, saved with positions for the "
                                   "dashboard.")
    p.add_argument("decoder", metavar="DECODER_DIR")
    p.add_argument("session", metavar="SESSION")
    p.add_argument("--method", choices=("ig", "grad_x_input"), default="ig")
    p.add_argument("--steps", type=positive_int, default=16)
    p.add_argument("--frames", type=positive_int, default=256, help="frames attributed, at most")
    p.add_argument("--out", default="salience.npz", metavar="FILE.npz")
    p.set_defaults(func=_salience)


def _read(paths, behaviours=()):
    """Sessions, with their tail replaced by ``--behaviour`` files when given."""
    from rig import session as rs
    from rig.recording.importers import attach_behaviour, read_behaviour

    if behaviours and len(behaviours) != len(paths):
        raise ValueError(f"--behaviour given {len(behaviours)} times for {len(paths)} sessions; "
                         "give one per session, in the same order")
    sessions = [rs.read(p) for p in paths]
    for s, b in zip(sessions, behaviours):
        attach_behaviour(s, *read_behaviour(Path(b)))
    return sessions


def _errors():
    """What a command reports in one line instead of a traceback."""
    from rig.recording.format import RecordingError

    return ValueError, OSError, RecordingError  # OSError: missing, unreadable, a folder


def _train(args) -> int:
    from decoders.evaluate import score_sessions
    from decoders.train import fit

    try:
        sessions = _read(args.sessions, args.behaviour)
        dec, _ = fit(sessions, model=args.model, pretrained=not args.random_init,
                     window=args.window, screen=args.screen, norm=args.norm, horizon=args.horizon,
                     finetune=args.finetune, layers=args.layers, lags=args.lags,
                     embed_hidden=args.embed_hidden, onsets=args.onsets, noise=args.noise,
                     gain=args.gain, members=args.members, epochs=args.epochs,
                     patience=args.patience, lr=args.lr, batch=args.batch, seed=args.seed,
                     out=args.out, progress=True)
        if int(os.environ.get("RANK", "0")) != 0:  # a torchrun worker: rank 0 reports
            return 0
        scores = score_sessions(dec.predict, sessions, horizon=args.horizon)
        scores["validation"] = _check_against_ridge(dec, sessions, args)
    except _errors() as exc:
        print(f"rig train: {exc}", file=sys.stderr)
        return 2
    Path(args.out, "test.json").write_text(json.dumps(scores, indent=1))
    m, c = scores["model"], scores["chance"]
    print(f"saved {args.out}: test r={m['r_mean']:.3f} R²={m['r2_mean']:.3f} "
          f"RMSE={m['rmse_mean']:.4f} (chance RMSE={c['rmse_mean']:.4f})")
    return 0


def _check_against_ridge(dec, sessions, args) -> dict:
    """Validation r of the decoder and of lagged ridge on the same screened neurons; warn when
    the decoder is no better (then use ridge, or more data, or other settings)."""
    from decoders.baselines import fit_ridge
    from decoders.evaluate import score_sessions

    ridge = fit_ridge(sessions, lags=max(dec.config.lags, 1), screen=len(dec.screen),
                      horizon=args.horizon)
    val = {name: score_sessions(f, sessions, horizon=args.horizon, part="val")["model"]["r_mean"]
           for name, f in (("decoder", dec.predict), ("ridge", ridge.predict))}
    share = dec.config.mix[0]
    # share 0: validation kept the linear path alone, i.e. lagged ridge (equal up to round-off)
    if (dec.config.lags and share == 0) or not val["decoder"] > val["ridge"]:
        fix = (f"validation gave the transformer a share of {share:.2f} beside its lagged-ridge "
               "path: prefer ridge or a GRU (`rig eval --baselines`)" if dec.config.lags else
               "train with --lags 4 so that validation can fall back to ridge, or use ridge")
        print(f"rig train: warning: on validation frames the decoder (r={val['decoder']:.3f}) is "
              f"no better than lagged ridge (r={val['ridge']:.3f}); {fix}", file=sys.stderr)
    return {"r_decoder": val["decoder"], "r_ridge": val["ridge"]}


def _eval(args) -> int:
    from decoders import evaluate as ev
    from decoders.baselines import fit_gru, fit_ridge
    from decoders.model import Decoder

    rows = {}
    try:
        sessions = _read(args.sessions, args.behaviour)
        for folder in args.decoder:
            dec = Decoder.load(folder)
            rows[folder] = ev.score_sessions(dec.predict, sessions, horizon=dec.config.horizon)
        if args.baselines:
            k = "all" if args.screen is None else args.screen
            ridge = fit_ridge(sessions, lags=args.lags, screen=args.screen)
            rows[f"ridge, {args.lags} lags, {k} neurons"] = ev.score_sessions(ridge.predict,
                                                                              sessions)
            if args.screen is not None:
                ridge = fit_ridge(sessions, lags=args.lags, screen=None)
                rows[f"ridge, {args.lags} lags, all neurons"] = ev.score_sessions(ridge.predict,
                                                                                  sessions)
            gru, _ = fit_gru(sessions, screen=args.screen, window=16)
            rows[f"GRU, {k} neurons"] = ev.score_sessions(gru.predict, sessions)
    except _errors() as exc:
        print(f"rig eval: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("rig eval: nothing to score; give --decoder DIR and/or --baselines", file=sys.stderr)
        return 2
    table = {name: ev.aggregate([r["model"]]) for name, r in rows.items()}
    table["chance (train mean)"] = ev.aggregate([next(iter(rows.values()))["chance"]])
    print(ev.table(table))
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=1))
    return 0


def _salience(args) -> int:
    from decoders import salience as sal
    from decoders.model import Decoder

    try:
        dec = Decoder.load(args.decoder)
        (s,) = _read([args.session])
        scores = sal.salience(dec, s.traces, method=args.method, steps=args.steps,
                              max_frames=args.frames)
    except _errors() as exc:
        print(f"rig salience: {exc}", file=sys.stderr)
        return 2
    path = sal.save(args.out, scores, s.positions, s.regions, s.region_names,
                    meta={"decoder": args.decoder, "session": args.session, "method": args.method})
    print(f"saved {path} (top neuron {int(scores.argmax())})")
    return 0
