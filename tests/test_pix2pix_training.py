"""Pix2Pix_training.py: the model's shapes, the train step, the run's files, resume, strategy, bad input.

Everything runs for real (HDF5 files of synthetic events, TensorFlow) on tiny widths and a few
dozen pairs.
"""

import csv
import dataclasses
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import types

import h5py
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_script, wait_for
from PIL import Image

import data_management as dm
import event_image as ei
import make_events
import pix2pix_model as pm
import pix2pix_trainer as ptr
import Pix2Pix_training as pt
import trained_model
from pix2pix_model import epoch_rank
from Pix2Pix_training import keras, tf
from script_utils import InputError

TINY = ["--base-filters", "4", "--batch-size", "4", "--mixed-precision", "float32", "--sample-events", "2",
        "--gan-weight", "1"]  # the GAN term on (off by default): these runs check its discriminator too


@pytest.fixture(scope="module")
def events_h5(tmp_path_factory):
    """48 synthetic pairs (27 train, 9 validation, 12 test) in the project's HDF5 layout."""
    path = tmp_path_factory.mktemp("data") / "events.h5"
    raw, truth = make_events.generate_events(48, seed=3)
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=ei.pad_event(raw), chunks=(8, 128, 128, 3))
        f.create_dataset("truth", data=ei.pad_event(truth), chunks=(8, 128, 128, 3))
        f.create_dataset("names", data=np.array([f"e{i}" for i in range(48)], dtype="S"))
    return path


def settings(data, out, *extra):
    """The script's settings for a tiny run."""
    return pt.parse_args(["--data", str(data), "--output-dir", str(out), *TINY, *map(str, extra)])


def generator_weights(trainer_or_model):
    model = getattr(trainer_or_model, "generator", trainer_or_model)
    return [np.array(v) for v in model.weights]


# --- The model ---------------------------------------------------------------------------------
def test_default_model_shapes_and_output_range():
    gen, disc = pm.build_generator(), pm.build_discriminator()
    assert gen.input_shape == (None, 128, 128, 3) and gen.output_shape == (None, 128, 128, 3)
    assert disc.output_shape == (None, 14, 14, 1)  # the 70x70 PatchGAN's patch map at 128x128
    # The tutorial's generator adapted to 128x128 has 41.8 M parameters (README): the same architecture.
    assert 41.5e6 < gen.count_params() < 42.1e6
    strided = [layer for layer in gen._flatten_layers() if isinstance(layer, keras.layers.Conv2D)
               and not isinstance(layer, keras.layers.Conv2DTranspose)]
    assert [c.filters for c in strided] == [64, 128, 256, 512, 512, 512, 512] and all(c.strides == (2, 2)
                                                                                       for c in strided)
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in gen._flatten_layers()) == 3
    out = gen(np.random.default_rng(0).random((2, 128, 128, 3), np.float32), training=False)
    assert out.dtype == tf.float32 and float(tf.reduce_min(out)) >= 0 and float(tf.reduce_max(out)) <= 1


def test_gated_generator_never_lights_a_pixel_without_a_raw_hit(tmp_path):
    raw = np.zeros((2, 128, 128, 3), np.float32)
    raw[0, 50, 20] = 1.0
    raw[0, 60, 30] = (128 / 255, 0, 0)  # one channel above the PNG threshold: a hit
    raw[1, 70, 40] = 127 / 255  # not above it: no hit
    plain = pm.build_generator(base_filters=4)
    gated = pm.with_raw_hit_gate(plain)
    out = gated(raw, training=False).numpy()
    lit = out.max(-1) > 0
    assert lit[0, 50, 20] and lit[0, 60, 30] and lit.sum() == 2
    assert (plain(raw, training=False).numpy().max(-1) > 0).sum() > 1000
    gated.save(tmp_path / "g.keras")  # the gate travels with the exported model
    reloaded = keras.models.load_model(tmp_path / "g.keras", compile=False)
    np.testing.assert_array_equal(reloaded(raw, training=False).numpy(), out)


def test_hit_weighted_l1_matches_its_definition():
    rng = np.random.default_rng(1)
    target = (rng.random((3, 128, 128, 3)) < 0.01).astype(np.float32)
    output = rng.random((3, 128, 128, 3)).astype(np.float32)
    fake = np.zeros((3, 14, 14, 1), np.float32)
    _, gan, l1 = pm.generator_loss(fake, output, target, global_batch=3, lam=100, hit_weight=10, pixel_loss="l1")
    weights = np.where(target.max(-1, keepdims=True) > 0.5, 10.0, 1.0)
    assert float(l1) == pytest.approx(float(np.mean(weights * np.abs(target - output))), rel=1e-5)
    assert float(gan) == pytest.approx(np.log(2), rel=1e-5)  # logits 0: the balanced value
    # An empty output on sparse images: plain L1 is tiny, the weighted one is not.
    _, _, plain = pm.generator_loss(fake, np.zeros_like(target), target, 3, lam=100, hit_weight=1, pixel_loss="l1")
    _, _, weighted = pm.generator_loss(fake, np.zeros_like(target), target, 3, hit_weight=10, pixel_loss="l1")
    assert float(weighted) == pytest.approx(10 * float(plain), rel=1e-5) and float(plain) < 0.02
    # With the raw image given, its noise hits are weighted too.
    raw = np.maximum(target, (rng.random((3, 128, 128, 3)) < 0.01).astype(np.float32))
    _, _, l1_raw = pm.generator_loss(fake, output, target, 3, hit_weight=10, raw=raw, pixel_loss="l1")
    weights = np.where(raw.max(-1, keepdims=True) > 0.5, 10.0, 1.0)
    assert float(l1_raw) == pytest.approx(float(np.mean(weights * np.abs(target - output))), rel=1e-5)


def test_losses_fall_on_a_fixed_batch_and_the_step_traces_once(tmp_path):
    # Seeded (trainer_with): the initial weights and dropout do not depend on the tests run before.
    lr = ("--generator-lr", 2e-3, "--discriminator-lr", 2e-3)
    trainer = trainer_with(tmp_path, *lr)
    for a, b in zip(generator_weights(trainer), generator_weights(trainer_with(tmp_path, *lr)), strict=True):
        np.testing.assert_array_equal(a, b)
    batch = one_batch(seed=5)
    losses = np.array([[float(v) for v in trainer.train_step(batch)] for _ in range(12)])
    total, l1 = losses[:, 0], losses[:, 2]
    assert l1[-3:].mean() < 0.95 * l1[:3].mean() and total[-3:].mean() < 0.95 * total[:3].mean(), losses
    assert trainer.train_step.experimental_get_tracing_count() == 1  # no retracing per step
    assert int(trainer.step.numpy()) == 12 == int(trainer.gen_opt.iterations.numpy()) == int(
        trainer.disc_opt.iterations.numpy())


def test_split_seed_and_beta_1_reach_the_split_and_the_optimizers(events_h5, tmp_path):
    data = tmp_path / "events.h5"  # a copy: the split saved beside the shared file stays the default one
    shutil.copy(events_h5, data)
    s = settings(data, tmp_path / "run", "--split-seed", 7, "--beta-1", 0.8)
    split, steps, _, _ = pt.load_data(s, replicas=1)
    for name, indices in dm.make_split(48, 7).items():
        np.testing.assert_array_equal(split[name], indices)
    assert not np.array_equal(split["train"], dm.make_split(48, dm.SPLIT_SEED)["train"]) and steps == 27 // 4
    trainer = pt.Trainer(s, tf.distribute.get_strategy(), "float32")
    assert float(trainer.gen_opt.beta_1) == float(trainer.disc_opt.beta_1) == 0.8


# --- A run's files --------------------------------------------------------------------------------
RUN = ["--epochs", 2, "--steps-per-epoch", 3, "--validation-batches", 1, "--checkpoint-every", 2, "--deterministic"]


@pytest.fixture(scope="module")
def tiny_run(events_h5, tmp_path_factory):
    """One deterministic run of the script (2 epochs of 3 steps, a checkpoint every 2 steps)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    proc = run_script("Pix2Pix_training.py", "--data", events_h5, "--output-dir", out, *RUN, *TINY)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_a_finished_run_run_again_keeps_its_final_export_and_says_a_missing_best(events_h5, tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    final = [out / "generator_final.keras", out / "generator_final.json"]
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in final]
    again = run_script("Pix2Pix_training.py", "--data", events_h5, "--output-dir", out, *RUN, *TINY)
    assert again.returncode == 0, again.stderr
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in final] == stamps  # not re-validated and re-exported
    assert "Done: 2 epochs, 6 steps" in again.stdout and "best epoch" in again.stdout
    assert "step 6, its 2 epochs are done, none to train" in again.stdout  # not "epoch 3 after 0 of its batches"
    (out / "generator_best.json").unlink()  # moved away by hand
    again = run_script("Pix2Pix_training.py", "--data", events_h5, "--output-dir", out, *RUN, *TINY)
    assert again.returncode == 0, again.stderr
    assert f"no {out / 'generator_best.json'} (moved?)" in again.stdout


def test_run_writes_history_tensorboard_samples_and_reloadable_generators(events_h5, tiny_run):
    out, proc = tiny_run
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and [int(r["step"]) for r in rows] == [3, 6]
    for r in rows:
        for key in ("gen_total", "gen_gan", "gen_l1", "disc", "val_l1", "efficiency", "rejection", "purity", "f1"):
            assert np.isfinite(float(r[key])), (key, r)
        assert 0 <= float(r["efficiency"]) <= 1 and float(r["threshold"]) in ei.THRESHOLDS
        assert float(r["gen_total"]) == pytest.approx(float(r["gen_gan"]) + 100 * float(r["gen_l1"]), rel=1e-4)
    # TensorBoard: the per-epoch scalars, readable with TensorFlow's own event reader.
    events = list((out / "logs").glob("events.out.tfevents.*"))
    tags = {(v.tag, e.step) for p in events for e in tf.compat.v1.train.summary_iterator(str(p))
            for v in e.summary.value}
    assert {("f1", 1), ("f1", 2), ("gen_l1", 2), ("disc", 1), ("val_l1", 2), ("efficiency", 2)} <= tags
    for n in (1, 2):
        with Image.open(out / "samples" / f"epoch_{n:03d}.png") as im:
            assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 150
    # The patch map is read from the discriminator now: the same record as before, so old runs still resume.
    assert json.loads((out / "run_config.json").read_text())["architecture"] == {
        "model": "pix2pix-unet-patchgan70", "image_shape": [128, 128, 3], "base_filters": 4, "generator_blocks": 7,
        "discriminator_patch_map": [14, 14, 1], "gate_by_raw_hits": True}
    assert sorted(p.name for p in (out / "checkpoints").glob("*.index")) == ["ckpt-3.index", "ckpt-4.index",
                                                                               "ckpt-6.index"]
    x = np.zeros((3, 128, 128, 3), np.float32)
    x[:, ei.LAYER_ROWS, 20] = 1.0
    for stem in ("generator_best", "generator_final"):
        model = keras.models.load_model(out / f"{stem}.keras", compile=False)
        y = np.asarray(model.predict(x, verbose=0))
        assert y.shape == (3, 128, 128, 3) and y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1
        side = json.loads((out / f"{stem}.json").read_text())
        assert side["threshold"] in ei.THRESHOLDS and side["base_filters"] == 4
        assert {"efficiency", "rejection", "purity", "f1"} <= set(side["validation"]) and side["settings"]
        assert side["data"] == {"path": str(events_h5.resolve()), "fingerprint": dm.fingerprint(events_h5)}
    final = json.loads((out / "generator_final.json").read_text())
    assert final["epoch"] == 2 and final["step"] == 6
    assert final["validation"]["f1"] == pytest.approx(float(rows[-1]["f1"]))
    assert "Training 27 pairs" in proc.stdout and "validating on 9" in proc.stdout


def validation_batches(data, batch_size=4):
    """The validation dataset as training builds it (same split, same batches)."""
    return dm.make_dataset(data, dm.load_split(data)["validation"], batch_size=batch_size)


def read_rows(out):
    with open(out / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_exported_generators_are_gated_by_the_raw_hits_unless_told_not_to(events_h5, tiny_run, tmp_path):
    raw = np.concatenate([np.asarray(r) for r, _ in validation_batches(events_h5)])  # the 9 validation events
    raw[0, 5, 5] = (127 / 255, 0, 0)  # just under the hit threshold on one channel: no hit
    raw[0, 6, 6] = (0, 128 / 255, 0)  # just over it: a hit
    hit = raw.max(-1) > ei.SCALED_HIT_THRESHOLD
    assert hit[0, 6, 6] and not hit[0, 5, 5] and 100 < hit.sum() < 0.1 * hit.size
    ungated = tmp_path / "ungated"
    pt.train(settings(events_h5, ungated, "--no-gate-by-raw-hits", "--epochs", 1, "--steps-per-epoch", 1,
                      "--validation-batches", 1))
    assert json.loads((ungated / "run_config.json").read_text())["architecture"]["gate_by_raw_hits"] is False
    for out, gated in ((tiny_run[0], True), (ungated, False)):
        for stem in ("generator_best", "generator_final"):
            y = keras.models.load_model(out / f"{stem}.keras", compile=False).predict(raw, verbose=0)
            assert (y[hit].max(-1) > 0).mean() > 0.99, (out, stem)  # a raw hit's output is the generator's
            if gated:  # no raw hit, no output: exactly 0 on every channel
                assert not y[~hit].any(), (stem, int((y[~hit].max(-1) > 0).sum()))
            else:  # the bare U-Net's sigmoid lights (nearly) every pixel
                assert (y[~hit].max(-1) > 0).mean() > 0.99, stem


def test_generator_best_is_the_best_validation_epoch_and_reproduces_its_scores(events_h5, tmp_path, monkeypatch):
    """The last epoch is made the worst (its generator's output layer zeroed after its steps: 0.5 on every raw
    hit, so the balanced threshold keeps none), so that generator_best must be an earlier epoch's generator."""
    real_train_epoch = pt.train_epoch

    def train_epoch(run):
        result = real_train_epoch(run)
        if run.trainer.counters()[1] == 3:
            for w in run.trainer.generator.layers[-1].weights:
                w.assign(tf.zeros_like(w))
        return result

    monkeypatch.setattr(pt, "train_epoch", train_epoch)
    out = tmp_path / "run"
    pt.train(settings(events_h5, out, "--epochs", 3, "--steps-per-epoch", 2, "--validation-batches", 2,
                      "--generator-lr", 2e-3, "--threshold-criterion", "balanced", "--validation-background", 1))
    rows = read_rows(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    chosen_by = [f if not np.isnan(f) else -1.0 for f in (float(r["f1"]) for r in rows)]  # training's rule
    best, final = (json.loads((out / f"generator_{s}.json").read_text()) for s in ("best", "final"))
    assert best["epoch"] == 1 + int(np.argmax(chosen_by)) < 3 and final["epoch"] == 3
    for stem, side in (("generator_best", best), ("generator_final", final)):
        row = rows[side["epoch"] - 1]
        model = keras.models.load_model(out / f"{stem}.keras", compile=False)
        scores, _ = pm.validate(lambda x, m=model: m(x, training=False), validation_batches(events_h5), 2)
        assert scores["threshold"] == float(row["threshold"]) == side["threshold"], stem
        for key in ("val_l1", "efficiency", "rejection", "purity", "f1"):
            assert scores[key] == pytest.approx(float(row[key]), rel=1e-5, nan_ok=True), (stem, key)
            assert scores[key] == pytest.approx(side["validation"][key] if side["validation"][key] is not None
                                                else np.nan, rel=1e-5, nan_ok=True), (stem, key)


# --- Resume ---------------------------------------------------------------------------------------
def test_validation_shows_its_progress_on_a_terminal(events_h5, tmp_path, monkeypatch):
    """Validation takes minutes on a big split: on a terminal a bar counts its batches (up to --validation-batches),
    as the epoch's bar counts its steps."""
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    shown_at_once = pt.progress
    monkeypatch.setattr(pt, "progress", lambda *a, **k: shown_at_once(*a, mininterval=0, **k))  # every update drawn
    for cap, batches in ((0, 3), (2, 2)):  # 9 validation pairs in batches of 4
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        pt.train(settings(events_h5, tmp_path / f"run{cap}", "--epochs", 1, "--steps-per-epoch", 1,
                          "--validation-batches", cap))
        shown = re.findall(r"validation: *\d+%\|[^|]*\| (\d+)/(\d+)", terminal.getvalue())
        assert shown and shown[-1] == (str(batches), str(batches)), terminal.getvalue()[-500:]


def test_a_run_whose_checkpoints_are_all_unreadable_says_it_starts_again(events_h5, tiny_run, tmp_path, capsys):
    """None readable (as after a kill during the first save): no restore, a warning, step 0."""
    part = tmp_path / "part"
    shutil.copytree(tiny_run[0], part)
    for data in (part / "checkpoints").glob("ckpt-*.data-*"):
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    trainer = pt.Trainer(settings(events_h5, part, *RUN), tf.distribute.get_strategy(), "float32")
    assert pt.restore_latest(trainer, part / "checkpoints") is None and int(trainer.step.numpy()) == 0
    assert "none of its 3 checkpoints is readable: the run starts again from step 0" in capsys.readouterr().err


def test_resume_after_a_corrupted_checkpoint_ends_like_the_uninterrupted_run(events_h5, tiny_run, tmp_path, capsys):
    whole, _ = tiny_run
    part = tmp_path / "part"
    shutil.copytree(whole, part)
    # The run "died" during its last save: ckpt-6 truncated. The previous one (step 4, mid epoch 2) is used.
    data = part / "checkpoints" / "ckpt-6.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    s = settings(events_h5, part, *RUN)
    trainer = pt.Trainer(s, tf.distribute.get_strategy(), "float32")
    assert pt.restore_latest(trainer, part / "checkpoints").endswith("ckpt-4")
    assert "ckpt-6 is unreadable" in capsys.readouterr().err
    reader = tf.train.load_checkpoint(str(part / "checkpoints" / "ckpt-4"))
    for i in (0, len(trainer.generator.variables) - 1):
        np.testing.assert_array_equal(trainer.generator.variables[i].numpy(),
                                      reader.get_tensor(f"generator/{i}/.ATTRIBUTES/VARIABLE_VALUE"))
    assert (int(trainer.step.numpy()), int(trainer.epoch.numpy()), int(trainer.batch_in_epoch.numpy())) == (4, 1, 1)
    assert int(trainer.gen_opt.iterations.numpy()) == int(trainer.disc_opt.iterations.numpy()) == 4

    scores = pt.train(s)  # the rerun: two more steps, then epoch 2's validation and the exports
    captured = capsys.readouterr()
    assert "ckpt-6 is unreadable" in captured.err and "Resuming from" in captured.out
    assert "step 4, epoch 2 after 1 of its batches" in captured.out and scores is not None
    with open(part / "history.csv", newline="") as f:
        assert [(r["epoch"], r["step"]) for r in csv.DictReader(f)] == [("1", "3"), ("2", "6")]
    assert json.loads((part / "generator_final.json").read_text())["step"] == 6
    # Deterministic ops, restored dropout seeds and the data order: the same weights as without the stop.
    for a, b in zip(generator_weights(keras.models.load_model(whole / "generator_final.keras", compile=False)),
                    generator_weights(keras.models.load_model(part / "generator_final.keras", compile=False)),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_resuming_on_another_pairs_file_is_refused_and_the_same_file_resumes(events_h5, tiny_run, tmp_path, capsys):
    from training_files import check_same_data, data_record

    part = tmp_path / "part"
    shutil.copytree(tiny_run[0], part)
    recorded = json.loads((part / "run_config.json").read_text())["data"]
    assert recorded == {"path": str(events_h5.resolve()), "fingerprint": dm.fingerprint(events_h5)}
    other = tmp_path / "other.h5"  # the same layout and size, other events
    raw, truth = make_events.generate_events(48, seed=4)
    with h5py.File(other, "w") as f:
        f.create_dataset("raw", data=ei.pad_event(raw))
        f.create_dataset("truth", data=ei.pad_event(truth))
        f.create_dataset("names", data=np.array([f"e{i}" for i in range(48)], dtype="S"))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    more = ["--epochs", 3, "--steps-per-epoch", 3, "--validation-batches", 1]
    proc = run_script("Pix2Pix_training.py", "--data", other, "--output-dir", part, *more, *TINY)
    assert_one_line_error(proc, str(events_h5.resolve()), str(other.resolve()), "another --output-dir")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written anywhere
    # The run's own file rewritten with other pairs since: refused too, said so.
    with pytest.raises(InputError, match="whose pairs have changed"):
        check_same_data(part, data_record(events_h5, dm.fingerprint(other)))
    # Settings that change what the run learns or how its best epoch is chosen are refused too, nothing written.
    with pytest.raises(InputError, match=r"holds a run started with other settings \(--lambda 100.0 there, 50.0 "
                                         r"asked; --split-seed 1234 there, 7 asked; --pixel-loss bce there, l1 "
                                         r"asked\); resume with the run's"):  # --lambda: the flag, not its dest lam
        pt.train(settings(events_h5, part, *more, "--pixel-loss", "l1", "--split-seed", 7, "--lambda", 50))
    for flag, value in (("--tracks-kept", 0.9), ("--threshold-criterion", "f1")):  # how the best epoch is chosen
        with pytest.raises(InputError, match=f"other settings \\({flag} "):
            pt.train(settings(events_h5, part, *more, flag, value))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    # The same --data resumes; so does a copy of it elsewhere (the data folder moved: the same fingerprint).
    pt.train(settings(events_h5, part, *more))
    moved = tmp_path / "moved.h5"
    shutil.copy(events_h5, moved)
    pt.train(settings(moved, part, *more[:1], 4, *more[2:]))
    out = capsys.readouterr().out
    assert out.count("Resuming from") == 2
    assert ("note: --epochs 4, the run started with 2: the cosine learning-rate decay now runs over 4 epochs; epoch 4 "
            "trains at 0.146 of the set rates") in out  # 0.5 (1 + cos(3 pi / 4))
    assert [(r["epoch"], r["step"]) for r in read_rows(part)] == [("1", "3"), ("2", "6"), ("3", "9"), ("4", "12")]


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_rerun_resumes(events_h5, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, str(ROOT / "Pix2Pix_training.py"), "--data", str(events_h5), "--output-dir", str(out),
            "--epochs", "30", "--checkpoint-every", "0", "--validation-batches", "1", *TINY]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Event-driven: the signal goes in as soon as epoch 1 is in history.csv (the run is in its loop, far from its end).
    wait_for(proc, lambda: (out / "history.csv").exists(), "epoch 1's history.csv row")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Stopped at step" in err and "Traceback" not in err
    stopped = int(err.split("Stopped at step ")[1].split(";")[0])
    assert stopped >= 6 and (out / "checkpoints" / f"ckpt-{stopped}.index").exists()
    rerun = run_script("Pix2Pix_training.py", *args[2:-len(TINY)], "--epochs", 2 + stopped // 6, *TINY)
    assert rerun.returncode == 0, rerun.stderr
    assert f"step {stopped}" in rerun.stdout.split("Resuming from")[1].splitlines()[0]


def test_a_second_ctrl_c_in_validation_stops_at_once_and_saves_no_checkpoint(events_h5, tmp_path, monkeypatch):
    """The epoch is counted before its validation: a checkpoint saved there would give the resumed run no row,
    sample or best-model check of that epoch. The second signal (stop at once) saves none: the rerun starts over."""
    import os

    out = tmp_path / "run"
    validate = pt.validate_run

    def interrupted(run):
        os.kill(os.getpid(), signal.SIGINT)  # the first: stop after the current step
        os.kill(os.getpid(), signal.SIGINT)  # the second, at once
        return validate(run)

    args = ["--data", str(events_h5), "--output-dir", str(out), "--epochs", "2", "--checkpoint-every", "0",
            "--steps-per-epoch", "2", "--validation-batches", "1", *TINY]
    monkeypatch.setattr(pt, "validate_run", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            pt.main(args)
        assert not list((out / "checkpoints").glob("ckpt-*.index"))
        monkeypatch.setattr(pt, "validate_run", validate)
        assert pt.main(args) == 0
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    assert [r["epoch"] for r in read_rows(out)] == ["1", "2"]


def test_an_epoch_stopped_after_its_last_step_gets_a_row_of_nan_losses_and_speed_on_resume(events_h5, tmp_path,
                                                                                          monkeypatch):
    """No step of the epoch is left after the resume: its losses and images/s are unknown, not 0."""
    out = tmp_path / "run"
    args = ["--data", str(events_h5), "--output-dir", str(out), "--epochs", "2", "--checkpoint-every", "0",
            "--steps-per-epoch", "2", "--validation-batches", "1", *TINY]

    runs, real_set_up = [], pt.set_up

    def set_up(s):
        runs.append(real_set_up(s))
        return runs[-1]

    def stop_after_the_epochs_steps():  # in place of check_stop, which runs after every step
        if runs[-1].trainer.counters()[2] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(pt, "set_up", set_up)
    monkeypatch.setattr(pt, "check_stop", stop_after_the_epochs_steps)
    with pytest.raises(KeyboardInterrupt):
        pt.train(pt.parse_args(args))
    monkeypatch.undo()
    pt.train(pt.parse_args(args))
    rows = read_rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["gen_total"] == rows[0]["images_per_s"] == "nan" and float(rows[1]["images_per_s"]) > 0


# --- Distribution ---------------------------------------------------------------------------------
def test_two_logical_cpus_train_with_mirrored_strategy_in_bfloat16(events_h5, tmp_path):
    out = tmp_path / "run"
    proc = run_script("Pix2Pix_training.py", "--data", events_h5, "--output-dir", out, "--epochs", 1,
                      "--logical-cpus", 2, "--base-filters", 4, "--batch-size", 2, "--mixed-precision", "bfloat16",
                      "--validation-batches", 1, "--steps-per-epoch", 2, "--gan-weight", 1)
    assert proc.returncode == 0, proc.stderr
    assert "2 replica(s), bfloat16" in proc.stdout
    assert "2 steps of 4 per epoch" in proc.stdout  # global batch = 2 x 2 replicas
    with open(out / "history.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert int(row["step"]) == 2 and np.isfinite(float(row["gen_total"])) and np.isfinite(float(row["disc"]))
    model = keras.models.load_model(out / "generator_final.keras", compile=False)
    assert model.predict(np.zeros((1, 128, 128, 3), np.float32), verbose=0).dtype == np.float32
    # Resumed on one replica: its place in an epoch counts batches of 4, refused, nothing written.
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = run_script("Pix2Pix_training.py", "--data", events_h5, "--output-dir", out, "--epochs", 2,
                      "--logical-cpus", 1, "--base-filters", 4, "--batch-size", 2, "--mixed-precision", "bfloat16",
                      "--validation-batches", 1, "--steps-per-epoch", 2, "--gan-weight", 1)
    assert_one_line_error(proc, "trained on 2 replica(s), this one has 1")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_mixed_precision_auto_follows_the_machine():
    flags = open("/proc/cpuinfo").read()
    expected = ("float16" if tf.config.list_physical_devices("GPU") else
                "bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32")
    assert pt.choose_precision("auto") == expected and pt.choose_precision("float32") == "float32"


# --- Bad input --------------------------------------------------------------------------------------
def test_bad_inputs_give_one_line_errors(tiny_run, tmp_path):
    out, _ = tiny_run
    missing = run_script("Pix2Pix_training.py", "--data", tmp_path / "nope.h5", "--output-dir", tmp_path / "r",
                         *TINY)
    assert_one_line_error(missing, "nope.h5")
    assert not (tmp_path / "r" / "checkpoints").exists()
    before = sorted(p.name for p in out.rglob("*"))
    other = run_script("Pix2Pix_training.py", "--data", tmp_path / "nope.h5", "--output-dir", out, *TINY,
                       "--base-filters", 8)
    assert_one_line_error(other, "different architecture", "base_filters 4 there, 8 asked")
    assert sorted(p.name for p in out.rglob("*")) == before
    # A run with the GAN term resumed at today's default (--gan-weight 0, no discriminator) says how to resume it.
    saved = json.loads((out / "run_config.json").read_text())["architecture"]
    with pytest.raises(InputError, match="resume it with --gan-weight 1"):
        pt.check_output_dir(out, {**saved, "discriminator_patch_map": None})
    with pytest.raises(InputError) as other_width:
        pt.check_output_dir(out, {**saved, "base_filters": 8})
    assert "--gan-weight" not in str(other_width.value)


def test_bad_settings_and_foreign_folders_are_refused(tmp_path):
    with pytest.raises(InputError, match="--epochs"):
        pt.parse_args(["--epochs", "0"])
    with pytest.raises(InputError, match="--hit-weight"):
        pt.parse_args(["--hit-weight", "0"])
    with pytest.raises(InputError, match="--beta-1"):
        pt.parse_args(["--beta-1", "1"])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="no run_config.json"):
        pt.check_output_dir(foreign, wanted=None)
    pt.check_output_dir(tmp_path / "new", wanted=None)  # a new folder is fine


def test_discriminator_settings_without_the_gan_term_are_warned_about(capsys):
    pt.parse_args(["--disc-every", "2", "--label-smoothing", "0.1"])
    assert capsys.readouterr().err == ("warning: --disc-every, --label-smoothing: no effect without the GAN term "
                                       "(--gan-weight 0: no discriminator is built)\n")
    pt.parse_args(["--disc-every", "2", "--gan-weight", "1"])
    pt.parse_args([])
    assert capsys.readouterr().err == ""


def test_threshold_criterion_balanced_or_f1_on_a_known_output():
    # 20 track hits (2 of them uncertain, 0.28) and 5 noise hits (1 of them uncertain, 0.5).
    raw, truth, out = (np.zeros((1, 36, 112, 3), np.float32) for _ in range(3))
    raw[0, :20, 10] = truth[0, :20, 10] = 1.0
    out[0, :20, 10] = 0.7
    out[0, :2, 10] = 0.28
    raw[0, 30, 50:55] = 1.0
    out[0, 30, 50] = 0.5
    raw, truth, out = (ei.pad_event(a) for a in (raw, truth, out))
    dataset = [(tf.constant(raw), tf.constant(truth))]
    predict = lambda x: tf.constant(out)
    f1, _ = pm.validate(predict, dataset, criterion="f1")  # keep the uncertain ones: F1 40/41
    assert f1["threshold"] == 0.25 and f1["efficiency"] == 1 and f1["rejection"] == 0.8
    balanced, _ = pm.validate(predict, dataset, criterion="balanced")  # min(eff, rej) 0.9 > 0.8
    assert balanced["threshold"] == 0.5 and balanced["efficiency"] == 0.9 and balanced["rejection"] == 1


def test_threshold_criterion_tracks_keeps_the_tracks_and_then_leaves_the_fewest_fake_segments():
    # 10 events in 2 batches, each two tracks crossing all 36 layers (ids 1 and 2, the second at a
    # wire of its own per event) and a 4-layer background cluster in superlayer 1, a fake segment.
    # Output: tracks 0.9, the cluster 0.8; event 7's second track only 0.7 (lost above 0.7).
    raw, truth, out = (np.zeros((10, 36, 112, 3), np.float32) for _ in range(3))
    ids = np.zeros((10, 36, 112), np.uint8)
    for k in range(10):
        for track, wire in ((1, 20), (2, 60 + 3 * k)):
            raw[k, :, wire] = truth[k, :, wire] = 1.0
            out[k, :, wire] = 0.9 if (k, track) != (7, 2) else 0.7
            ids[k, :, wire] = track
        raw[k, 0:4, 40] = 1.0
        out[k, 0:4, 40] = 0.8
    raw, truth, out = (ei.pad_event(a) for a in (raw, truth, out))
    dataset = [(tf.constant(raw[:5]), tf.constant(truth[:5])), (tf.constant(raw[5:]), tf.constant(truth[5:]))]

    def chosen(tracks_kept, track_ids=ids):
        outputs = iter([out[:5], out[5:]])  # the output of each batch, in turn
        scores, _ = pm.validate(lambda x: tf.constant(next(outputs)), dataset, criterion="tracks",
                                track_ids=track_ids, tracks_kept=tracks_kept)
        return scores["threshold"], scores["tracks_kept"], scores["fake_segments_per_event"]

    # Up to 0.65 all 20 tracks and one fake segment per event; 0.70-0.75 19 of 20; 0.80-0.85 no fake segment.
    assert chosen(0.99) == (0.5, 1.0, 1.0)  # ties among 0.05-0.65: nearest 0.5
    assert chosen(0.9) == chosen(0.95) == (0.8, 0.95, 0.0)
    assert chosen(1.0) == (0.5, 1.0, 1.0)
    assert chosen(0.99, None) == (0.8, 1.0, 0.0)  # one track per event: the first track still makes it
    outputs = iter([out[:5], out[5:]])  # the training's validation passes the run's ids and --tracks-kept on
    trainer = types.SimpleNamespace(predict=lambda x: tf.constant(next(outputs)))
    fields = dict.fromkeys(f.name for f in dataclasses.fields(pt.Run))
    run = pt.Run(**{**fields, "s": settings("d.h5", "run", "--threshold-criterion", "tracks", "--tracks-kept", 0.9,
                                            "--validation-draws", 1),  # one output per batch here
                    "trainer": trainer, "validation": dataset, "validation_ids": ids})
    scores, _ = pt.validate_run(run)
    assert (scores["threshold"], scores["tracks_kept"], scores["fake_segments_per_event"]) == (0.8, 0.95, 0.0)
    tracked = lambda *rows: {t: {"kept_ge5": kept, "fake_segments_per_event": fakes} for t, kept, fakes in rows}
    assert pm.choose_for_tracking(tracked((0.4, 1.0, 1.0), (0.5, 0.95, 1.0)), 0.9) == 0.4  # as few: more tracks
    assert pm.choose_for_tracking(tracked((0.3, 0.9, 2.0), (0.6, 0.8, 1.0)), 0.99) == 0.3  # none keeps 99 %


def test_validation_background_validates_on_events_carrying_the_next_events_background():
    raw, truth = (ei.pad_event(a).astype(np.float32) / 255 for a in make_events.generate_events(16, seed=3))
    dataset = [(tf.constant(raw[:8]), tf.constant(truth[:8])), (tf.constant(raw[8:]), tf.constant(truth[8:]))]
    seen = []

    def keep_all(x):  # the model: every raw hit kept; what it was given recorded
        seen.append(np.asarray(x))
        return x

    three, _ = pm.validate(keep_all, dataset, criterion="tracks", background=3)
    hits, tracks = raw > 0, truth > 0
    for b, given in enumerate(seen):  # each event: its raw hits and the next two events' (in its batch) background
        own, background = hits[8 * b:8 * b + 8], (hits & ~tracks)[8 * b:8 * b + 8]
        np.testing.assert_array_equal(given > 0, own | np.roll(background, -1, axis=0) | np.roll(background, -2, 0))
    assert all((given > 0).sum() > 1.5 * hits[:8].sum() for given in seen)  # their tracks never, their background yes
    by_hand = [(tf.constant(given), tf.constant(truth[8 * b:8 * b + 8])) for b, given in enumerate(seen)]
    assert pm.validate(lambda x: x, by_hand, criterion="tracks")[0] == three  # the scores are those events'
    plain, _ = pm.validate(lambda x: x, dataset, criterion="tracks")
    assert three["fake_segments_per_event"] > plain["fake_segments_per_event"]
    trainer = types.SimpleNamespace(predict=lambda x: x)  # the training passes --validation-background on
    fields = dict.fromkeys(f.name for f in dataclasses.fields(pt.Run))
    run = pt.Run(**{**fields, "s": settings("d.h5", "run", "--threshold-criterion", "tracks",
                                            "--validation-background", 3),
                    "trainer": trainer, "validation": dataset, "validation_ids": None})
    assert pt.validate_run(run)[0] == three
    for bad in ("0", str(pt.BATCH_SIZE + 1)):
        with pytest.raises(InputError, match="--validation-background"):
            pt.parse_args(["--validation-background", bad])


def test_validation_draws_validate_each_event_under_other_events_background_and_count_them_all():
    raw, truth, ids = make_events.generate_events(16, seed=3, track_ids=True)
    raw, truth = (ei.pad_event(a).astype(np.float32) / 255 for a in (raw, truth))
    dataset = [(raw[:8], truth[:8]), (raw[8:], truth[8:])]
    seen = []

    def every_third_wire_lost(x):  # the model: drops the hits of every third wire; what it was given recorded
        seen.append(np.asarray(x))
        return x * (np.arange(x.shape[2]) % 3 != 0)[None, None, :, None]

    drawn, _ = pm.validate(every_third_wire_lost, dataset, criterion="tracks", track_ids=ids, background=3, draws=3)
    hits, tracks = raw > 0, truth > 0
    assert len(seen) == 6  # each batch under three backgrounds in turn: the next two events', the two after, ...
    for i, given in enumerate(seen):
        b, draw = divmod(i, 3)
        background = (hits & ~tracks)[8 * b:8 * b + 8]
        others = np.roll(background, -1 - 2 * draw, axis=0) | np.roll(background, -2 - 2 * draw, axis=0)
        np.testing.assert_array_equal(given > 0, hits[8 * b:8 * b + 8] | others)
    by_hand = [(np.concatenate(seen), np.concatenate([truth[8 * (i // 3):8 * (i // 3) + 8] for i in range(6)]))]
    by_hand_ids = np.concatenate([ids[8 * (i // 3):8 * (i // 3) + 8] for i in range(6)])  # one batch of 48 events
    again, _ = pm.validate(every_third_wire_lost, by_hand, criterion="tracks", track_ids=by_hand_ids)
    assert again == drawn  # every draw scored, each with its own events' track ids
    assert 0 < drawn["tracks_kept"] < 1 and drawn["fake_segments_per_event"] > 0  # both figures are tested
    one, _ = pm.validate(every_third_wire_lost, dataset, criterion="tracks", track_ids=ids, background=3)
    assert one != drawn
    for draw in range(4):  # a batch of 3 (the split's last): the others in turn, never the event's own background
        given = pm.with_more_background(raw[:3], truth[:3], 2, draw)
        np.testing.assert_array_equal(given > 0, hits[:3] | np.roll((hits & ~tracks)[:3], -1 - draw % 2, axis=0))
    run = pt.Run(**{**dict.fromkeys(f.name for f in dataclasses.fields(pt.Run)),
                    "s": settings("d.h5", "run", "--threshold-criterion", "tracks", "--validation-draws", 3,
                                  "--validation-background", 3, "--batch-size", 8),
                    "trainer": types.SimpleNamespace(predict=every_third_wire_lost), "validation": dataset,
                    "validation_ids": ids})
    assert pt.validate_run(run)[0] == drawn  # the training passes --validation-draws on
    with pytest.raises(InputError, match="--validation-draws must be at least 1, not 0"):
        pt.parse_args(["--validation-draws", "0"])
    for flags, draws in ((["--validation-background", "1"], 1),  # the event's own background: one way only
                         (["--validation-draws", pt.BATCH_SIZE // 2, "--validation-background", 3],
                          (pt.BATCH_SIZE - 1) // 2),  # 2 other events each: as many draws as a batch holds
                         (["--validation-draws", pt.BATCH_SIZE - 1, "--validation-background", 2], pt.BATCH_SIZE - 1),
                         (["--batch-size", 4], 3), ([], pt.VALIDATION_DRAWS)):
        assert pt.parse_args(list(map(str, flags))).validation_draws == draws, flags


def test_threshold_criterion_tracks_reads_the_validation_track_ids_in_the_datasets_order(tmp_path):
    path = tmp_path / "ids.h5"
    raw, truth, ids = make_events.generate_events(48, seed=4, track_ids=True)
    with h5py.File(path, "w") as f:
        for name, data in (("raw", ei.pad_event(raw)), ("truth", ei.pad_event(truth))):
            f.create_dataset(name, data=data, chunks=(8, 128, 128, 3))
        f.create_dataset("track_ids", data=ids)
    s = settings(path, tmp_path / "run", "--threshold-criterion", "tracks", "--tracks-kept", 0.95)
    split, _, validation, validation_ids = pt.load_data(s, replicas=1)
    truths = np.concatenate([ei.hit_mask(ei.crop_event(t.numpy()), ei.SCALED_HIT_THRESHOLD) for _, t in validation])
    assert len(truths) == len(split["validation"]) == len(validation_ids) == 9
    np.testing.assert_array_equal(validation_ids > 0, truths)  # the ids lie on the same events' truth hits
    assert not np.array_equal(validation_ids, ids[:9])
    balanced = settings(path, tmp_path / "run", "--threshold-criterion", "balanced")
    assert pt.load_data(balanced, replicas=1)[3] is None  # only read for "tracks"
    trained = settings(path, tmp_path / "run", "--threshold-criterion", "tracks", "--tracks-kept", 0.95, "--epochs", 1,
                       "--steps-per-epoch", 2, "--validation-background", 2)
    assert 1 < trained.validation_draws < pt.VALIDATION_DRAWS  # the default's 8, cut to what the tiny batches hold
    pt.train(trained)
    final = json.loads((tmp_path / "run" / "generator_final.json").read_text())
    model = keras.models.load_model(tmp_path / "run" / "generator_final.keras", compile=False)
    again, _ = pm.validate(lambda x: model(x, training=False), validation, criterion="tracks", track_ids=validation_ids,
                           tracks_kept=0.95, background=2, draws=trained.validation_draws)  # the exported weights
    assert final["threshold"] == again["threshold"] in ei.SWEEP_THRESHOLDS
    assert final["validation"]["tracks_kept"] == pytest.approx(again["tracks_kept"])
    assert final["validation"]["fake_segments_per_event"] == pytest.approx(again["fake_segments_per_event"])
    proc = run_script("Pix2Pix_denoise.py", "--model", tmp_path / "run" / "generator_final.keras", "--data", path,
                      "--output", tmp_path / "denoised.h5")
    assert proc.returncode == 0, proc.stderr
    chosen = (f"threshold {final['threshold']:.3f}, from validation (criterion tracks, 2 events' background in "
              f"{trained.validation_draws} draws)")
    assert chosen in proc.stdout
    with pytest.raises(InputError, match="--tracks-kept"):
        pt.parse_args(["--tracks-kept", "0"])


def test_under_the_tracks_criterion_generator_best_is_the_epoch_tracking_would_want(events_h5, tmp_path, monkeypatch,
                                                                                     capsys):
    """Each epoch's real validation, its tracking figures replaced by known ones: epoch 2 keeps 99 % of the tracks
    with the fewest fake segments, epoch 3 has the best F1 but loses tracks, epoch 1 keeps them with more fakes."""
    known = {1: (0.998, 0.012, 0.8), 2: (0.993, 0.002, 0.7), 3: (0.95, 0.0, 0.9)}  # tracks kept, fakes, F1
    real_validate_run = pt.validate_run

    def validate_run(run):
        scores, first = real_validate_run(run)
        kept, fakes, f1 = known[int(run.trainer.counters()[1])]
        return {**scores, "tracks_kept": kept, "fake_segments_per_event": fakes, "f1": f1}, first

    monkeypatch.setattr(pt, "validate_run", validate_run)
    out = tmp_path / "run"
    pt.train(settings(events_h5, out, "--epochs", 3, "--steps-per-epoch", 1, "--validation-batches", 1,
                      "--threshold-criterion", "tracks"))
    rows = read_rows(out)
    assert [(float(r["tracks_kept"]), float(r["fake_segments_per_event"])) for r in rows] == [k[:2] for k in
                                                                                             known.values()]
    best = json.loads((out / "generator_best.json").read_text())
    assert best["epoch"] == 2 and best["validation"]["fake_segments_per_event"] == 0.002
    done = capsys.readouterr().out.splitlines()[-1]  # the closing line names that epoch and its figures
    assert done.startswith("Done: 3 epochs") and (f"best epoch 2 (threshold {best['threshold']:.2f}: F1 0.700, "
                                                  "tracks kept 0.9930, fake segments/event 0.0020)") in done
    # The rank itself: meeting --tracks-kept first, then fewer fake segments, more tracks, F1; rows read back as text.
    rank = lambda kept, fakes, f1="0.9": epoch_rank({"tracks_kept": kept, "fake_segments_per_event": fakes, "f1": f1},
                                                    "tracks", 0.99)
    assert rank("0.99", "0.01") > rank("0.999", "0.02") > rank("0.98", "0.0") > rank("0.97", "0.0")
    assert rank("0.995", "0.01", "0.95") > rank("0.99", "0.01", "0.99") > rank("0.99", "0.01", "0.98")
    assert rank("", "") < rank("0.5", "1.0")  # a row without them (an older history) ranks last
    assert epoch_rank({"f1": "0.7", "tracks_kept": "0.999"}, "balanced", 0.99) == (0.7,)  # other criteria: F1


def test_a_run_whose_losses_become_non_finite_stops_with_one_line_and_exports_nothing(events_h5, tmp_path):
    out = tmp_path / "diverged"
    proc = run_script("Pix2Pix_training.py", "--data", events_h5, "--output-dir", out, "--epochs", 1,
                      "--steps-per-epoch", 4, "--generator-lr", "1e30", "--discriminator-lr", "1e30", *TINY)
    assert_one_line_error(proc, "step", "not finite")
    assert not list(out.glob("generator_*")) and not list((out / "checkpoints").glob("ckpt-*"))


def test_sidecar_json_is_strict_even_with_nan_scores(tmp_path):
    from training_files import write_json

    write_json(tmp_path / "x.json", {"f1": float("nan"), "scores": [np.float32(0.5), np.inf]})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"f1": None, "scores": [0.5, None]}


# --- The GAN term's levers, one step each (issue 11) ------------------------------------------------
def one_batch(seed=5):
    raw, truth = make_events.generate_events(4, seed=seed)
    return tuple(tf.constant(ei.pad_event(a).astype(np.float32) / 255) for a in (raw, truth))


def trainer_with(tmp_path, *extra):
    keras.utils.set_random_seed(1)
    return pt.Trainer(settings(tmp_path / "x.h5", tmp_path / "run", *extra), tf.distribute.get_strategy(), "float32")


def values(variables):
    return [np.array(v) for v in variables]


def test_the_training_batch_is_the_measured_16_unless_set(tmp_path):
    plain = pt.parse_args(["--data", str(tmp_path / "x.h5"), "--output-dir", str(tmp_path / "run"),
                           "--base-filters", "4"])
    trainer = pt.Trainer(plain, tf.distribute.get_strategy(), "float32")
    assert trainer.global_batch == pm.BATCH_SIZE == 16  # twice 32's steps per epoch: better (README's lever table)
    assert trainer_with(tmp_path, "--batch-size", 32).global_batch == 32


def test_gan_weight_zero_is_a_plain_unet_without_a_discriminator(tmp_path):
    trainer = trainer_with(tmp_path, "--gan-weight", 0)
    assert trainer.discriminator is None and trainer.disc_opt is None
    saved = {k.split("/")[0] for k, _ in tf.train.list_variables(trainer.checkpoint.write(str(tmp_path / "c" / "c")))}
    assert "generator" in saved and not any(k.startswith("discriminator") for k in saved)
    before = values(trainer.generator.trainable_variables)
    total, gan, l1, disc = (float(v) for v in trainer.step_batch(one_batch()))
    assert gan == 0 and disc == 0 and total == pytest.approx(100 * l1, rel=1e-6)
    assert any(not np.array_equal(a, b) for a, b in zip(before, values(trainer.generator.trainable_variables),
                                                         strict=True))
    assert trainer.disc_steps(7) == 0 and int(trainer.gen_opt.iterations.numpy()) == 1
    assert pt.architecture(trainer)["discriminator_patch_map"] is None


def test_disc_every_steps_the_discriminator_only_every_k_generator_steps(tmp_path):
    trainer = trainer_with(tmp_path, "--disc-every", 2)
    batch = one_batch()
    d0 = values(trainer.discriminator.trainable_variables)
    trainer.step_batch(batch)  # step 0: both
    d1 = values(trainer.discriminator.trainable_variables)
    assert any(not np.array_equal(a, b) for a, b in zip(d0, d1, strict=True))
    g1 = values(trainer.generator.trainable_variables)
    trainer.step_batch(batch)  # step 1: the generator only
    for a, b in zip(d1, values(trainer.discriminator.trainable_variables), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(g1, values(trainer.generator.trainable_variables),
                                                         strict=True))
    assert int(trainer.gen_opt.iterations.numpy()) == 2 and int(trainer.disc_opt.iterations.numpy()) == 1
    trainer.step_batch(batch)  # step 2: both again
    assert int(trainer.disc_opt.iterations.numpy()) == 2 == trainer.disc_steps(3)
    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert trainer.generator_step.experimental_get_tracing_count() == 1


def test_label_smoothing_lowers_the_real_label_and_warmup_ramps_the_gan_weight(tmp_path):
    logits = np.zeros((2, 14, 14, 1), np.float32)
    plain = float(pm.discriminator_loss(logits + 3, logits, 2))
    smooth = float(pm.discriminator_loss(logits + 3, logits, 2, real_label=0.9))
    softplus = lambda x: np.log1p(np.exp(x))  # BCE of logit x against label z: softplus(x) - z x
    assert plain == pytest.approx(softplus(3) - 3 + softplus(0), rel=1e-5)
    assert smooth == pytest.approx(softplus(3) - 0.9 * 3 + softplus(0), rel=1e-5)
    batch = one_batch()
    plain_losses = [float(v) for v in trainer_with(tmp_path, "--label-smoothing", 0).step_batch(batch)]
    smooth_losses = [float(v) for v in trainer_with(tmp_path, "--label-smoothing", 0.2).step_batch(batch)]
    assert plain_losses[2] == pytest.approx(smooth_losses[2], rel=1e-5)  # the same generator, the same step
    assert plain_losses[3] != smooth_losses[3]  # only the discriminator's real label differs
    trainer = trainer_with(tmp_path, "--gan-warmup", 2, "--gan-weight", 3)
    scales = []
    for epoch in (0, 1, 2, 5):
        trainer.set_epoch(epoch)
        scales.append(float(trainer.gan_scale.numpy()))
    assert scales == [0.0, 1.5, 3.0, 3.0]
    trainer.set_epoch(0)
    total, gan, l1, _ = (float(v) for v in trainer.step_batch(batch))
    assert gan > 0 and total == pytest.approx(100 * l1, rel=1e-6)  # weight 0 in the first warm-up epoch


def test_ema_of_the_generator_moves_by_the_decay_rule_and_is_what_validation_sees(tmp_path):
    trainer = trainer_with(tmp_path, "--ema-decay", 0.9)
    floats = lambda m: [np.array(v) for v in m.variables if "float" in str(v.dtype)]
    ema0 = floats(trainer.ema_generator)
    for a, b in zip(ema0, floats(trainer.generator), strict=True):
        np.testing.assert_array_equal(a, b)
    trainer.step_batch(one_batch())
    for e0, e1, w in zip(ema0, floats(trainer.ema_generator), floats(trainer.generator), strict=True):
        np.testing.assert_allclose(e1, 0.9 * e0 + 0.1 * w, rtol=1e-5, atol=1e-7)
    raw = one_batch()[0]
    ema_out = pm.with_raw_hit_gate(trainer.ema_generator)(raw, training=False)
    np.testing.assert_allclose(trainer.predict(raw), ema_out, atol=1e-6)
    assert "ema_generator" in {k.split("/")[0] for k, _ in tf.train.list_variables(
        trainer.checkpoint.write(str(tmp_path / "c" / "ckpt")))}


def test_dropout_sets_the_decoders_rate_and_zero_makes_a_training_step_deterministic(tmp_path):
    raw = one_batch()[0]
    for extra, rate in (((), pt.DROPOUT), (("--dropout", 0.25), 0.25), (("--dropout", 0), None)):
        generator = trainer_with(tmp_path, *extra).generator
        rates = [layer.rate for block in generator.layers if isinstance(block, keras.Sequential)
                 for layer in block.layers if isinstance(layer, keras.layers.Dropout)]
        assert rates == ([] if rate is None else [rate] * 3)
        twice = [np.array(generator(raw, training=True)) for _ in range(2)]
        assert np.array_equal(*twice) == (rate is None)  # dropout draws new masks at every training call
    assert pt.DROPOUT == 0.5  # the paper's, the default


def test_lever_settings_out_of_range_are_refused(tmp_path):
    for bad in (["--disc-every", "0"], ["--ema-decay", "1"], ["--dropout", "1"], ["--dropout", "-0.1"],
                ["--label-smoothing", "0.5"], ["--gan-weight", "-1"],
                ["--gan-warmup", "-1"], ["--collapse-drop", "-0.1"]):
        with pytest.raises(InputError, match=re.escape(bad[0])):  # the message names the flag
            settings(tmp_path / "x.h5", tmp_path / "run", *bad)


# --- The collapse flag and the sidecar's stability (issue 11) ----------------------------------------
def test_collapse_flag_on_a_hand_made_history(capsys):
    from training_files import mark_collapses, run_stability
    f1s = [0.5, 0.9, 0.85, 0.79, 0.95, 0.0, "nan", 0.94, 0.96]
    rows = mark_collapses([{"epoch": str(i + 1), "f1": str(f)} for i, f in enumerate(f1s)], drop=0.1)
    assert [r["collapse"] for r in rows] == [0, 0, 0, 1, 0, 1, 1, 0, 0]  # 0.79 < 0.9 - 0.1; nan counts as 0
    stab = run_stability(rows, epoch=5)  # the best epoch (0.95) against the median of epochs 5-9
    assert stab["recent_epochs"] == [5, 6, 7, 8, 9] and stab["recent_median_f1"] == pytest.approx(0.94)
    assert stab["f1_minus_recent_median"] == pytest.approx(0.01)
    row = {"epoch": 4, "step": 8, "gen_total": 1, "gen_gan": 0.1, "gen_l1": 0.01, "disc": 1.3, "val_l1": 0.01,
           "threshold": 0.5, "efficiency": 0.7, "rejection": 0.9, "purity": 0.8, "f1": 0.79, "disc_winning": 0,
           "collapse": 1}
    pt.report_epoch(settings("x.h5", "run"), row, 1.0)
    out = capsys.readouterr().out
    assert "collapse: validation F1 0.790 fell more than 0.1 below the best" in out
    assert "G 1.0000 (GAN 0.100, BCE 0.01000) D 1.300 | " in out  # the line names the pixel loss it trains with
    pt.report_epoch(settings("x.h5", "run", "--pixel-loss", "l1", "--gan-weight", "0"), row, 1.0)
    assert "G 1.0000 (L1 0.01000; no discriminator: --gan-weight 0) | " in capsys.readouterr().out  # no "D nan"


def test_a_resumed_epoch_replaces_its_row_and_those_after_it(tmp_path):
    from training_files import append_history, read_history
    path = tmp_path / "history.csv"
    for epoch in (1, 2, 3):  # a run stopped during epoch 4, resumed from its checkpoint of epoch 1's end
        append_history(path, {"epoch": epoch, "f1": 0.5 + epoch / 10})
    append_history(path, {"epoch": 2, "f1": 0.9})
    assert [(r["epoch"], r["f1"]) for r in read_history(path)] == [("1", "0.6"), ("2", "0.9")]


def test_a_plain_unet_run_writes_the_collapse_column_and_the_stability(events_h5, tmp_path):
    out = tmp_path / "run"
    s = settings(events_h5, out, "--gan-weight", 0, "--ema-decay", 0.5, "--epochs", 2, "--steps-per-epoch", 2,
                 "--validation-batches", 1)
    pt.train(s)
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["collapse"] for r in rows] in (["0", "0"], ["0", "1"]) and all(r["disc"] == "nan" for r in rows)
    assert all(r["disc_winning"] == "0" for r in rows)
    for stem in ("generator_best", "generator_final"):
        side = json.loads((out / f"{stem}.json").read_text())
        assert side["stability"]["recent_epochs"] == [1, 2] and "f1_minus_recent_median" in side["stability"]
    assert json.loads((out / "run_config.json").read_text())["architecture"]["discriminator_patch_map"] is None


def test_cosine_lr_decay_scales_each_epochs_learning_rates_and_steps(tmp_path):
    trainer = trainer_with(tmp_path, "--lr-decay", "cosine", "--epochs", 4, "--gan-weight", 1,
                           "--generator-lr", 2e-3, "--discriminator-lr", 1e-3)
    rates = []
    for epoch in range(4):
        trainer.set_epoch(epoch)
        rates.append((float(trainer.gen_opt.learning_rate.numpy()), float(trainer.disc_opt.learning_rate.numpy())))
    cosine = [0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)]  # 1, 0.854, 0.5, 0.146
    np.testing.assert_allclose(rates, [(2e-3 * c, 1e-3 * c) for c in cosine], rtol=1e-6)
    # Adam's first step moves each weight by about the learning rate: at epoch 2 (factor 0.5) half as far.
    moved = []
    for decay, epoch in (("none", 2), ("cosine", 2)):
        trainer = trainer_with(tmp_path, "--lr-decay", decay, "--epochs", 4)
        before = values(trainer.generator.trainable_variables)
        trainer.set_epoch(epoch)
        trainer.step_batch(one_batch())
        after = values(trainer.generator.trainable_variables)
        moved.append(np.median(np.concatenate([np.abs(a - b).ravel() for a, b in zip(after, before, strict=True)])))
    assert moved[1] / moved[0] == pytest.approx(0.5, rel=0.05)


def test_pixel_loss_bce_is_the_hit_weighted_cross_entropy_and_the_trainer_uses_it(tmp_path):
    rng = np.random.default_rng(2)
    target = (rng.random((3, 128, 128, 3)) < 0.01).astype(np.float32)
    raw = np.maximum(target, (rng.random((3, 128, 128, 3)) < 0.01).astype(np.float32))
    output = rng.uniform(0.01, 0.99, (3, 128, 128, 3)).astype(np.float32)
    _, _, bce = pm.generator_loss(None, output, target, 3, hit_weight=10, raw=raw, pixel_loss="bce")
    weights = np.where(raw.max(-1, keepdims=True) > 0.5, 10.0, 1.0)
    expected = -(target * np.log(output) + (1 - target) * np.log(1 - output))
    assert float(bce) == pytest.approx(float(np.mean(weights * expected)), rel=1e-5)
    # A fresh generator outputs ~0.5 everywhere: its cross-entropy is log 2 per pixel, its L1 0.5.
    first = {}
    for loss in ("l1", "bce"):
        trainer = trainer_with(tmp_path, "--pixel-loss", loss)
        first[loss] = float(trainer.step_batch(one_batch())[2])
    assert first["bce"] / first["l1"] == pytest.approx(2 * np.log(2), rel=0.02)


def first_training_batch(events_h5, tmp_path, *extra):
    """The first (raw, truth) batch of 4 that epoch_batches serves for epoch 1 with these flags."""
    import types

    s = settings(events_h5, tmp_path / "run", *extra)
    trainer = types.SimpleNamespace(global_batch=4, strategy=tf.distribute.get_strategy())
    run = types.SimpleNamespace(s=s, trainer=trainer, split=dm.load_split(str(events_h5)), steps_per_epoch=2,
                                multi_worker=False, train_memory={})
    return [np.asarray(a) for a in next(iter(pt.epoch_batches(run, 1, 0)))]


def test_noise_augment_adds_noise_hits_on_the_events_cells_to_the_training_batches_only(events_h5, tmp_path):
    raw, truth = one_batch()
    seed = tf.constant([7, 0], tf.int64)
    noisy, same_truth = (np.asarray(a) for a in ptr.with_noise_hits(raw, truth, 0.2, seed))
    np.testing.assert_array_equal(same_truth, truth)
    hit, noisy_hit = np.asarray(raw).max(-1) > 0.5, noisy.max(-1) > 0.5
    added = noisy_hit & ~hit
    assert (noisy_hit >= hit).all() and (noisy >= np.asarray(raw)).all()
    assert not added[:, ptr.EVENT_CELLS[..., 0] == 0].any()  # never on the layout's padding
    fractions = added.sum(axis=(1, 2)) / (ei.LAYERS * ei.WIRES)
    assert fractions.max() < 0.2 * 1.1 and len(set(np.round(fractions, 3))) == len(fractions)  # 0..0.2, per event
    np.testing.assert_array_equal(ptr.with_noise_hits(raw, truth, 0.2, seed)[0], noisy)  # seeded
    assert not np.array_equal(ptr.with_noise_hits(raw, truth, 0.2, seed + 2)[0], noisy)
    # The training pipeline: the same batches with noise added to the raw images, the truth as it was.
    def first_batch(*extra):
        return first_training_batch(events_h5, tmp_path, *extra)

    plain_raw, plain_truth = first_batch("--noise-augment", 0)
    aug_raw, aug_truth = first_batch("--noise-augment", 0.1)
    assert pt.NOISE_AUGMENT > 0  # on by default
    np.testing.assert_array_equal(first_batch()[0], first_batch("--noise-augment", pt.NOISE_AUGMENT)[0])
    np.testing.assert_array_equal(aug_truth, plain_truth)
    assert (aug_raw >= plain_raw).all() and (aug_raw > plain_raw).any()


def first_batches_off_and_on(events_h5, tmp_path, flag):
    """The first training batch (raw, truth) with every extra-hits lever off (some are on by default), then with
    flag on (0.99); checks that 1 is refused."""
    levers_off = ("--noise-augment", 0, "--beside-augment", 0, "--mix-tracks", 0, "--mix-background", 0,
                  "--bend-augment", 0)

    def first_batch(*extra):
        return first_training_batch(events_h5, tmp_path, *levers_off, *extra)

    with pytest.raises(InputError, match=flag):
        pt.parse_args(["--data", str(events_h5), flag, "1"])
    return first_batch(), first_batch(flag, 0.99)


def assert_on_a_seeded_share_of_the_events(augment, raw, truth, seed):
    """augment(raw, truth, 0.5, seed) changes about half of the events, leaves the others as they were, and
    gives the same images for the same seed and others for another."""
    half = [np.asarray(a) for a in augment(raw, truth, 0.5, seed)]
    changed = ((half[0] != np.asarray(raw)) | (half[1] != np.asarray(truth))).any(axis=(1, 2, 3))
    assert 0.25 < changed.mean() < 0.75
    np.testing.assert_array_equal(half[0][~changed], np.asarray(raw)[~changed])
    np.testing.assert_array_equal(half[1][~changed], np.asarray(truth)[~changed])
    np.testing.assert_array_equal(np.stack(augment(raw, truth, 0.5, seed)), np.stack(half))
    assert not np.array_equal(np.stack(augment(raw, truth, 0.5, seed + 2)), np.stack(half))


def test_beside_augment_copies_one_superlayers_track_hits_a_few_wires_aside_into_the_raw_only(events_h5, tmp_path):
    events = make_events.generate_events(64, seed=3)
    raw, truth = (tf.constant(ei.pad_event(a).astype(np.float32) / 255) for a in events)
    seed = tf.constant([7, 0], tf.int64)
    out, same_truth = (np.asarray(a) for a in ptr.with_beside_segments(raw, truth, 1.0, seed))
    np.testing.assert_array_equal(same_truth, truth)
    before, after, track = (ei.crop_event(np.asarray(a)).max(-1) > 0.5 for a in (raw, out, truth))
    assert (after >= before).all()  # nothing taken away
    added = after & ~before
    for e in range(len(added)):
        rows = np.flatnonzero(added[e].any(-1))
        superlayers = set(rows // ei.LAYERS_PER_SUPERLAYER)
        assert len(superlayers) == 1, superlayers  # one superlayer per event
        s = superlayers.pop()
        signs = set()
        for layer in range(6 * s, 6 * s + 6):  # each layer: its track hits moved d wires, 1 <= |d| <= 6
            fits = [d for d in range(-pm.BESIDE_WIRES - 1, pm.BESIDE_WIRES + 2) if d and np.array_equal(
                added[e, layer], np.roll(track[e, layer], d) & ~before[e, layer] & (np.arange(ei.WIRES) >= d)
                & (np.arange(ei.WIRES) < ei.WIRES + d))]
            assert fits or not added[e, layer].any(), (e, layer)
            signs |= {np.sign(d) for d in fits if track[e, layer].any() and added[e, layer].any()}
        assert len(signs) <= 1  # the whole segment on one side of the track
    assert added.any(axis=(1, 2)).mean() > 0.9  # every event unless its copy fell on hits already there
    half = ei.crop_event(np.asarray(ptr.with_beside_segments(raw, truth, 0.5, seed)[0])).max(-1) > 0.5
    assert 0.25 < (half & ~before).any(axis=(1, 2)).mean() < 0.75  # the share of events given one
    np.testing.assert_array_equal(np.asarray(ptr.with_beside_segments(raw, truth, 0.0, seed)[0]), np.asarray(raw))
    np.testing.assert_array_equal(ptr.with_beside_segments(raw, truth, 1.0, seed)[0], out)  # seeded
    assert not np.array_equal(ptr.with_beside_segments(raw, truth, 1.0, seed + 2)[0], out)
    # The training pipeline: on, the same batches with hits added to the raw images only.
    (plain_raw, plain_truth), (aug_raw, aug_truth) = first_batches_off_and_on(events_h5, tmp_path, "--beside-augment")
    np.testing.assert_array_equal(aug_truth, plain_truth)
    assert (aug_raw >= plain_raw).all() and (aug_raw > plain_raw).any()


def test_mix_tracks_adds_the_previous_events_track_hits_to_raw_and_truth_on_a_share_of_the_events(events_h5, tmp_path):
    events = make_events.generate_events(64, seed=3)
    raw, truth = (tf.constant(ei.pad_event(a).astype(np.float32) / 255) for a in events)
    seed = tf.constant([7, 0], tf.int64)
    mixed_raw, mixed_truth = (np.asarray(a) for a in ptr.with_mixed_tracks(raw, truth, 1.0, seed))
    previous = np.roll(np.asarray(truth), 1, axis=0)  # event i gets event i-1's tracks (event 0 the last one's)
    np.testing.assert_array_equal(mixed_truth, np.maximum(truth, previous))
    np.testing.assert_array_equal(mixed_raw, np.maximum(raw, previous))
    assert (mixed_truth > np.asarray(truth)).any(axis=(1, 2, 3)).mean() > 0.9  # new track hits in nearly every event
    assert_on_a_seeded_share_of_the_events(ptr.with_mixed_tracks, raw, truth, seed)
    # The training pipeline: on, the same batches with track hits added to raw and truth alike.
    (plain_raw, plain_truth), (aug_raw, aug_truth) = first_batches_off_and_on(events_h5, tmp_path, "--mix-tracks")
    assert (aug_truth >= plain_truth).all() and (aug_truth > plain_truth).any()
    np.testing.assert_array_equal(aug_raw, np.maximum(plain_raw, aug_truth))  # every added track hit is in the raw


def test_mix_background_adds_the_next_events_background_hits_to_the_raw_image_on_a_share_of_the_events(events_h5,
                                                                                                       tmp_path):
    events = make_events.generate_events(64, seed=3)
    raw, truth = (tf.constant(ei.pad_event(a).astype(np.float32) / 255) for a in events)
    seed = tf.constant([7, 0], tf.int64)
    mixed_raw, mixed_truth = (np.asarray(a) for a in ptr.with_mixed_background(raw, truth, 1.0, seed))
    r, t = np.asarray(raw) > 0, np.asarray(truth) > 0
    following = np.roll(r & ~t, -1, axis=0)  # event i gets event i+1's background (the last event the first's)
    np.testing.assert_array_equal(mixed_truth, np.asarray(truth))  # the truth never changes
    np.testing.assert_array_equal(mixed_raw > 0, r | following)
    assert not (mixed_raw > 0)[np.roll(t & ~r, -1, axis=0) & ~r].any()  # the next event's track hits are not added
    assert (following & ~r).any(axis=(1, 2, 3)).mean() > 0.9  # new background hits in nearly every event
    assert_on_a_seeded_share_of_the_events(ptr.with_mixed_background, raw, truth, seed)
    # The training pipeline: on, the same batches with hits added to the raw images only.
    (plain_raw, plain_truth), (aug_raw, aug_truth) = first_batches_off_and_on(events_h5, tmp_path, "--mix-background")
    np.testing.assert_array_equal(aug_truth, plain_truth)
    assert (aug_raw >= plain_raw).all() and (aug_raw > plain_raw).any()


def test_bend_augment_moves_each_layers_hits_by_a_drawn_tilt_and_bend_in_raw_and_truth_alike(events_h5, tmp_path):
    # A hand-made event: an upright track on wire 50 of every layer, noise hits on wires 10 and 111 of the last.
    raw, truth = np.zeros((2, ei.LAYERS, ei.WIRES, 3), np.float32), np.zeros((2, ei.LAYERS, ei.WIRES, 3), np.float32)
    raw[:, :, 50] = truth[:, :, 50] = 1.0
    raw[:, -1, [10, 111]] = 1.0
    raw, truth = (tf.constant(ei.pad_event(a)) for a in (raw, truth))
    # u = (on, tilt, bend): event 0 tilted by half the most (at the last layer; as much the other way at the
    # first), event 1 bent by half the most.
    u = tf.constant([[0.0, 0.75, 0.5], [0.0, 0.5, 0.75]])
    out_raw, out_truth = (ei.crop_event(np.asarray(a)).max(-1) > 0.5 for a in pm.bent_events(raw, truth, u, 1.0))
    t = np.linspace(-1, 1, ei.LAYERS)
    tilt, bend = pm.BEND_TILT_WIRES / 2, pm.BEND_CURVE_WIRES / 2
    assert round(tilt) > 1 and round(bend) > 1  # moves that the checks below can see
    for e, shift in enumerate((np.round(tilt * t), np.round(bend * t * t))):
        wires = [np.flatnonzero(out_truth[e, layer]).tolist() for layer in range(ei.LAYERS)]
        assert wires == [[50 + int(d)] for d in shift], (e, wires)
    assert (out_raw >= out_truth).all() and (out_raw[:, :-1] == out_truth[:, :-1]).all()  # noise: the last layer
    # The noise hits move with their layer; the one moved off the 112 wires is dropped.
    last_layer = [np.flatnonzero(out_raw[e, -1]).tolist() for e in (0, 1)]
    assert last_layer == [[10 + round(m), 50 + round(m)] for m in (tilt, bend)]
    # Off (share 0 or the event's draw above the share): the event unchanged.
    for share, u_on in ((0.0, 0.0), (0.5, 0.6)):
        same = pm.bent_events(raw, truth, tf.constant([[u_on, 0.75, 0.75]] * 2), share)
        np.testing.assert_array_equal(np.asarray(same[0]), np.asarray(raw))
        np.testing.assert_array_equal(np.asarray(same[1]), np.asarray(truth))
    # Simulated events through the trainer's random numbers: on about half, seeded, the truth moving with the raw.
    events = make_events.generate_events(64, seed=3)
    raw, truth = (tf.constant(ei.pad_event(a).astype(np.float32) / 255) for a in events)
    seed = tf.constant([7, 0], tf.int64)
    assert_on_a_seeded_share_of_the_events(ptr.with_bent_events, raw, truth, seed)
    bent_raw, bent_truth = (np.asarray(a) for a in ptr.with_bent_events(raw, truth, 1.0, seed))
    assert (bent_raw >= bent_truth).all() and (bent_raw * (1 - pm.EVENT_CELLS) == 0).all()
    # The training pipeline: on, other batches, every truth hit still a raw hit.
    (plain_raw, plain_truth), (aug_raw, aug_truth) = first_batches_off_and_on(events_h5, tmp_path, "--bend-augment")
    assert not np.array_equal(aug_truth, plain_truth)
    assert (aug_raw >= aug_truth).all()


def test_mirror_average_validates_and_saves_an_answer_alike_for_an_event_and_its_mirror(events_h5, tmp_path):
    """--mirror-average: what validation scores answers an event and its mirror alike (the plain model does
    not), and the saved model is loaded to answer so."""
    raw = one_batch()[0] * pm.MIRROR_TABLES[ei.PADDED_SIZE][1]  # hits that have a mirror: mirroring twice restores them
    valid = pm.MIRROR_TABLES[ei.PADDED_SIZE][1] & (np.asarray(raw) > 0.5)
    gaps = {}
    for extra in ((), ("--mirror-average",)):
        predict = trainer_with(tmp_path, "--gan-weight", 0, *extra).predict
        direct, of_mirror = np.asarray(predict(raw)), np.asarray(predict(pm.mirrored(raw)))
        gaps[extra] = np.abs(np.asarray(pm.mirrored(of_mirror)) - direct)[valid].max()
    assert gaps[("--mirror-average",)] < 1e-5 < gaps[()]
    out = tmp_path / "run"
    pt.train(settings(events_h5, out, "--epochs", 1, "--steps-per-epoch", 1, "--validation-batches", 1,
                      "--mirror-average"))
    model, info = trained_model.load_model(out)
    assert info["settings"]["mirror_average"] and model.views == {"mirror": True, "shift": 0}
    assert "output mirror-averaged" in trained_model.threshold_origin(None, info)
    assert trained_model.threshold_origin(0.3, info) == ", output mirror-averaged"  # a given threshold: still so run


def moved_wires(images, wires):
    """images (B, 128, 128, C) with the event's wires moved `wires` columns (numpy, for the tests: what moves
    off the event's 112 wires is dropped)."""
    on_wires = np.zeros(images.shape[2], bool)
    on_wires[ei.WIRE_COLUMNS] = True
    return np.roll(np.asarray(images) * on_wires[:, None], wires, axis=2) * on_wires[:, None]


def test_view_averaged_takes_each_cells_answers_from_every_view_that_shows_it():
    """pix2pix_model.view_averaged with an answer that depends on where a cell lies: each event cell's output
    is the mean of its own answer, its mirror's answer (a cell with a mirror) and the answer of the cell K
    wires on (a cell whose moved place is on the wires); the 36-layer event and the 128x128 layout agree."""
    place = (np.arange(128)[:, None] * 1000 + np.arange(128)[None, :]).astype(np.float32)[None, :, :, None]
    predict = lambda x: np.asarray(x) * 0 + place[:, :x.shape[1], :x.shape[2]]  # noqa: E731 (answer: the cell's place)
    images = np.ones((1, 128, 128, 1), np.float32)
    row, wire = ei.LAYER_ROWS[1], np.arange(ei.WIRES)  # layer 1: odd, its wire 111 has no mirror
    mirror = np.where(ei.MIRROR_WIRE[1] >= 0, ei.MIRROR_WIRE[1], wire)
    for views, want in (({"shift": 3}, np.where(wire + 3 < ei.WIRES, wire + 1.5, wire)),
                        ({"shift": -2}, np.where(wire >= 2, wire - 1, wire)),
                        ({"mirror": True, "shift": 3},
                         (wire + mirror * (ei.MIRROR_WIRE[1] >= 0) + (wire + 3) * (wire + 3 < ei.WIRES))
                         / (1 + (ei.MIRROR_WIRE[1] >= 0) + (wire + 3 < ei.WIRES))),
                        ({}, wire)):
        out = np.asarray(pm.view_averaged(predict, images, **views))
        assert np.allclose(out[0, row, ei.WIRE_COLUMNS, 0] - row * 1000 - ei.PAD_LEFT, want, atol=0.01), views
        event = np.asarray(pm.view_averaged(predict, np.ones((1, ei.LAYERS, ei.WIRES, 1), np.float32), **views))
        assert np.allclose(event[0, 1, :, 0] - 1000, want, atol=0.01), views


def test_shift_average_validates_and_saves_the_mean_of_the_event_and_its_moved_copy(events_h5, tmp_path):
    """--shift-average K: what validation scores is, on every hit, the mean of the model's answer for the event
    and its answer for the event moved K wires along its layers, moved back (a hit moved off the wires keeps its
    own answer), unlike the plain model's; the saved model is loaded to answer so; K out of the wires refused."""
    raw = np.asarray(one_batch()[0])
    trainer = trainer_with(tmp_path, "--gan-weight", 0, "--shift-average", 1)
    plain = lambda x: np.asarray(trainer.inference_model(tf.constant(x), training=False))  # noqa: E731
    want = (plain(raw) + moved_wires(plain(moved_wires(raw, 1)), -1)) / 2
    want[:, :, ei.PAD_LEFT + ei.WIRES - 1:] = plain(raw)[:, :, ei.PAD_LEFT + ei.WIRES - 1:]
    got, hits = np.asarray(trainer.predict(raw)), raw > 0.5
    assert np.abs(got - want)[hits].max() < 1e-5 < np.abs(got - plain(raw))[hits].max()
    out = tmp_path / "run"
    pt.train(settings(events_h5, out, "--epochs", 1, "--steps-per-epoch", 1, "--validation-batches", 1,
                      "--shift-average", 1))
    model, info = trained_model.load_model(out)
    assert info["settings"]["shift_average"] == 1 and model.views == {"mirror": False, "shift": 1}
    assert "output shift-averaged (1 wire)" in trained_model.threshold_origin(None, info)
    keras_model = keras.models.load_model(out / "generator_best.keras")
    maps = raw[:, ei.LAYER_ROWS][:, :, ei.WIRE_COLUMNS].max(axis=-1)
    plain = lambda x: np.asarray(keras_model(tf.constant(x), training=False))  # noqa: E731
    image = raw.max(axis=-1, keepdims=True).repeat(3, axis=-1)
    want = (plain(image) + moved_wires(plain(moved_wires(image, 1)), -1)) / 2
    want[:, :, ei.PAD_LEFT + ei.WIRES - 1:] = plain(image)[:, :, ei.PAD_LEFT + ei.WIRES - 1:]
    got = model.probabilities(maps)  # what Pix2Pix_denoise.py runs: a cell's largest channel
    assert np.abs(got - ei.crop_event(want).max(axis=-1))[maps > 0.5].max() < 1e-5
    with pytest.raises(InputError, match="--shift-average must be below 112 wires, not 112"):
        settings(events_h5, out, "--shift-average", 112)
