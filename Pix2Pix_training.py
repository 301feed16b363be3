"""Train the Pix2Pix U-Net (the conditional GAN's generator; its GAN term off by default) that denoises CLAS12
drift-chamber event images.

The model, its losses and its validation are in pix2pix_model.py, the trainer (models, optimizers, compiled steps)
in pix2pix_trainer.py, the run folder's files in training_files.py; the README's "Training" section describes them.
Each epoch writes history.csv, TensorBoard logs (logs/), samples/epoch_NNN.png and a checkpoint; rerunning the same
command resumes. The best and the final generator are exported as generator_best.keras and generator_final.keras,
each with a JSON holding the output threshold chosen on validation. Several GPUs or a TF_CONFIG cluster of workers
train together (only the chief writes).

    python Pix2Pix_training.py --data data/pairs.h5 --output-dir runs/pix2pix --base-filters 32
    tensorboard --logdir runs/pix2pix/logs
"""

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import data_management
import event_image as ei
import pairs_h5
from script_utils import (
    ArgumentParser,
    InputError,
    import_keras,
    import_tensorflow,
    progress,
    raised_input_error,
    run_main,
    seed_number,
    warn,
)

tf = import_tensorflow()  # first, so that its C++ start-up lines stay off stderr
keras = import_keras()

import pix2pix_model  # noqa: E402
from pix2pix_model import dtype_policy, epoch_rank, validate  # noqa: E402
from pix2pix_trainer import (  # noqa: E402
    StopNow,
    Trainer,
    catch_stop_signals,
    check_stop,
    choose_precision,
    choose_strategy,
    epoch_batches,
)
from training_files import (  # noqa: E402
    CSV_FIELDS,
    RUN_CONFIG,
    Checkpoints,
    architecture,
    best_summary,
    check_output_dir,
    check_same_data,
    check_same_settings,
    data_record,
    export_generator,
    finished_export,
    note_new_epochs,
    read_history,
    record_epoch,
    report_epoch,
    restore_latest,
    run_stability,
    save_samples,
    write_json,
)

# --- Settings: each is the default of its flag (BATCH_SIZE -> --batch-size) -----------------------
DATA = "data/pairs.h5"  # the HDF5 file of (raw, truth) pairs written by Pix2Pix_data.py
OUTPUT_DIR = "runs/pix2pix"  # checkpoints, logs, samples and the exported generators
EPOCHS = 20
BATCH_SIZE = pix2pix_model.BATCH_SIZE  # per replica; the global batch is BATCH_SIZE x replicas
BASE_FILTERS = pix2pix_model.BASE_FILTERS  # width: filters of the first block (16-32 train fast on a CPU)
LAMBDA = pix2pix_model.LAMBDA  # weight of the L1 term against the GAN term
HIT_WEIGHT = pix2pix_model.HIT_WEIGHT  # L1 weight of the truth's hit pixels (1 = plain L1)
WEIGHT_RAW_HITS = True  # weight the raw image's hits too (the noise hits the model must learn to remove)
GATE_BY_RAW_HITS = True  # exported/validated generator x raw hit mask: it removes hits, never adds any
GENERATOR_LR = 1e-3  # measured best on hard and default events (2e-4, the paper's, learns far slower; README)
DISCRIMINATOR_LR = 1e-3  # with --gan-weight > 0 (measured together with GENERATOR_LR 1e-3)
BETA_1 = 0.5  # Adam's first-moment decay (the paper's)
SEED = 1  # weight initialisation, dropout and the shuffling order of the training data
SPLIT_SEED = data_management.SPLIT_SEED  # the train/validation/test split of DATA
STEPS_PER_EPOCH = 0  # cap on training steps per epoch (0 = one full pass over the training split)
VALIDATION_BATCHES = 0  # cap on validation batches per epoch (0 = the whole validation split)
CHECKPOINT_EVERY = 500  # steps between mid-epoch checkpoints (one is also written every epoch)
KEEP_CHECKPOINTS = 3  # how many recent checkpoints to keep
SAMPLE_EVENTS = 4  # validation events drawn in samples/epoch_NNN.png
MIXED_PRECISION = "auto"  # auto | float32 | bfloat16 | float16 (auto: bf16 CPU units -> bfloat16, GPU -> float16)
DETERMINISTIC = False  # deterministic ops and seeds: a resumed run ends with the same weights
LOGICAL_CPUS = 0  # split the CPU into this many logical devices (>1 trains with MirroredStrategy; for tests)
KEEP_WORKER_CHECKPOINTS = False  # multi-worker: other workers keep their checkpoints (OUTPUT_DIR/.worker_*_tmp)
THRESHOLD_CRITERION = pix2pix_model.THRESHOLD_CRITERION  # balanced | f1 | tracks: as tracking would (README)
TRACKS_KEPT = pix2pix_model.TRACKS_KEPT  # tracks: the share of reconstructable tracks the chosen threshold keeps
VALIDATION_BACKGROUND = pix2pix_model.VALIDATION_BACKGROUND  # validation events carry N events' background
VALIDATION_DRAWS = pix2pix_model.VALIDATION_DRAWS  # ... each under D other events' backgrounds in turn
MIRROR_AVERAGE = pix2pix_model.MIRROR_AVERAGE  # output averaged with the mirrored event's (validate, denoise, export)
SHIFT_AVERAGE = pix2pix_model.SHIFT_AVERAGE  # wires: and with the event's moved so far along its layers (0 = off)
D_SATURATED_LOSS = 0.1  # discriminator loss below this (balanced: 2 log 2 = 1.39) is flagged as winning
GAN_WEIGHT = 0.0  # weight of the GAN term in the generator's loss; 0 (measured best) = a plain U-Net, no discriminator
GAN_WARMUP = 0  # epochs over which the GAN weight ramps up linearly from 0 (0 = full weight from the start)
DISC_EVERY = 1  # step the discriminator every K generator steps
LABEL_SMOOTHING = 0.0  # the discriminator's label for real pairs is 1 - this
DROPOUT = pix2pix_model.DROPOUT  # dropout on the decoder's three deepest blocks while training (0 = none)
EMA_DECAY = 0.0  # validate and export an exponential moving average of the generator's weights (0 = off)
LR_DECAY = pix2pix_model.LR_DECAY  # none: constant learning rates; cosine: both fall along a half cosine over --epochs
NOISE_AUGMENT = pix2pix_model.NOISE_AUGMENT  # training only: noise hits added on 0..this of each event's cells
BESIDE_AUGMENT = pix2pix_model.BESIDE_AUGMENT  # training only: share of events given a segment beside a track
MIX_TRACKS = pix2pix_model.MIX_TRACKS  # training only: share of events given another training event's tracks
MIX_BACKGROUND = pix2pix_model.MIX_BACKGROUND  # training only: share of events given another event's background
BEND_AUGMENT = pix2pix_model.BEND_AUGMENT  # training only: share of events whose layers move by a tilt and a bend
PIXEL_LOSS = pix2pix_model.PIXEL_LOSS  # l1: the weighted L1 (the paper's term); bce: the weighted cross-entropy
COLLAPSE_DROP = 0.1  # an epoch whose validation F1 is more than this below the best so far is flagged
# ---------------------------------------------------------------------------------------------------
GAN_ONLY = ("discriminator_lr", "d_saturated_loss", "gan_warmup", "disc_every", "label_smoothing")  # unused at 0


# --- The run -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """What set_up() prepares for the loop: one process's trainer, data and files."""

    s: argparse.Namespace  # the settings (parse_args')
    trainer: Trainer
    chief: bool  # this process validates, logs and exports (other workers only train)
    multi_worker: bool
    out: Path  # the run folder
    split: dict  # data_management's {"train", "validation", "test"} indices
    steps_per_epoch: int
    validation: object  # the validation tf.data.Dataset
    validation_ids: object  # --threshold-criterion tracks: the validation events' track ids in its order, or None
    checkpoints: Checkpoints
    log: object  # the chief's TensorBoard writer (logs/); None on other workers
    started: float  # time.time() at the start
    train_memory: dict = dataclasses.field(default_factory=dict)  # the training pairs, read once (data_management)


def load_data(s, replicas):
    """The split (data_management's saved one), the training steps per epoch, the validation dataset and,
    for --threshold-criterion tracks, its events' track ids (None without them).

    data_management's errors (InputError) pass through as they are.
    """
    split = data_management.load_split(s.data, split_seed=s.split_seed)
    global_batch = s.batch_size * replicas
    batches = len(split["train"]) // global_batch
    if batches == 0:
        raise InputError(f"{s.data}: the training split has {len(split['train'])} pairs, fewer than one global "
                         f"batch of {global_batch} (--batch-size {s.batch_size} x {replicas} replicas)")
    steps_per_epoch = min(batches, s.steps_per_epoch) if s.steps_per_epoch else batches
    validation = data_management.make_dataset(s.data, split["validation"], batch_size=global_batch)
    ids = None
    if s.threshold_criterion == "tracks":  # the dataset is in file order: the sorted indices
        ids = pairs_h5.read_track_ids(s.data, np.sort(split["validation"]))
        if ids is None:
            print(f"note: {s.data} has no track_ids: the threshold criterion counts each validation event's truth "
                  "as one track", flush=True)
    return split, steps_per_epoch, validation, ids


def set_up(s):
    """Seeds, devices and the trainer; the run folder checked; the data; the newest checkpoint restored."""
    started = time.time()
    if s.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(s.seed)
    strategy, chief, worker_name = choose_strategy(s.logical_cpus)
    precision = choose_precision(s.mixed_precision)
    with dtype_policy({"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[precision]):
        trainer = Trainer(s, strategy, precision)
    out = Path(s.output_dir)
    check_output_dir(out, architecture(trainer), chief)
    replicas = strategy.num_replicas_in_sync
    data = data_record(s.data)
    check_same_data(out, data)  # before anything is written (the split beside the data too)
    check_same_settings(out, vars(s), replicas)
    split, steps_per_epoch, validation, validation_ids = load_data(s, replicas)

    restored = restore_latest(trainer, out / "checkpoints")
    step, epoch, done_in_epoch = trainer.counters()
    # Where this process writes: the chief into the run folder, other workers into a temporary one.
    ckpt_dir = out / "checkpoints" if chief else out / f".worker_{worker_name}_tmp" / "checkpoints"
    checkpoints = Checkpoints(trainer, ckpt_dir, s.keep_checkpoints, last_saved=step if restored else -1)
    if chief and not (out / RUN_CONFIG).exists():
        write_json(out / RUN_CONFIG, {"architecture": architecture(trainer), "data": data, "settings": vars(s),
                                      "precision": precision, "replicas": replicas})
    if restored:
        where = (f"epoch {epoch + 1} after {done_in_epoch} of its batches" if epoch < s.epochs
                 else f"its {epoch} epochs are done, none to train")
        print(f"Resuming from {restored}: step {step}, {where}", flush=True)
        note_new_epochs(s, out, epoch)
    print(f"Training {len(split['train'])} pairs ({steps_per_epoch} steps of {trainer.global_batch} per epoch, "
          f"{replicas} replica(s), {precision}), validating on {len(split['validation'])} x {s.validation_draws} "
          f"draw(s); generator {trainer.generator.count_params():,} parameters, base filters {s.base_filters}",
          flush=True)
    if chief:
        (out / "samples").mkdir(parents=True, exist_ok=True)
    log = tf.summary.create_file_writer(str(out / "logs")) if chief else None
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    return Run(s, trainer, chief, multi_worker, out, split, steps_per_epoch, validation, validation_ids, checkpoints,
               log, started)


def train_epoch(run):
    """The epoch's steps (after a resume: the rest of them), with mid-epoch checkpoints.

    Returns the sums of the four losses over the steps and the number of steps.
    """
    s, trainer = run.s, run.trainer
    _, epoch, done_in_epoch = trainer.counters()
    skip = min(done_in_epoch, run.steps_per_epoch)
    trainer.set_epoch(epoch)
    sums, n_steps = np.zeros(4), 0
    bar = progress(epoch_batches(run, epoch, skip), total=run.steps_per_epoch - skip,
                   desc=f"epoch {epoch + 1}/{s.epochs}", unit="step", disable=None if run.chief else True)
    for batch in bar:
        losses = np.array([float(v) for v in trainer.step_batch(batch)])
        if not np.isfinite(losses).all():
            raise InputError(f"step {int(trainer.step.numpy())}: the losses are not finite (generator "
                             f"{losses[0]:g}, discriminator {losses[3]:g}); stopped without saving it, the newest "
                             f"checkpoint in {run.checkpoints.folder} is the last good one (lower the learning rates?)")
        sums += losses
        n_steps += 1
        if n_steps % 5 == 0 or n_steps == 1:
            bar.set_postfix(G=f"{losses[0]:.3f}", L1=f"{losses[2]:.4f}", D=f"{losses[3]:.3f}")
        last_batch = skip + n_steps == run.steps_per_epoch  # saved by the loop, with the epoch counted
        if s.checkpoint_every and int(trainer.step.numpy()) % s.checkpoint_every == 0 and not last_batch:
            run.checkpoints.save()
        check_stop()
    bar.close()
    trainer.epoch.assign(epoch + 1)
    trainer.batch_in_epoch.assign(0)
    return sums, n_steps


def validate_run(run):
    """pix2pix_model.validate of the run's generator on its validation split, with the run's criterion (a
    progress bar on a terminal)."""
    s = run.s
    batches = min(len(run.validation), s.validation_batches or len(run.validation))  # validate stops there
    shown = progress(run.validation, total=batches, desc="validation", unit="batch", leave=False)
    return validate(run.trainer.predict, shown, s.validation_batches, s.threshold_criterion, run.validation_ids,
                    s.tracks_kept, s.validation_background, s.validation_draws)


def end_of_epoch(run, sums, n_steps, seconds):
    """The chief's work after an epoch: validation, history.csv and TensorBoard, samples, the best export."""
    s, trainer = run.s, run.trainer
    step, epoch, _ = trainer.counters()
    means = sums / n_steps if n_steps else np.full(4, np.nan)  # the steps since a resume (nan: none were left)
    if not trainer.gan:
        means[3] = np.nan  # no discriminator
    scores, first = validate_run(run)
    speed = round(n_steps * trainer.global_batch / max(seconds, 1e-9), 2) if n_steps else np.nan
    row = {"epoch": epoch, "step": step, **dict(zip(CSV_FIELDS[2:6], means, strict=True)), **scores,
           "seconds": round(seconds, 2), "images_per_s": speed,
           "disc_winning": int(bool(trainer.gan and means[3] < s.d_saturated_loss))}
    rows = record_epoch(run.out, run.log, row, s.collapse_drop)
    if first is not None:
        save_samples(run.out / "samples" / f"epoch_{epoch:03d}.png", first, scores["threshold"], s.sample_events)
    report_epoch(s, row, seconds)
    earlier = [epoch_rank(r, s.threshold_criterion, s.tracks_kept) for r in rows[:-1]]
    if scores["f1"] >= 0 and (not earlier or epoch_rank(row, s.threshold_criterion, s.tracks_kept) > max(earlier)):
        trainer.best_f1.assign(scores["f1"])
        export_generator(trainer, run.out, "generator_best", scores, epoch, step, vars(s), run_stability(rows, epoch))
    return scores


def finish(run, scores):
    """After the last epoch: the chief exports the final generator; other workers delete their checkpoints."""
    s, trainer = run.s, run.trainer
    step, epoch, _ = trainer.counters()
    if run.chief:
        rows = read_history(run.out / "history.csv")
        final = finished_export(run.out, epoch, step) if scores is None else None  # the run had finished
        if final is not None:
            scores = final["validation"]  # its export stands: not validated again, maybe on other settings
        else:
            scores = validate_run(run)[0] if scores is None else scores  # nothing left to train: the restored weights
            export_generator(trainer, run.out, "generator_final", scores, epoch, step, vars(s),
                             run_stability(rows, epoch))
        best_text = best_summary(run.out, rows, float(trainer.best_f1.numpy()) >= 0)
        print(f"Done: {epoch} epochs, {step} steps in {time.time() - run.started:.0f} s; {best_text}; final: "
              f"{run.out / 'generator_final.keras'}", flush=True)
    if run.multi_worker:  # wait for each other (the chief's exports), so that all workers leave together
        trainer.strategy.reduce(tf.distribute.ReduceOp.SUM, trainer.strategy.run(lambda: tf.constant(1.0)), axis=None)
    if not run.chief:
        if not s.keep_worker_checkpoints:
            shutil.rmtree(run.checkpoints.folder.parent, ignore_errors=True)
        return None
    return scores


def train(s):
    """Train (or resume) a run with the settings s (parse_args').

    Returns the final validation scores (a dict), or None on a worker that is not the chief.
    """
    run = set_up(s)
    scores = None
    try:
        while run.trainer.counters()[1] < s.epochs:
            check_stop()
            t0 = time.time()
            sums, n_steps = train_epoch(run)
            if run.chief:
                scores = end_of_epoch(run, sums, n_steps, time.time() - t0)
            run.checkpoints.save()
    except StopNow:  # the second signal, maybe in validation after the epoch was counted: no checkpoint of that
        print("Stopped at once; no checkpoint saved: the same command resumes from the newest one in "
              f"{run.checkpoints.folder}.", file=sys.stderr, flush=True)
        raise
    except KeyboardInterrupt:
        run.checkpoints.save()
        print(f"Stopped at step {int(run.trainer.step.numpy())}; checkpoint saved in {run.checkpoints.folder}. "
              "Run the same command again to resume.", file=sys.stderr, flush=True)
        raise
    return finish(run, scores)


# --- Command line ----------------------------------------------------------------------------------------
def build_parser():
    """The settings above, each overridable on the command line."""
    p = ArgumentParser(description=__doc__)
    p.add_argument("--data", default=DATA, help="HDF5 file of (raw, truth) pairs (default %(default)s)")
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
    p.add_argument("--hit-weight", type=float, default=HIT_WEIGHT,
                   help="L1 weight of the truth's hit pixels; 1 = plain L1 (default %(default)s)")
    p.add_argument("--generator-lr", type=float, default=GENERATOR_LR, help="(default %(default)s)")
    p.add_argument("--discriminator-lr", type=float, default=DISCRIMINATOR_LR, help="(default %(default)s)")
    p.add_argument("--beta-1", type=float, default=BETA_1, help="Adam's first-moment decay (default %(default)s)")
    p.add_argument("--seed", type=seed_number, default=SEED,
                   help="initialisation, dropout, data order (default %(default)s)")
    p.add_argument("--split-seed", type=seed_number, default=SPLIT_SEED,
                   help="the train/validation/test split, as data_management.py makes it (default %(default)s)")
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
                   help="multi-worker: a worker that is not the chief keeps its checkpoints in OUTPUT_DIR/"
                        ".worker_<type>_<index>_tmp/checkpoints (to check that the workers hold the same weights)")
    add_validation_settings(p)
    add_recipe_levers(p)
    return p


def add_validation_settings(p):
    """How validation chooses the threshold and generator_best, and what the model's output is."""
    p.add_argument("--threshold-criterion", choices=("balanced", "f1", "tracks"), default=THRESHOLD_CRITERION,
                   help="how the output threshold is chosen on validation: best min(efficiency, rejection), best "
                        "F1, or tracks: the fewest fake segments of those keeping --tracks-kept of the tracks "
                        "reconstructable from >= 5 of 6 superlayers (default %(default)s)")
    p.add_argument("--tracks-kept", type=float, default=TRACKS_KEPT,
                   help="--threshold-criterion tracks: the share of tracks the threshold must keep, in (0, 1] "
                        "(default %(default)s)")
    p.add_argument("--validation-background", type=int, default=VALIDATION_BACKGROUND, metavar="N",
                   help="validate (choose the threshold, generator_best) on events carrying their own and the next "
                        "N - 1 events' background, as at N x the luminosity; 1 to --batch-size (default %(default)s)")
    p.add_argument("--validation-draws", type=int, default=VALIDATION_DRAWS, metavar="D",
                   help="validate each event D times, under other events' background each time (with "
                        "--validation-background N of 2 or more; at most (--batch-size - 1) / (N - 1) times): D "
                        "times the fake segments to choose on, D times the validation's time (default %(default)s)")
    p.add_argument("--mirror-average", action=argparse.BooleanOptionalAction, default=MIRROR_AVERAGE,
                   help="the model's output: the average of its answers for the event and for the event mirrored "
                        "along the wires, in validation and wherever the model is used (twice the time) "
                        "(default %(default)s)")
    p.add_argument("--shift-average", type=int, default=SHIFT_AVERAGE, metavar="WIRES",
                   help="the model's output also averaged with its answer for the event moved WIRES wires up along "
                        "its layers, in validation and wherever the model is used (0 = off) (default %(default)s)")


def add_recipe_levers(p):
    """The recipe's levers and the collapse flag (issue 11; the README's lever table)."""
    p.add_argument("--d-saturated-loss", type=float, default=D_SATURATED_LOSS,
                   help="a discriminator loss below this (balanced: 2 log 2 = 1.39) is noted in the log and "
                        "history.csv's disc_winning (default %(default)s)")
    p.add_argument("--gan-weight", type=float, default=GAN_WEIGHT,
                   help="weight of the GAN term against --lambda x L1; 0 = a plain U-Net on the weighted L1, no "
                        "discriminator built or stepped (default %(default)s)")
    p.add_argument("--gan-warmup", type=int, default=GAN_WARMUP,
                   help="epochs over which the GAN weight ramps up linearly from 0 (default %(default)s)")
    p.add_argument("--disc-every", type=int, default=DISC_EVERY,
                   help="step the discriminator every K generator steps (default %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=LABEL_SMOOTHING,
                   help="the discriminator's label for real pairs is 1 - this, in [0, 0.5) (default %(default)s)")
    p.add_argument("--dropout", type=float, default=DROPOUT,
                   help="dropout rate of the decoder's 3 deepest blocks in training, in [0, 1) (default %(default)s)")
    p.add_argument("--ema-decay", type=float, default=EMA_DECAY,
                   help="validate and export an exponential moving average of the generator's weights with "
                        "this decay per step, in [0, 1); 0 = off (default %(default)s)")
    p.add_argument("--lr-decay", choices=("none", "cosine"), default=LR_DECAY,
                   help="cosine: every epoch's learning rates are the set ones x 0.5 (1 + cos(pi epoch / epochs)), "
                        "epoch counted from 0 (default %(default)s)")
    p.add_argument("--noise-augment", type=float, default=NOISE_AUGMENT,
                   help="training only: add uncorrelated noise hits to each training event, on a fraction of its "
                        "cells drawn in 0..this per event, in [0, 1); 0 = off (default %(default)s)")
    p.add_argument("--beside-augment", type=float, default=BESIDE_AUGMENT,
                   help="training only: on this share of the training events, add one superlayer's track hits "
                        "copied a few wires aside as background, in [0, 1); 0 = off (default %(default)s)")
    p.add_argument("--mix-tracks", type=float, default=MIX_TRACKS,
                   help="training only: on this share of the training events, add another training event's "
                        "track hits to both raw and truth, in [0, 1); 0 = off (default %(default)s)")
    p.add_argument("--mix-background", type=float, default=MIX_BACKGROUND,
                   help="training only: on this share of the training events, add another training event's "
                        "background hits to the raw image, in [0, 1); 0 = off (default %(default)s)")
    p.add_argument("--bend-augment", type=float, default=BEND_AUGMENT,
                   help="training only: on this share of the training events, move each layer's hits along the "
                        "wires by a tilt and a bend drawn per event (tracks of other slopes and curvatures), in "
                        "[0, 1); 0 = off (default %(default)s)")
    p.add_argument("--pixel-loss", choices=("l1", "bce"), default=PIXEL_LOSS,
                   help="the generator's per-pixel term, with the --hit-weight weights: l1, or bce (the "
                        "output as a hit probability, the truth as its label) (default %(default)s)")
    p.add_argument("--collapse-drop", type=float, default=COLLAPSE_DROP,
                   help="flag (log, history.csv's collapse) an epoch whose validation F1 is more than this below "
                        "the best so far (default %(default)s)")


def parse_args(argv=None):
    """The command line's settings, range-checked (InputError)."""
    parser = build_parser()
    s = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "base_filters", "sample_events", "keep_checkpoints"):
        if getattr(s, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(s, name)}")
    for name in ("steps_per_epoch", "validation_batches", "checkpoint_every", "logical_cpus", "split_seed",
                 "gan_warmup", "gan_weight", "collapse_drop"):
        if getattr(s, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must not be negative, not {getattr(s, name)}")
    if s.disc_every < 1:
        raise InputError(f"--disc-every must be at least 1, not {s.disc_every}")
    for name in ("noise_augment", "beside_augment", "mix_tracks", "mix_background", "bend_augment", "dropout",
                 "beta_1", "ema_decay"):
        if not 0 <= getattr(s, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be in [0, 1), not {getattr(s, name)}")
    if not 0 <= s.label_smoothing < 0.5:
        raise InputError(f"--label-smoothing must be in [0, 0.5), not {s.label_smoothing}")
    if not 0 < s.tracks_kept <= 1:
        raise InputError(f"--tracks-kept must be in (0, 1], not {s.tracks_kept}")
    if problem := pix2pix_model.validation_problem(s.validation_background, s.validation_draws, s.batch_size):
        raise InputError(problem)
    s.validation_draws = pix2pix_model.draws_that_fit(s.validation_background, s.validation_draws, s.batch_size)
    if not s.shift_average < ei.WIRES:
        raise InputError(f"--shift-average must be below {ei.WIRES} wires, not {s.shift_average}")
    for name in ("hit_weight", "generator_lr", "discriminator_lr"):
        if not getattr(s, name) > 0:
            raise InputError(f"--{name.replace('_', '-')} must be positive, not {getattr(s, name)}")
    if s.lam == 0 and s.gan_weight == 0:
        raise InputError("--lambda 0 with --gan-weight 0 leaves the generator no loss to learn from")
    unused = [f"--{name.replace('_', '-')}" for name in GAN_ONLY if getattr(s, name) != parser.get_default(name)]
    if s.gan_weight == 0 and unused:
        warn(f"{', '.join(unused)}: no effect without the GAN term (--gan-weight 0: no discriminator is built)")
    return s


def main(argv=None):
    """Train from the command line."""
    catch_stop_signals()
    s = parse_args(argv)
    try:
        train(s)
    except tf.errors.ResourceExhaustedError as exc:  # a width or batch too large for the device's memory
        detail = exc.message[exc.message.find("OOM"):].splitlines()[0][:120]  # past TensorFlow's node name
        raise InputError(f"out of memory ({detail}); give a smaller --base-filters or --batch-size") from None
    except tf.errors.OpError as exc:  # the data pipeline's reader refused its input (a damaged HDF5 file)
        if (error := raised_input_error(exc.message)) is None:
            raise
        raise error from None
    return 0


if __name__ == "__main__":
    run_main(main)
