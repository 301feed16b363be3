"""Train the Pix2Pix conditional GAN that denoises CLAS12 drift-chamber event images.

The model is the one of Isola et al. (2017) as the TensorFlow pix2pix tutorial builds it,
adapted to the project's 128x128x3 images scaled to 0..1 (builders and losses: pix2pix_model.py):
a U-Net generator with a sigmoid output, the 70x70 PatchGAN discriminator, and GAN loss +
LAMBDA x L1 where the L1 of the hit pixels is weighted by HIT_WEIGHT (a track lights ~50 of
16,384 pixels: plain L1 is smallest for an empty output).

Each epoch logs the losses, the validation L1 and the hit-level scores (efficiency, rejection,
purity, F1 at the validation-best output threshold) to history.csv and TensorBoard (logs/), and
writes samples/epoch_NNN.png. Checkpoints (checkpoints/) are written every epoch and every
CHECKPOINT_EVERY steps; rerunning the same command resumes where the last checkpoint stopped
(weights, optimizers, step, epoch and data order). The best generator on validation and the final
one are exported as generator_best.keras / generator_final.keras (float32, built-in layers only)
with a sidecar JSON holding the chosen threshold and the validation scores.

Several GPUs: MirroredStrategy; TF_CONFIG naming several workers: MultiWorkerMirroredStrategy
(only the chief writes logs and exports). The global batch is BATCH_SIZE x replicas.

    python Pix2Pix_training.py --data data/events.h5 --output-dir runs/pix2pix --base-filters 32
"""

import argparse
import contextlib
import csv
import io
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

import data_management
import event_image as ei
from script_utils import InputError, atomic_output, import_tensorflow, progress, run_main

tf = import_tensorflow()  # first, so that its C++ start-up lines stay off stderr
import keras  # noqa: E402

from pix2pix_model import (  # noqa: E402
    GENERATOR_BLOCKS,
    IMAGE_SHAPE,
    build_discriminator,
    build_generator,
    discriminator_loss,
    evaluate,
    generator_loss,
    synchronize_batch_norm,
    with_raw_hit_gate,
)

# ----------------------------------------------------------------------------------------------
H5_PATH = "data/pairs.h5"  # the HDF5 file written by Pix2Pix_data.py
OUTPUT_DIR = "runs/pix2pix"  # checkpoints, logs, samples and the exported generators
EPOCHS = 20
BATCH_SIZE = 32  # per replica; the global batch is BATCH_SIZE x replicas
LAMBDA = 100.0  # weight of the L1 term against the GAN term (the paper's)
HIT_WEIGHT = 10.0  # L1 weight of the truth's hit pixels (1 = plain L1, which learns a blank output)
WEIGHT_RAW_HITS = True  # weight the raw image's hits too (the noise hits the model must learn to remove)
GATE_BY_RAW_HITS = True  # exported/validated generator x raw hit mask: it removes hits, never adds any
GENERATOR_LR = 2e-4
DISCRIMINATOR_LR = 2e-4
BETA_1 = 0.5  # Adam's first-moment decay (the paper's)
BASE_FILTERS = 64  # width knob: filters of the first block (the paper's 64; 16-32 train fast on a CPU)
SEED = 1  # weight initialisation, dropout and the shuffling order of the training data
STEPS_PER_EPOCH = 0  # cap on training steps per epoch (0 = one full pass over the training split)
VALIDATION_BATCHES = 0  # cap on validation batches per epoch (0 = the whole validation split)
CHECKPOINT_EVERY = 500  # steps between mid-epoch checkpoints (one is also written every epoch)
KEEP_CHECKPOINTS = 3  # how many recent checkpoints to keep
SAMPLE_EVENTS = 4  # validation events drawn in samples/epoch_NNN.png
MIXED_PRECISION = "auto"  # auto | float32 | bfloat16 | float16 (auto: bf16 CPU units -> bfloat16, GPU -> float16)
DETERMINISTIC = False  # deterministic ops and seeds: a resumed run ends with the same weights
LOGICAL_CPUS = 0  # split the CPU into this many logical devices (>1 trains with MirroredStrategy; for tests)
KEEP_WORKER_CHECKPOINTS = False  # multi-worker: other workers keep their checkpoints (OUTPUT_DIR/.worker_*_tmp)
THRESHOLD_CRITERION = "balanced"  # balanced: the threshold with the best min(efficiency, rejection); f1: best F1
D_SATURATED_LOSS = 0.1  # discriminator loss below this (balanced: 2 log 2 = 1.39) is flagged as winning
# ----------------------------------------------------------------------------------------------

CSV_FIELDS = ("epoch", "step", "gen_total", "gen_gan", "gen_l1", "disc", "val_l1", "threshold", "efficiency",
              "rejection", "purity", "f1", "invented_per_event", "seconds", "images_per_s", "disc_winning")


# --- Training state -------------------------------------------------------------------------------
def make_optimizer(learning_rate, precision):
    """Adam(lr, beta_1=BETA_1); under float16, wrapped in dynamic loss scaling."""
    opt = keras.optimizers.Adam(learning_rate, beta_1=BETA_1)
    return keras.optimizers.LossScaleOptimizer(opt) if precision == "float16" else opt


class Trainer:
    """Models, optimizers, counters and the compiled train and predict steps, under one strategy."""

    def __init__(self, s, strategy, precision):
        self.s, self.strategy, self.precision = s, strategy, precision
        self.global_batch = s.batch_size * strategy.num_replicas_in_sync
        with strategy.scope():
            self.generator = build_generator(s.base_filters)
            self.discriminator = build_discriminator(s.base_filters)
            # What validation scores and what is exported: the generator, gated by the raw hits.
            self.inference_model = with_raw_hit_gate(self.generator) if s.gate_by_raw_hits else self.generator
            if strategy.num_replicas_in_sync > 1:
                synchronize_batch_norm(self.generator)
                synchronize_batch_norm(self.discriminator)
            self.gen_opt = make_optimizer(s.generator_lr, precision)
            self.disc_opt = make_optimizer(s.discriminator_lr, precision)
            # Build the optimizers' slots now, so that a checkpoint restores into them.
            self.gen_opt.build(self.generator.trainable_variables)
            self.disc_opt.build(self.discriminator.trainable_variables)
            counter = lambda dtype, value: tf.Variable(value, dtype=dtype, trainable=False,
                                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.step = counter(tf.int64, 0)  # optimizer steps done (both optimizers step together)
            self.epoch = counter(tf.int64, 0)  # epochs completed
            self.batch_in_epoch = counter(tf.int64, 0)  # batches done in the current epoch
            self.best_f1 = counter(tf.float32, -1.0)  # best validation F1 so far
        # Explicit variable lists: Keras 3 models do not give tf.train.Checkpoint their batch-norm
        # statistics and dropout seed states by themselves; the optimizers track their own.
        self.checkpoint = tf.train.Checkpoint(
            generator=list(self.generator.variables), discriminator=list(self.discriminator.variables),
            generator_optimizer=list(self.gen_opt.variables), discriminator_optimizer=list(self.disc_opt.variables),
            step=self.step, epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, best_f1=self.best_f1)
        self.train_step = tf.function(self._train_step)
        self.predict = tf.function(lambda raw: self.inference_model(raw, training=False),
                                   input_signature=[tf.TensorSpec((None,) + IMAGE_SHAPE, tf.float32)])

    def _replica_step(self, raw, truth):
        """One replica's share of a step: two tapes, as in the tutorial."""
        s = self.s
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            gen_output = self.generator(raw, training=True)
            disc_real = self.discriminator([raw, truth], training=True)
            disc_fake = self.discriminator([raw, gen_output], training=True)
            gen_total, gen_gan, gen_l1 = generator_loss(disc_fake, gen_output, truth, self.global_batch,
                                                        s.lam, s.hit_weight, raw if s.weight_raw_hits else None)
            disc = discriminator_loss(disc_real, disc_fake, self.global_batch)
            gen_scaled, disc_scaled = self.gen_opt.scale_loss(gen_total), self.disc_opt.scale_loss(disc)
        gen_vars, disc_vars = self.generator.trainable_variables, self.discriminator.trainable_variables
        self.gen_opt.apply_gradients(zip(gen_tape.gradient(gen_scaled, gen_vars), gen_vars, strict=True))
        self.disc_opt.apply_gradients(zip(disc_tape.gradient(disc_scaled, disc_vars), disc_vars, strict=True))
        return gen_total, gen_gan, gen_l1, disc

    def _train_step(self, batch):
        """One optimizer step on a distributed (raw, truth) batch; returns the four global losses."""
        per_replica = self.strategy.run(self._replica_step, args=batch)
        losses = [self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in per_replica]
        self.step.assign_add(1)
        self.batch_in_epoch.assign_add(1)
        return losses


# --- Samples -------------------------------------------------------------------------------------
def save_samples(path, first, threshold, n):
    """samples/epoch_NNN.png: a few validation events, raw | truth | output | kept raw hits."""
    raw, truth, output = (ei.crop_event(a[:n]) for a in first)
    to_u8 = lambda a: np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)
    kept = ei.hit_mask(output, threshold) & ei.hit_mask(raw, ei.SCALED_HIT_THRESHOLD)
    columns = {"raw": list(to_u8(raw)), "truth": list(to_u8(truth)), "output": list(to_u8(output)),
               f"kept (output > {threshold:.2f}, raw hits)": list(kept)}
    buffer = io.BytesIO()
    ei.save_event_grid(buffer, columns, title=path.stem)
    write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


# --- Files of a run -----------------------------------------------------------------------------
def write_atomic(target, writer, ext=""):
    """Write target through writer(temporary path ending with ext), renamed only when complete."""
    with atomic_output(target, overwrite=True) as tmp:
        if not ext:
            writer(tmp)
            return
        named = tmp.with_name(tmp.name + ext)  # e.g. Keras insists on a name ending with .keras
        try:
            writer(named)
            os.replace(named, tmp)
        finally:
            if named.exists():
                named.unlink()


def write_json(path, data):
    """A small JSON file, written atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=float) + "\n"))


def architecture(s):
    """What a checkpoint's weights depend on: a resume with anything else is refused."""
    return {"model": "pix2pix-unet-patchgan70", "image_shape": list(IMAGE_SHAPE), "base_filters": s.base_filters,
            "generator_blocks": GENERATOR_BLOCKS, "discriminator_patch_map": [14, 14, 1],
            "gate_by_raw_hits": s.gate_by_raw_hits}


def check_output_dir(out, s, chief=True):
    """Refuse an output folder that holds something else than a run of this architecture.

    Other workers of a multi-worker run share the chief's folder, which the chief may be filling.
    """
    config_path = out / "run_config.json"
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is not a folder")
    made_in = next(p for p in (out, *out.parents) if p.exists())  # the nearest folder that exists
    if not made_in.is_dir():
        raise InputError(f"{out}: {made_in} is not a folder")
    if not os.access(made_in, os.W_OK | os.X_OK):
        raise InputError(f"{out}: folder {made_in} is not writable")
    if config_path.exists():
        try:
            saved = json.loads(config_path.read_text())["architecture"]
        except (ValueError, KeyError) as exc:
            raise InputError(f"{config_path}: not a run configuration ({exc})") from None
        if saved != architecture(s):
            diff = ", ".join(f"{k} {saved.get(k)} there, {v} asked" for k, v in architecture(s).items()
                             if saved.get(k) != v)
            raise InputError(f"{out}: holds a run with a different architecture ({diff}); "
                             "use another --output-dir or the same settings")
    elif chief and out.is_dir() and any(not is_worker_folder(p) for p in out.iterdir()):
        raise InputError(f"{out}: exists and does not hold a training run (no run_config.json); "
                         "use a new or empty --output-dir")


def is_worker_folder(path):
    """A multi-worker run's folder of another worker (it may be made before the chief's first file)."""
    return path.name.startswith(".worker_") and path.name.endswith("_tmp") and path.is_dir()


def append_history(path, row):
    """Add an epoch's row to history.csv, replacing rows of that epoch or later (from a resume)."""
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < row["epoch"]]
    rows.append({k: row[k] for k in CSV_FIELDS})

    def writer(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            w.writerows(rows)
    write_atomic(path, writer)


def export_generator(trainer, out, stem, scores, epoch, step, settings):
    """generator_<stem>.keras (float32 copy of the weights, gated if so set) and its JSON with the threshold."""
    with dtype_policy("float32"):
        model = build_generator(trainer.s.base_filters)
        model.set_weights(trainer.generator.get_weights())
        if trainer.s.gate_by_raw_hits:
            model = with_raw_hit_gate(model)
    write_atomic(out / f"{stem}.keras", lambda tmp: model.save(tmp), ext=".keras")
    validation = {k: v for k, v in scores.items() if k != "threshold"}
    write_json(out / f"{stem}.json", {"threshold": scores["threshold"], "epoch": epoch, "step": step,
                                      "base_filters": trainer.s.base_filters, "validation": validation,
                                      "precision": trainer.precision, "settings": settings})


# --- Set-up: devices, precision, strategy, checkpoints ---------------------------------------------
@contextlib.contextmanager
def dtype_policy(name):
    """Build Keras layers under the global dtype policy name, then put the previous one back."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def choose_precision(setting):
    """auto: mixed float16 on a GPU, mixed bfloat16 on a CPU with bf16 units, else float32."""
    if setting != "auto":
        return setting
    if tf.config.list_physical_devices("GPU"):
        return "float16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"


def cluster_workers():
    """The workers TF_CONFIG names (several: multi-worker training), and whether this one is the chief."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError as exc:
        raise InputError(f"TF_CONFIG: not valid JSON ({exc})") from None
    cluster, task = config.get("cluster", {}), config.get("task", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return workers, chief, f"{kind}_{index}"


def choose_strategy(logical_cpus):
    """MultiWorkerMirrored for a TF_CONFIG cluster, Mirrored for several GPUs (or logical CPUs)."""
    cpus = tf.config.list_physical_devices("CPU")
    if logical_cpus > 1:  # must happen before TensorFlow initialises its devices
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    workers, chief, name = cluster_workers()
    if workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy(), chief, name
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), True, name
    if not gpus and len(tf.config.list_logical_devices("CPU")) > 1:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        reduce_on_one = tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=reduce_on_one), True, name
    return tf.distribute.get_strategy(), True, name


def checkpoint_candidates(folder):
    """Checkpoint prefixes in a folder, newest (highest step) first."""
    found = [(int(p.name[len("ckpt-"):-len(".index")]), p) for p in Path(folder).glob("ckpt-*.index")
             if p.name[len("ckpt-"):-len(".index")].isdigit()]
    return [str(p)[:-len(".index")] for _, p in sorted(found, reverse=True)]


def restore_latest(trainer, folder):
    """Restore the newest readable checkpoint; a corrupted one is reported and the previous one tried."""
    for prefix in checkpoint_candidates(folder):
        try:
            trainer.checkpoint.restore(prefix).assert_existing_objects_matched()
        except Exception as exc:  # truncated or corrupted files raise OpError, IndexError, ValueError, ...
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            print(f"warning: checkpoint {prefix} is unreadable ({reason}); trying the previous one",
                  file=sys.stderr, flush=True)
            continue
        iterations = {int(trainer.gen_opt.iterations.numpy()), int(trainer.disc_opt.iterations.numpy())}
        if iterations != {int(trainer.step.numpy())}:
            raise InputError(f"{prefix}: optimizers' iterations {sorted(iterations)} disagree with the step "
                             f"counter {int(trainer.step.numpy())}")
        return prefix
    return None


# --- The run ---------------------------------------------------------------------------------------
STOP_REQUESTED = []  # the signal that asked the run to stop (main's request_stop), if any


def check_stop():
    """Between steps: a stop asked for by a signal becomes the KeyboardInterrupt that saves and exits."""
    if STOP_REQUESTED:
        raise KeyboardInterrupt


def train(s):
    """Train (or resume) a run with the settings s (an argparse.Namespace from parse_args).

    Returns the final validation scores (a dict), or None on a worker that is not the chief.
    """
    t_start = time.time()
    if s.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(s.seed)
    strategy, chief, worker_name = choose_strategy(s.logical_cpus)
    precision = choose_precision(s.mixed_precision)
    out = Path(s.output_dir)
    check_output_dir(out, s, chief)

    # Data: the saved split of data_management; its errors (InputError) pass through as they are.
    split = data_management.load_split(s.data)
    replicas = strategy.num_replicas_in_sync
    global_batch = s.batch_size * replicas
    batches = len(split["train"]) // global_batch
    if batches == 0:
        raise InputError(f"{s.data}: the training split has {len(split['train'])} pairs, fewer than one global "
                         f"batch of {global_batch} (--batch-size {s.batch_size} x {replicas} replicas)")
    steps_per_epoch = min(batches, s.steps_per_epoch) if s.steps_per_epoch else batches
    validation = data_management.make_dataset(s.data, split["validation"], batch_size=global_batch)
    options = tf.data.Options()  # several workers: each takes its share of every global batch
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    # Where this process writes: the chief into the output folder, other workers into a temporary one.
    ckpt_dir = out / "checkpoints" if chief else out / f".worker_{worker_name}_tmp" / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(vars(s))
    if chief and not (out / "run_config.json").exists():
        write_json(out / "run_config.json", {"architecture": architecture(s), "settings": settings,
                                             "precision": precision, "replicas": replicas})

    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[precision]
    with dtype_policy(policy):
        trainer = Trainer(s, strategy, precision)
    restored = restore_latest(trainer, out / "checkpoints")
    manager = tf.train.CheckpointManager(trainer.checkpoint, ckpt_dir, max_to_keep=s.keep_checkpoints)
    step, epoch, done_in_epoch = (int(v.numpy()) for v in (trainer.step, trainer.epoch, trainer.batch_in_epoch))
    if restored:
        print(f"Resuming from {restored}: step {step}, epoch {epoch + 1} after {done_in_epoch} of its batches",
              flush=True)
    print(f"Training {len(split['train'])} pairs ({steps_per_epoch} steps of {global_batch} per epoch, "
          f"{replicas} replica(s), {precision}), validating on {len(split['validation'])}; "
          f"generator {trainer.generator.count_params():,} parameters, base filters {s.base_filters}", flush=True)

    writer = tf.summary.create_file_writer(str(out / "logs")) if chief else None
    samples = out / "samples"
    if chief:
        samples.mkdir(parents=True, exist_ok=True)
    last_saved = step if restored else -1

    def save_checkpoint():
        nonlocal last_saved
        step_now = int(trainer.step.numpy())
        if step_now != last_saved:
            manager.save(checkpoint_number=step_now)
            last_saved = step_now

    scores = None
    try:
        while epoch < s.epochs:
            check_stop()
            t0 = time.time()
            skip = done_in_epoch if done_in_epoch < steps_per_epoch else steps_per_epoch
            data = (data_management.make_dataset(s.data, split["train"], batch_size=global_batch, shuffle=True,
                                                 seed=s.seed, epoch=epoch, drop_remainder=True)
                    .take(steps_per_epoch).skip(skip))
            if multi_worker:
                data = data.with_options(options)
            sums, n_steps = np.zeros(4), 0
            bar = progress(strategy.experimental_distribute_dataset(data), total=steps_per_epoch - skip,
                           desc=f"epoch {epoch + 1}/{s.epochs}", unit="step", disable=None if chief else True)
            for batch in bar:
                losses = np.array([float(v) for v in trainer.train_step(batch)])
                sums += losses
                n_steps += 1
                if n_steps % 5 == 0 or n_steps == 1:
                    bar.set_postfix(G=f"{losses[0]:.3f}", L1=f"{losses[2]:.4f}", D=f"{losses[3]:.3f}")
                last_batch = skip + n_steps == steps_per_epoch  # saved below, with the epoch counted
                if s.checkpoint_every and int(trainer.step.numpy()) % s.checkpoint_every == 0 and not last_batch:
                    save_checkpoint()
                check_stop()
            bar.close()
            seconds = time.time() - t0
            epoch += 1
            done_in_epoch = 0
            trainer.epoch.assign(epoch)
            trainer.batch_in_epoch.assign(0)
            step = int(trainer.step.numpy())
            means = sums / n_steps if n_steps else np.full(4, np.nan)  # nan: the epoch was done before a resume
            if chief:
                scores, first = evaluate(trainer.predict, validation, s.validation_batches, s.threshold_criterion)
                winning = bool(means[3] < D_SATURATED_LOSS)
                row = {"epoch": epoch, "step": step, "gen_total": means[0], "gen_gan": means[1], "gen_l1": means[2],
                       "disc": means[3], **scores, "seconds": round(seconds, 2),
                       "images_per_s": round(n_steps * global_batch / max(seconds, 1e-9), 2),
                       "disc_winning": int(winning)}
                append_history(out / "history.csv", row)
                with writer.as_default():
                    for key in CSV_FIELDS[2:-1]:
                        tf.summary.scalar(key, float(row[key]), step=epoch)
                writer.flush()
                if first is not None:
                    save_samples(samples / f"epoch_{epoch:03d}.png", first, scores["threshold"], s.sample_events)
                print(f"epoch {epoch}/{s.epochs} step {step}: G {means[0]:.4f} (GAN {means[1]:.3f}, "
                      f"L1 {means[2]:.5f}) D {means[3]:.3f} | validation L1 {scores['val_l1']:.5f}, threshold "
                      f"{scores['threshold']:.2f}: efficiency {scores['efficiency']:.3f} rejection "
                      f"{scores['rejection']:.3f} purity {scores['purity']:.3f} F1 {scores['f1']:.3f} "
                      f"({seconds:.0f} s)", flush=True)
                if winning:
                    print(f"note: the discriminator is winning (its loss {means[3]:.3f}, balanced 1.39; the "
                          f"generator's GAN loss {means[1]:.2f}, balanced 0.69)", flush=True)
                f1 = scores["f1"] if not math.isnan(scores["f1"]) else -1.0
                if f1 > float(trainer.best_f1.numpy()):
                    trainer.best_f1.assign(f1)
                    export_generator(trainer, out, "generator_best", scores, epoch, step, settings)
            save_checkpoint()
    except KeyboardInterrupt:
        save_checkpoint()
        print(f"Stopped at step {int(trainer.step.numpy())}; checkpoint saved in {ckpt_dir}. "
              "Run the same command again to resume.", file=sys.stderr, flush=True)
        raise

    if chief:
        if scores is None:  # nothing left to train: score the restored weights
            scores, _ = evaluate(trainer.predict, validation, s.validation_batches, s.threshold_criterion)
        export_generator(trainer, out, "generator_final", scores, epoch, step, settings)
        print(f"Done: {epoch} epochs, {step} steps in {time.time() - t_start:.0f} s. Best F1 "
              f"{float(trainer.best_f1.numpy()):.3f}: {out / 'generator_best.keras'}; final: "
              f"{out / 'generator_final.keras'}", flush=True)
    if multi_worker:  # wait for each other (the chief's exports), so that all workers leave together
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
    if not chief:
        if not s.keep_worker_checkpoints:
            shutil.rmtree(ckpt_dir.parent, ignore_errors=True)
        return None
    return scores


# --- Command line ----------------------------------------------------------------------------------
def parse_args(argv=None):
    """The settings above, each overridable on the command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=H5_PATH, help="HDF5 file of (raw, truth) pairs (default %(default)s)")
    p.add_argument("--output-dir", default=OUTPUT_DIR,
                   help="run folder; rerunning with the same folder resumes (default %(default)s)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="total epochs to train to (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="batch per replica (default %(default)s)")
    p.add_argument("--base-filters", type=int, default=BASE_FILTERS,
                   help="width: filters of the first block, 64 is the paper's (default %(default)s)")
    p.add_argument("--lambda", dest="lam", type=float, default=LAMBDA, help="L1 weight (default %(default)s)")
    p.add_argument("--gate-by-raw-hits", action=argparse.BooleanOptionalAction, default=GATE_BY_RAW_HITS,
                   help="multiply the output by the raw hit mask: remove hits, never add any (default %(default)s)")
    p.add_argument("--weight-raw-hits", action=argparse.BooleanOptionalAction, default=WEIGHT_RAW_HITS,
                   help="weight the raw hits' L1 by --hit-weight too, not only the truth's (default %(default)s)")
    p.add_argument("--threshold-criterion", choices=("balanced", "f1"), default=THRESHOLD_CRITERION,
                   help="how the output threshold is chosen on validation: best min(efficiency, rejection) "
                        "or best F1 (default %(default)s)")
    p.add_argument("--hit-weight", type=float, default=HIT_WEIGHT,
                   help="L1 weight of the truth's hit pixels; 1 = plain L1 (default %(default)s)")
    p.add_argument("--generator-lr", type=float, default=GENERATOR_LR, help="(default %(default)s)")
    p.add_argument("--discriminator-lr", type=float, default=DISCRIMINATOR_LR, help="(default %(default)s)")
    p.add_argument("--seed", type=int, default=SEED, help="initialisation, dropout, data order (default %(default)s)")
    p.add_argument("--steps-per-epoch", type=int, default=STEPS_PER_EPOCH,
                   help="cap on steps per epoch, 0 = the whole training split (default %(default)s)")
    p.add_argument("--validation-batches", type=int, default=VALIDATION_BATCHES,
                   help="cap on validation batches, 0 = all (default %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY,
                   help="steps between mid-epoch checkpoints, 0 = only at epoch ends (default %(default)s)")
    p.add_argument("--keep-checkpoints", type=int, default=KEEP_CHECKPOINTS, help="(default %(default)s)")
    p.add_argument("--sample-events", type=int, default=SAMPLE_EVENTS,
                   help="validation events in samples/epoch_NNN.png (default %(default)s)")
    p.add_argument("--mixed-precision", choices=("auto", "float32", "bfloat16", "float16"), default=MIXED_PRECISION,
                   help="auto: bfloat16 on a CPU with bf16 units, float16 on a GPU, else float32 (default %(default)s)")
    p.add_argument("--deterministic", action="store_true", default=DETERMINISTIC,
                   help="deterministic ops: a killed and resumed run ends with the same weights (slower)")
    p.add_argument("--logical-cpus", type=int, default=LOGICAL_CPUS,
                   help="split the CPU into N logical devices and train on them with MirroredStrategy (tests)")
    p.add_argument("--keep-worker-checkpoints", action="store_true", default=KEEP_WORKER_CHECKPOINTS,
                   help="multi-worker: a worker that is not the chief keeps its copy of the checkpoints in "
                        "OUTPUT_DIR/.worker_<type>_<index>_tmp/checkpoints instead of deleting it at the end "
                        "(to check that the workers hold the same weights)")
    s = p.parse_args(argv)
    for name in ("epochs", "batch_size", "base_filters", "sample_events", "keep_checkpoints"):
        if getattr(s, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(s, name)}")
    for name in ("steps_per_epoch", "validation_batches", "checkpoint_every", "logical_cpus"):
        if getattr(s, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must not be negative, not {getattr(s, name)}")
    if not s.hit_weight > 0 or not s.lam >= 0:
        raise InputError("--hit-weight must be positive and --lambda not negative")
    return s


def request_stop(signum, frame):
    """Ctrl-C or a batch system's SIGTERM (pre-emption, the end of a time slot): stop after the
    current step, with a checkpoint of it, so that the same command resumes from there.

    The signal only sets a flag that the training loop reads between steps (check_stop). A
    KeyboardInterrupt raised wherever the signal lands can be lost: Python drops one raised in a
    garbage-collector callback, and Keras imports JAX's when JAX is installed. A second signal
    stops at once.
    """
    if STOP_REQUESTED:
        raise KeyboardInterrupt
    STOP_REQUESTED.append(signum)
    print(f"\n{signal.Signals(signum).name}: stopping after the current step (again to stop at once)",
          file=sys.stderr, flush=True)


def main(argv=None):
    """Train from the command line."""
    STOP_REQUESTED.clear()
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    run_main(main)
