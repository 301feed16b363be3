"""The benchmarks' own steps: what bench/bench_training.py times must be the training's step as it runs."""

import sys

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_script

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


@pytest.mark.parametrize("args, words", [
    (["bench_pipeline.py", "--sizes", "10"], ["--sizes", "at least 32"]),
    (["bench_pipeline.py", "--work-dir", "AFILE/x"], ["afile is not a folder"]),
    (["bench_data.py", "-n", "400", "--repeats", "0"], ["--repeats must be at least 1"]),
    (["bench_data.py", "-n", "0"], ["-n must be at least 4"]),
    (["bench_denoise.py", "--widths", "16,x"], ["--widths 16,x"]),
    (["bench_denoise.py", "--model", "AFILE"], ["afile", "model"]),
    (["bench_denoise.py", "--model", "AFILE.onnx"], ["afile.onnx", "a trained run or .keras generator"]),
    (["bench_denoise.py", "--events", "1"], ["--events at least 2 per round"]),
    (["bench_hipo.py", "--pairs-sectors", "2"], ["--pairs-sectors 0 or at least 16"]),
    (["bench_baselines.py", "--events", "0"], ["--events must be at least 1"]),
    (["train_jax.py", "--output-dir", "AFILE"], ["afile", "not a folder"]),
])
def test_bench_scripts_answer_bad_settings_in_one_line(tmp_path, args, words):
    """Each benchmark refuses what cannot work before minutes of set-up (tracebacks from h5py, TensorFlow or a
    child process, some after generating events)."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "afile.onnx").write_text("")
    script, *rest = [str(tmp_path / "afile") + a[5:] if a.startswith("AFILE") else a for a in args]
    env = {"KERAS_BACKEND": "jax"} if script == "train_jax.py" else None
    assert_one_line_error(run_script(f"bench/{script}", *rest, env=env), *words)
