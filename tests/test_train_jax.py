"""bench/train_jax.py (the model under Keras' JAX backend, for GPU machines without TensorFlow) and
bench/score_probabilities.py (its outputs scored by evaluation.py, as Pix2Pix_denoise --evaluate scores a model)."""

import csv
import json
import os
import subprocess
import sys

import h5py
import jax  # noqa: F401 (requirements-dev.txt has it: a missing jax fails here, it is not skipped)
import keras
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_script

import data_management as dm
import evaluation
import event_image as ei
import make_events
import pix2pix_model as pm


def write_events(path, n, seed):
    """n synthetic pairs in the project's HDF5 layout with their track ids, data_management's split saved beside."""
    raw, truth, ids = make_events.generate_events(n, seed=seed, track_ids=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=ei.pad_event(raw), chunks=(8, 128, 128, 3))
        f.create_dataset("truth", data=ei.pad_event(truth), chunks=(8, 128, 128, 3))
        f.create_dataset("track_ids", data=ids)
    return dm.load_split(path)


JAX = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",  # Keras' JAX backend on the CPU, for every child here,
       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # with every compilation kept (shared_compilations)


@pytest.fixture(scope="module", autouse=True)
def shared_compilations(tmp_path_factory):
    """One JAX compilation cache for all the children here: what one run compiled (its step, its prediction), the
    later runs load instead of compiling again (a one-epoch width-4 run: ~35 s of CPU alone, 9-16 s after another)."""
    JAX["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_compilations"))


def start(script, *args):
    """A bench script started under JAX, its output captured."""
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / script), *map(str, args)], cwd=ROOT,
                            env=dict(os.environ, **JAX), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc):
    """The started script's CompletedProcess, once it ends (killed after 10 minutes)."""
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(script, *args):
    """A bench script run under JAX: its CompletedProcess."""
    return run_script(f"bench/{script}", *args, env=JAX)


def run_code(code, *args):
    """Python code run under JAX in a child process started in the project's folder: its CompletedProcess."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=dict(os.environ, **JAX),
                          capture_output=True, text=True, timeout=300)


TINY = ("--base-filters", 4, "--batch-size", 4, "--precision", "float32", "--learning-rate", 2e-3, "--gan-weight", 0.5)
LEVERS = {"--lr-decay": "cosine", "--beside-augment": 0.5, "--mix-tracks": 0.5, "--mix-background": 0.5,
          "--bend-augment": 0.5}


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """Two epochs of a width-4 model on 48 events (GAN term at half weight, cosine decay, beside
    segments, another event's tracks and background, bent layers on half the events); the outputs of a second
    file's test split too."""
    tmp = tmp_path_factory.mktemp("jax")
    split = write_events(tmp / "events.h5", 48, seed=3)
    other_split = write_events(tmp / "other.h5", 24, seed=4)
    proc = run("train_jax.py", "--data", tmp / "events.h5", "--output-dir", tmp / "run", *TINY, "--epochs", 2,
               *(str(a) for kv in LEVERS.items() for a in kv), "--also-score", tmp / "other.h5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, split, other_split


def test_a_run_folder_with_a_run_in_it_is_refused_without_overwrite(jax_run):
    """A second run into the same --output-dir cut the first's history.csv and left its best.json (36,000 s runs)."""
    tmp = jax_run[0]
    before = {p.name: p.read_bytes() for p in (tmp / "run").iterdir() if p.is_file()}
    proc = run("train_jax.py", "--data", tmp / "events.h5", "--output-dir", tmp / "run", *TINY, "--epochs", 1)
    assert_one_line_error(proc, "run", "not empty", "--overwrite")
    assert {p.name: p.read_bytes() for p in (tmp / "run").iterdir() if p.is_file()} == before


def first_epoch_losses(tmp, changes):
    """{name: the epoch-1 losses} of one-epoch runs like jax_run's, each with its levers changed ({name: {flag:
    value}}), started together so that the machine's cores share them."""
    procs = {name: start("train_jax.py", "--data", tmp / "events.h5", "--output-dir", tmp / name, *TINY,
                         "--epochs", 1, *(str(a) for kv in {**LEVERS, **changed}.items() for a in kv))
             for name, changed in changes.items()}
    done = {name: finished(proc) for name, proc in procs.items()}
    losses = {}
    for name, proc in done.items():
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(tmp / name / "history.csv", newline="") as f:
            row = next(csv.DictReader(f))
        losses[name] = [float(row[k]) for k in ("gen_total", "gen_l1", "val_l1", "disc")]
    return losses


def test_the_levers_reach_the_training_steps(jax_run):
    """The learning rate follows --lr-decay per epoch; --beside-augment, --mix-tracks, --mix-background and
    --bend-augment change
    what the steps train on (the same run without one of them ends its first epoch elsewhere; with all, where
    jax_run did); --pixel-loss l1 changes the pixel term the steps minimise (bce, the default, does not);
    --gan-weight 0 runs no discriminator (its loss 0; jax_run's, at 0.5, is not)."""
    tmp = jax_run[0]
    with open(tmp / "run" / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([2e-3, 1e-3])  # 0.5 (1 + cos(pi e / 2))
    base = [float(rows[0][k]) for k in ("gen_total", "gen_l1", "val_l1", "disc")]
    losses = first_epoch_losses(tmp, {"bce": {"--pixel-loss": "bce"}, "no_beside": {"--beside-augment": 0},
                                      "no_mix": {"--mix-tracks": 0}, "no_background": {"--mix-background": 0},
                                      "no_bend": {"--bend-augment": 0}, "l1": {"--pixel-loss": "l1"},
                                      "no_gan": {"--gan-weight": 0}})
    # bce is the default: jax_run again, so the run is deterministic and the comparisons below hold
    assert losses["bce"] == pytest.approx(base, rel=1e-6)
    for name in ("no_beside", "no_mix", "no_background", "no_bend"):
        assert losses[name][0] != pytest.approx(base[0], rel=1e-6), name
    assert losses["l1"][1] != pytest.approx(base[1], rel=1e-6)
    assert base[3] > 0 and losses["no_gan"][3] == 0


def test_the_extra_hits_are_the_same_under_jax_as_under_tensorflow(tmp_path):
    """pix2pix_model's beside_segments, mixed_tracks, mixed_background and bent_events (keras.ops) give the same
    images under JAX as under TensorFlow (Pix2Pix_training's) for the same random numbers."""
    raw, truth = (ei.pad_event(a).astype(np.float32) / 255 for a in make_events.generate_events(8, seed=5))
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "in.npz", raw=raw, truth=truth, u5=rng.random((8, 5), np.float32), u1=rng.random(8, np.float32))
    code = """
import sys
import numpy as np
sys.path.insert(0, ".")
import pix2pix_model as pm
d = np.load(sys.argv[1])
np.savez(sys.argv[2], beside=np.asarray(pm.beside_segments(d["raw"], d["truth"], d["u5"], 0.5)[0]),
         mixed=np.asarray(pm.mixed_tracks(d["raw"], d["truth"], d["u1"], 0.5)[1]),
         background=np.asarray(pm.mixed_background(d["raw"], d["truth"], d["u1"], 0.5)[0]),
         bent=np.stack(pm.bent_events(d["raw"], d["truth"], d["u5"][:, :3], 0.5)))
"""
    proc = run_code(code, tmp_path / "in.npz", tmp_path / "jax.npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    under_jax, d = np.load(tmp_path / "jax.npz"), np.load(tmp_path / "in.npz")
    assert keras.backend.backend() == "tensorflow"  # this process
    beside = np.asarray(pm.beside_segments(d["raw"], d["truth"], d["u5"], 0.5)[0])
    mixed = np.asarray(pm.mixed_tracks(d["raw"], d["truth"], d["u1"], 0.5)[1])
    np.testing.assert_array_equal(under_jax["beside"], beside)
    np.testing.assert_array_equal(under_jax["mixed"], mixed)
    background = np.asarray(pm.mixed_background(d["raw"], d["truth"], d["u1"], 0.5)[0])
    np.testing.assert_array_equal(under_jax["background"], background)
    assert 0 < (background != raw).any(axis=(1, 2, 3)).sum() < 8
    bent = np.stack(pm.bent_events(d["raw"], d["truth"], d["u5"][:, :3], 0.5))
    np.testing.assert_array_equal(under_jax["bent"], bent)
    assert 0 < (bent[1] != truth).any(axis=(1, 2, 3)).sum() < 8
    assert 0 < (beside != raw).any(axis=(1, 2, 3)).sum() < 8 and 0 < (mixed != truth).any(axis=(1, 2, 3)).sum() < 8


def test_history_best_epoch_and_gated_outputs(jax_run):
    tmp, split, other_split = jax_run
    with open(tmp / "run" / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and int(rows[-1]["step"]) == 2 * (len(split["train"]) // 4)
    for r in rows:  # the tracks criterion, the default: the report's sweep, tracks and fake segments recorded
        assert float(r["threshold"]) in ei.SWEEP_THRESHOLDS and 0 <= float(r["efficiency"]) <= 1
        assert 0 <= float(r["tracks_kept"]) <= 1 and float(r["fake_segments_per_event"]) >= 0
        assert float(r["gen_total"]) == pytest.approx(0.5 * float(r["gen_gan"]) + 100 * float(r["gen_l1"]), rel=1e-4)
    assert float(rows[1]["gen_l1"]) < float(rows[0]["gen_l1"])  # it learns
    best = json.loads((tmp / "run" / "best.json").read_text())
    assert best["epoch"] == max((1, 2), key=lambda e: pm.epoch_rank(rows[e - 1], "tracks", pm.TRACKS_KEPT))
    assert best["validation"]["tracks_kept"] == pytest.approx(float(rows[best["epoch"] - 1]["tracks_kept"]))
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
    assert "threshold 0.30 (--threshold)" in proc.stdout  # not best.json's, chosen on validation
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
    proc = run_code(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["default"] > 0 and got["same_key"] and got["other_key"] and got["kept"] and got["channels_equal"]
    assert got["outside"] == 0  # never on the layout's padding
    fractions = got["fractions"]
    assert max(fractions) < 0.2 * 1.1 and len(set(np.round(fractions, 3))) == len(fractions)  # 0..0.2, per event


def test_validation_reads_the_track_ids_and_uses_the_runs_criterion_and_background(jax_run):
    """train_jax's validation split carries its events' track ids in the order of its images, and an epoch's
    validation is pix2pix_model.validate with the run's --threshold-criterion, --tracks-kept,
    --validation-background and --validation-draws (its default cut to what batches of 4 hold), as
    Pix2Pix_training's."""
    tmp = jax_run[0]
    code = """
import json, sys
import numpy as np
sys.path.insert(0, "bench")
import train_jax as tj
validation = tj.load_pairs(sys.argv[1], track_ids=True)["validation"]
np.savez(sys.argv[2], raw=validation[0], truth=validation[1], ids=validation[2])
doubtful = np.where(np.arange(128) % 5 == 0, 0.3, 0.9)[None, None, :, None]  # every fifth wire's hits at 0.3
for name, flags in (("two", ["--validation-background", "2", "--validation-draws", "1"]),
                    ("own", ["--validation-background", "1"]), ("drawn", ["--validation-background", "2"])):
    s = tj.parse_args(["--data", sys.argv[1], "--batch-size", "4", "--tracks-kept", "0.5", *flags])
    scores = tj.validate_epoch(s, lambda raw: raw * doubtful, validation)
    print(json.dumps({"name": name, "draws": s.validation_draws,
                      **{k: scores[k] for k in ("threshold", "tracks_kept", "fake_segments_per_event")}}))
"""
    proc = run_code(code, tmp / "events.h5", tmp / "validation.npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {d.pop("name"): d for d in (json.loads(line) for line in proc.stdout.strip().splitlines()[-3:])}
    d = np.load(tmp / "validation.npz")
    np.testing.assert_array_equal(d["ids"] > 0, ei.hit_mask(ei.crop_event(d["truth"])))  # each image's own ids
    doubtful = np.where(np.arange(128) % 5 == 0, 0.3, 0.9)[None, None, :, None]
    batches = [(d["raw"][i:i + 4] / 255, d["truth"][i:i + 4] / 255) for i in range(0, len(d["raw"]), 4)]
    for name, background, draws in (("two", 2, 1), ("own", 1, 1), ("drawn", 2, 3)):  # batches of 4: 3 draws fit
        assert got[name].pop("draws") == draws, name
        want, _ = pm.validate(lambda raw: raw * doubtful, batches, criterion="tracks", track_ids=d["ids"],
                              tracks_kept=0.5, background=background, draws=draws)
        assert got[name] == {k: pytest.approx(want[k]) for k in got[name]}, name
    assert got["drawn"] != got["two"]
    assert got["two"]["fake_segments_per_event"] > got["own"]["fake_segments_per_event"]
    assert 0.3 <= got["two"]["threshold"] < 0.9  # the doubtful hits dropped, some tracks with them
    one_track_each, _ = pm.validate(lambda raw: raw * doubtful, batches, criterion="tracks", tracks_kept=0.5,
                                    background=2)
    assert got["two"]["tracks_kept"] != pytest.approx(one_track_each["tracks_kept"])  # the ids count here


def test_mirror_average_answers_an_event_and_its_mirror_alike_under_jax(tmp_path):
    """--mirror-average: the JAX trainer's inference (what validation and the test outputs use) answers an
    event and its mirror alike, as Pix2Pix_training's does; the plain model does not. --shift-average: it
    averages the event's and its moved copy's answers as the Keras-side view_averaged does."""
    code = """
import sys
import numpy as np
sys.path.insert(0, "bench")
import keras
import event_image as ei
import pix2pix_model as pm
import train_jax as tj
keras.utils.set_random_seed(1)
generator = pm.build_generator(4)
has_mirror = pm.MIRROR_TABLES[ei.PADDED_SIZE][1]
raw = (np.random.default_rng(2).random((2, 128, 128, 3)) > 0.9) * has_mirror * ei.event_region_mask()[..., None]
raw = raw.astype("float32")
valid = has_mirror & (raw > 0.5)
params = ([v.value for v in generator.trainable_variables], [v.value for v in generator.non_trainable_variables])
for mirror_average in (False, True):
    predict = tj.make_predict(generator, mirror_average)
    direct = np.asarray(predict(*params, raw))
    of_mirror = np.asarray(pm.mirrored(np.asarray(predict(*params, np.asarray(pm.mirrored(raw))))))
    print(mirror_average, float(np.abs(of_mirror - direct)[valid].max()), float(direct[raw.max(-1) < 0.5].max()))
plain, shifted = (np.asarray(tj.make_predict(generator, shift=k)(*params, raw)) for k in (0, 1))
keras_side = np.asarray(pm.view_averaged(lambda x: generator(x, training=False) * (x.max(-1, keepdims=True) > 0.5),
                                         raw, shift=1))
print("shift", float(np.abs(shifted - keras_side)[raw > 0.5].max()), float(np.abs(plain - keras_side)[raw > 0.5].max()))
print(tj.parse_args(["--mirror-average"]).mirror_average, tj.parse_args([]).mirror_average,
      tj.parse_args(["--shift-average", "1"]).shift_average, tj.parse_args([]).shift_average)
"""
    proc = run_code(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *lines, flags = proc.stdout.strip().splitlines()
    gaps = {words[0]: (float(words[1]), float(words[2])) for words in map(str.split, lines)}
    assert gaps["True"][0] < 1e-5 < gaps["False"][0]
    assert gaps["True"][1] == gaps["False"][1] == 0  # gated by the raw hits either way
    assert gaps["shift"][0] < 1e-5 < gaps["shift"][1]  # --shift-average: view_averaged's, as Pix2Pix_training's
    assert flags == "True False 1 0"  # the flags, off by default
