"""The benchmarks' own steps: what bench/bench_training.py times must be the training's step as it runs."""

import sys

import numpy as np
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import bench_training  # noqa: E402


def test_bench_training_times_the_default_step_and_the_gan_terms_step():
    """The default recipe steps the generator alone (no discriminator is built: GAN and D losses 0); with the
    GAN term both networks step. (The benchmark crashed once it asked a default trainer for a discriminator.)"""
    batch = bench_training.random_batch()
    default = [float(v) for v in bench_training.project_train_step_fn(4, "float32")(*batch)]
    with_gan = [float(v) for v in bench_training.project_train_step_fn(4, "float32", gan=True)(*batch)]
    assert np.isfinite(default).all() and default[0] > 0 and default[1] == 0 and default[3] == 0
    assert np.isfinite(with_gan).all() and with_gan[1] > 0 and with_gan[3] > 0
