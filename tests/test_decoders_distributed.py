"""Training beyond one machine: ``torchrun`` with two CPU processes (gloo) trains the decoder
that one process trains."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from decoders.model import Decoder
from decoders.synthetic import make_session
from decoders.train import fit
from rig import session as rs

torch.set_num_threads(1)
ARGS = dict(model="tiny-llama", pretrained=False, window=4, screen=8, epochs=2, lr=3e-3,
            batch=7, lags=2)  # batch 7: the two processes get unequal shares (4 + 3 windows)


@pytest.mark.timeout(300)
def test_two_process_torchrun_training_matches_one_process(tmp_path):
    sessions = [make_session(n_frames=160, n_neurons=30, n_motor=5, seed=s) for s in (1, 2)]
    paths = [str(rs.write(tmp_path / f"fish{i}.mcap", s)) for i, s in enumerate(sessions)]
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(),
                                                       os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "rig.cli", "train", *paths, "--out", str(out), "--model", "tiny-llama",
           "--random-init", "--window", "4", "--screen", "8", "--epochs", "2", "--lr", "0.003",
           "--batch", "7", "--lags", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    ddp = Decoder.load(out)
    one, _ = fit(sessions, **ARGS)
    assert ddp.config.extra["processes"] == 2 and one.config.extra["processes"] == 1
    for a, b in zip(ddp.net.state_dict().values(), one.net.state_dict().values()):
        # all-reduce sums the two halves' gradients in another order: float32 round-off
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    x = sessions[0].traces
    np.testing.assert_allclose(ddp.predict(x), one.predict(x), atol=1e-4)
