"""``rig simulate``: write a recorded session of a simulated fish, without the bus.

Kept light: heavy imports happen inside the command, so ``rig --help`` stays fast.
"""
from __future__ import annotations

import sys

from rig.argtypes import float_in, positive_float, positive_int


probability = float_in(0.0, 1.0)


def register(sub) -> None:
    p = sub.add_parser("simulate", help="write a simulated fish session (activity, tail, "
                                        "stimulations, ground truth)",
                       description="Simulate a larval zebrafish (sims.Fish) and write the session "
                                   "with its ground truth as a Rig recording.")
    p.add_argument("--out", required=True, metavar="PATH.mcap", help="file to write")
    p.add_argument("--neurons", type=positive_int, default=2000, help="neurons (2 .. 1,000,000)")
    p.add_argument("--duration", type=positive_float, default=600.0, metavar="SECONDS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=positive_float, default=2.0, metavar="HZ",
                   help="imaging volume rate (2 whole brain, 30 one plane)")
    p.add_argument("--camera-rate", type=positive_float, default=200.0, metavar="HZ")
    p.add_argument("--k", type=positive_int, default=5, help="presynaptic partners per neuron")
    p.add_argument("--p", type=probability, default=0.05,
                   help="false-positive response probability")
    p.add_argument("--q", type=probability, default=0.05,
                   help="false-negative response probability")
    p.add_argument("--stim-every", type=positive_int, default=None, metavar="VOLUMES",
                   help="stimulate a random ensemble every this many volumes (default: none)")
    p.add_argument("--ensemble-size", type=positive_int, default=10)
    p.add_argument("--quiescent-only", action="store_true",
                   help="skip stimulations that fall during a swim bout")
    p.set_defaults(func=_simulate)


def _simulate(args) -> int:
    from rig import session as rs
    from sims import FishConfig, FishConfigError, simulate

    try:
        config = FishConfig(n_neurons=args.neurons, k_presyn=args.k, volume_rate_hz=args.rate,
                            camera_rate_hz=args.camera_rate, p_false_pos=args.p,
                            q_false_neg=args.q, seed=args.seed)
    except FishConfigError as exc:
        print(f"rig simulate: {exc}", file=sys.stderr)
        return 2

    def progress(done: int, total: int) -> None:
        print(f"\rsimulating {done}/{total} volumes", end="", file=sys.stderr, flush=True)

    session = simulate(config, duration_s=args.duration, stim_every=args.stim_every,
                       ensemble_size=args.ensemble_size, quiescent_only=args.quiescent_only,
                       progress=progress)
    print(file=sys.stderr)
    path = rs.write(args.out, session)
    print(f"wrote {path}: {session.n_frames} volumes x {session.n_neurons} neurons, "
          f"{len(session.stim_frame)} stimulations, ground truth in session.truth")
    return 0
