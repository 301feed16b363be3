"""bench/train_jax.py (the model under Keras' JAX backend, for GPU machines without TensorFlow) and
bench/score_probabilities.py (its outputs scored by evaluation.py, as Pix2Pix_denoise --evaluate scores a model)."""

import csv
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import ROOT

import data_management as dm
import evaluation
import event_image as ei
import make_events

pytest.importorskip("jax")


def write_events(path, n, seed):
    """n synthetic pairs in the project's HDF5 layout, with data_management's split saved beside."""
    raw, truth = make_events.generate_events(n, seed=seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=ei.pad_event(raw), chunks=(8, 128, 128, 3))
        f.create_dataset("truth", data=ei.pad_event(truth), chunks=(8, 128, 128, 3))
    return dm.load_split(path)


def run(script, *args):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """Two epochs of a width-4 model on 48 events (GAN term at half weight); the outputs of a second
    file's test split too."""
    tmp = tmp_path_factory.mktemp("jax")
    split = write_events(tmp / "events.h5", 48, seed=3)
    other_split = write_events(tmp / "other.h5", 24, seed=4)
    proc = run("train_jax.py", "--data", tmp / "events.h5", "--output-dir", tmp / "run", "--base-filters", 4,
               "--batch-size", 4, "--epochs", 2, "--precision", "float32", "--learning-rate", 2e-3,
               "--gan-weight", 0.5, "--also-score", tmp / "other.h5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, split, other_split


def test_history_best_epoch_and_gated_outputs(jax_run):
    tmp, split, other_split = jax_run
    with open(tmp / "run" / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and int(rows[-1]["step"]) == 2 * (len(split["train"]) // 4)
    for r in rows:
        assert float(r["threshold"]) in ei.THRESHOLDS and 0 <= float(r["efficiency"]) <= 1
        assert float(r["gen_total"]) == pytest.approx(0.5 * float(r["gen_gan"]) + 100 * float(r["gen_l1"]), rel=1e-4)
    assert float(rows[1]["gen_l1"]) < float(rows[0]["gen_l1"])  # it learns
    best = json.loads((tmp / "run" / "best.json").read_text())
    assert best["validation"]["f1"] == max(float(r["f1"]) for r in rows)
    assert float(rows[best["epoch"] - 1]["threshold"]) == best["threshold"]
    for name, indices in (("test_probabilities.npz", split["test"]), ("test_probabilities_other.npz",
                                                                      other_split["test"])):
        prob = np.load(tmp / "run" / name)["probabilities"]
        assert prob.shape == (len(indices), ei.LAYERS, ei.WIRES) and prob.dtype == np.float16
        assert prob.min() >= 0 and prob.max() <= 1
    # The gate: no output where the raw image has no hit.
    with h5py.File(tmp / "events.h5") as f:
        raw = ei.hit_mask(ei.crop_event(f["raw"][np.sort(split["test"])]))
    prob = np.load(tmp / "run" / "test_probabilities.npz")["probabilities"]
    assert not prob[~raw].any() and prob[raw].any()


def test_score_probabilities_scores_like_denoise_evaluate(jax_run):
    tmp, split, _ = jax_run
    proc = run("score_probabilities.py", "--data", tmp / "events.h5", "--run", tmp / "run", "--threshold", 0.3,
               "--report", tmp / "scored")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp / "scored.json").read_text())
    assert set(report["methods"]) == {"model", "keep-all", "SNR"} and (tmp / "scored.png").is_file()
    # The same numbers as evaluation.py's scores of those outputs, computed here.
    with h5py.File(tmp / "events.h5") as f:
        test = np.sort(split["test"])
        raw, truth = (ei.hit_mask(ei.crop_event(f[k][test])) for k in ("raw", "truth"))
    prob = np.load(tmp / "run" / "test_probabilities.npz")["probabilities"].astype(np.float32)
    direct = evaluation.evaluate(raw, truth, {"model": prob > 0.3})
    for key in ("efficiency", "rejection", "f1"):
        got, want = report["methods"]["model"]["scores"][key], direct["methods"]["model"]["scores"][key]
        assert (np.isnan(got) and np.isnan(want)) if want != want else got == pytest.approx(want)
    # Outputs of another file's test split are refused.
    wrong = run("score_probabilities.py", "--data", tmp / "other.h5", "--run", tmp / "run")
    assert wrong.returncode == 2 and "outputs for a test split of" in wrong.stderr.strip().splitlines()[-1]


def test_noise_augment_under_jax_adds_noise_hits_on_event_cells_only():
    """train_jax's port of --noise-augment (on by default, as in Pix2Pix_training): extra hits only on
    the event's cells, a per-event fraction in 0..most, the raw hits kept, a new draw for each key."""
    code = """
import json, sys
import numpy as np, jax
sys.path.insert(0, "bench")
import train_jax as tj
raw = np.zeros((6, 128, 128, 3), np.float32)
raw[:, 50, 60] = 1.0
out = [np.asarray(tj.with_noise_hits(raw, 0.2, jax.random.key(k))) for k in (1, 1, 2)]
print(json.dumps({"default": tj.NOISE_AUGMENT, "same_key": bool((out[0] == out[1]).all()),
                  "other_key": bool((out[0] != out[2]).any()), "kept": bool((out[0] >= raw).all()),
                  "channels_equal": bool((out[0] == out[0][..., :1]).all()),
                  "outside": int(out[0][:, ~tj.ei.event_region_mask()].sum()),
                  "fractions": ((out[0][..., 0] > raw[..., 0]).sum(axis=(1, 2)) / (36 * 112)).tolist()}))
"""
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["default"] > 0 and got["same_key"] and got["other_key"] and got["kept"] and got["channels_equal"]
    assert got["outside"] == 0  # never on the layout's padding
    fractions = got["fractions"]
    assert max(fractions) < 0.2 * 1.1 and len(set(np.round(fractions, 3))) == len(fractions)  # 0..0.2, per event
