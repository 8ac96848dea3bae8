"""``rig map``: connectivity from a recorded session's stimulations, without the bus.

Kept light: heavy imports happen inside the command, so ``rig --help`` stays fast.
"""
from __future__ import annotations

import sys

from rig.argtypes import float_in, positive_float

error_rate = float_in(0.0, 1.0, low_open=True)  # and alpha + beta < 1, checked in _map


def register(sub) -> None:
    p = sub.add_parser("map", help="infer connectivity from a session's stimulations",
                       description="Turn each recorded stimulation's traces into outcomes, "
                                   "run the streaming posterior over them, print precision and "
                                   "recall when the session has ground truth, save an .npz.")
    p.add_argument("session", help="a Rig recording (.mcap), suite2p folder or NWB file")
    p.add_argument("--out", default=None, metavar="PATH.npz",
                   help="estimate file (default: next to the session, *_connectivity.npz)")
    p.add_argument("--k", type=positive_float, default=5.0, help="expected in-degree (prior)")
    p.add_argument("--alpha", type=error_rate, default=0.05,
                   help="false-response rate (alpha + beta < 1)")
    p.add_argument("--beta", type=error_rate, default=0.05,
                   help="miss rate, e.g. 0.7 for single-trial photostimulation (alpha + beta < 1)")
    p.add_argument("--threshold", type=float, default=0.2, help="response threshold, dF/F")
    p.add_argument("--moving-rad", type=positive_float, default=0.02,
                   help="tail angle (rad) above which a frame counts as a bout (confounded)")
    p.set_defaults(func=_map)


def _map(args) -> int:
    import logging
    from pathlib import Path

    import numpy as np

    from rig.session import read
    from stim.model import check_rates, score
    from stim.posterior import StreamingPosterior
    from stim.responses import ResponseWindow, outcome

    from rig.recording import RecordingError

    log = logging.getLogger("rig.map")
    try:
        check_rates(args.alpha, args.beta)
    except ValueError as exc:
        print(f"rig map: --alpha/--beta: {exc}", file=sys.stderr)
        return 2
    try:
        s = read(args.session)
    except (RecordingError, OSError) as exc:
        print(f"rig map: {exc}", file=sys.stderr)
        return 2
    if s.stim_frame is None or s.stim_targets is None or len(s.stim_frame) == 0:
        log.error("%s has no stimulations (stim_frame/stim_targets): nothing to map",
                  args.session)
        return 2
    window = ResponseWindow(threshold=args.threshold)
    moving = np.abs(s.tail).max(axis=1) > args.moving_rad if s.tail.size else None
    width = int((s.stim_targets >= 0).sum(axis=1).max())
    post = StreamingPosterior(s.n_neurons, args.alpha, args.beta, args.k, max_targets=width)
    used = confounded = 0
    for f, row in zip(s.stim_frame, s.stim_targets):
        targets = row[row >= 0]
        f = int(f)
        if f - window.baseline_frames < 0 or f + window.frames_after >= len(s.traces):
            continue  # too close to the start or end of the recording for a whole window
        out = outcome(s.traces, f, targets, window, moving)
        post.update(targets, out.y, out.weight)
        used += 1
        confounded += out.confounded
    post.refresh()
    edges = post.estimate()
    print(f"{used} stimulations used ({confounded} during bouts, discarded), "
          f"{len(edges)} connections estimated")
    presyn = s.truth.get("presyn")
    if presyn is not None and len(presyn) == s.n_neurons:
        precision, recall = score(post.lam, presyn)
        print(f"vs ground truth: precision {precision:.3f}, recall {recall:.3f}")
    out_path = Path(args.out) if args.out else Path(args.session).with_suffix("").with_name(
        Path(args.session).stem + "_connectivity.npz")
    np.savez_compressed(out_path, edges=edges, log_odds_q64=post.lam)
    print(f"wrote {out_path}")
    return 0
