"""Train the Pix2Pix model under Keras' JAX backend: for a GPU machine that has JAX but no TensorFlow.

The project trains with Pix2Pix_training.py (TensorFlow). Some GPU machines (this team's lent H100s, for
one) carry JAX and not TensorFlow; this script lets them train the same model to measure what the
full-width (BASE_FILTERS 64) generator reaches. It shares with the real trainer everything that decides
the result: the generator, discriminator and losses (pix2pix_model.py), the default recipe (no GAN term,
Adam 1e-3, beta_1 0.5, extra noise hits in the training batches), the levers --lr-decay,
--beside-augment, --mix-tracks, --mix-background, --bend-augment, --pixel-loss, --mirror-average and
--shift-average with its defaults (cosine, 0.5, 0.5, off, off, bce, off, off; pix2pix_model's beside_segments,
mixed_tracks, mixed_background, bent_events, lr_factor, generator_loss and view_averaged), batch 16, the hit-weighted
pixel loss (raw hits weighted too), the raw-hit gate at validation, and the threshold and best epoch
chosen on the validation split by --threshold-criterion (tracks: with the file's track ids),
--tracks-kept and --validation-background (pix2pix_model's validate and epoch_rank). It does not
checkpoint, resume, distribute or export a .keras file.

Input: the project's HDF5 file and the split data_management.py saved beside it (NAME.split.npz; run
`python data_management.py --data FILE` first). Output, in OUTPUT_DIR: history.csv (losses and validation
scores per epoch, as it goes) and, at the end, best.json (epoch, threshold, scores) and
test_probabilities.npz: the best epoch's gated output of the test split, float16 (N_test, 36, 112), the
largest channel per detector cell (compressed: the gate zeroes ~97 % of the cells), and the same for the
test split of each --also-score file (test_probabilities_STEM.npz).
bench/score_probabilities.py scores that file against the baselines.

    KERAS_BACKEND=jax python bench/train_jax.py --data data/pairs.h5 --output-dir runs/jax64 --seconds 300
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import event_image as ei  # noqa: E402
import pix2pix_model as pm  # noqa: E402
from script_utils import check_output_folder, run_main  # noqa: E402

# ----------------------------------------------------------------------------------------------
DATA = "data/pairs.h5"
OUTPUT_DIR = "runs/jax"
EPOCHS = 200  # at most; SECONDS usually ends the run first
SECONDS = 300.0  # no new epoch starts after this many seconds of training
BATCH_SIZE = pm.BATCH_SIZE  # Pix2Pix_training's
BASE_FILTERS = pm.BASE_FILTERS  # the model's own defaults: 64, 100, 10
LAMBDA = pm.LAMBDA
HIT_WEIGHT = pm.HIT_WEIGHT
WEIGHT_RAW_HITS = True
LEARNING_RATE = 1e-3  # generator and discriminator (Pix2Pix_training's defaults)
BETA_1 = 0.5
GAN_WEIGHT = 0.0  # weight of the GAN term; 0 (the default) = the weighted L1 alone, no discriminator run or stepped
NOISE_AUGMENT = pm.NOISE_AUGMENT  # extra noise hits on 0..this of each training event's cells (Pix2Pix_training's)
BESIDE_AUGMENT = pm.BESIDE_AUGMENT  # share of training events given a segment beside a track (Pix2Pix_training's)
MIX_TRACKS = pm.MIX_TRACKS  # share of training events given the batch's previous event's tracks (Pix2Pix_training's)
BEND_AUGMENT = pm.BEND_AUGMENT  # share of training events whose layers move by a tilt and a bend (Pix2Pix_training's)
MIRROR_AVERAGE = pm.MIRROR_AVERAGE  # validate and score the output averaged with the mirrored event's (as there)
SHIFT_AVERAGE = pm.SHIFT_AVERAGE  # wires: and with the event's moved so far along its layers (0 = off; as there)
MIX_BACKGROUND = pm.MIX_BACKGROUND  # share of training events given the next event's background (Pix2Pix_training's)
LR_DECAY = pm.LR_DECAY  # none | cosine: the learning rate of each epoch, as Pix2Pix_training's --lr-decay
PIXEL_LOSS = pm.PIXEL_LOSS  # l1 | bce: the generator's per-pixel term, as Pix2Pix_training's --pixel-loss
THRESHOLD_CRITERION = pm.THRESHOLD_CRITERION  # balanced | f1 | tracks, as Pix2Pix_training's --threshold-criterion
TRACKS_KEPT = pm.TRACKS_KEPT  # tracks: the share of reconstructable tracks the threshold keeps (--tracks-kept)
VALIDATION_BACKGROUND = pm.VALIDATION_BACKGROUND  # validation events carry N events' background (as there)
VALIDATION_DRAWS = pm.VALIDATION_DRAWS  # ... each under D other events' backgrounds in turn (as there)
SEED = 1
PRECISION = "mixed_bfloat16"  # a Keras dtype policy: mixed_bfloat16 | float32
# ----------------------------------------------------------------------------------------------
SCORED = ("val_l1", "threshold", "efficiency", "rejection", "purity", "f1")  # validation scores kept per epoch
TRACKING_SCORED = ("tracks_kept", "fake_segments_per_event")  # and these under the tracks criterion


def load_pairs(h5_path, track_ids=False):
    """(raw, truth, track ids or None) uint8 arrays of each split, from the file and its saved split; the
    track ids only when asked for and the file has them."""
    split_path = Path(h5_path).with_suffix(".split.npz")
    if not split_path.is_file():
        raise SystemExit(f"{split_path}: no saved split; run `python data_management.py --data {h5_path}` first")
    split = np.load(split_path)
    with h5py.File(h5_path, "r") as f:
        raw, truth = f["raw"][:], f["truth"][:]
        ids = f["track_ids"][:] if track_ids and "track_ids" in f else None
    return {name: (raw[split[name]], truth[split[name]], None if ids is None else ids[split[name]])
            for name in ("train", "validation", "test")}


def with_noise_hits(raw, most, key):
    """raw with uncorrelated noise hits on a fraction of each event's cells drawn in 0..most per event:
    Pix2Pix_training's --noise-augment (pix2pix_trainer.with_noise_hits), with JAX's random numbers."""
    fraction_key, cells_key = jax.random.split(key)
    fraction = most * jax.random.uniform(fraction_key, (raw.shape[0], 1, 1, 1))
    lit = jax.random.uniform(cells_key, raw.shape[:3] + (1,)) < fraction
    return jnp.maximum(raw, lit.astype(raw.dtype) * pm.EVENT_CELLS)


def make_train_step(generator, discriminator, gen_opt, disc_opt, s):
    """The jitted step: both networks' losses from one forward pass, each net's gradient of its own loss.
    --gan-weight 0: the discriminator is neither run nor stepped (its loss 0), as in Pix2Pix_training."""
    gan = s.gan_weight > 0

    def losses(g_tv, d_tv, g_ntv, d_ntv, raw, truth):
        out, g_ntv = generator.stateless_call(g_tv, g_ntv, raw, training=True)
        fake, disc = None, jnp.zeros(())
        if gan:
            real, d_ntv = discriminator.stateless_call(d_tv, d_ntv, [raw, truth], training=True)
            fake, d_ntv = discriminator.stateless_call(d_tv, d_ntv, [raw, out], training=True)
            disc = pm.discriminator_loss(real, fake, s.batch_size)
        gen_total, gen_gan, gen_l1 = pm.generator_loss(fake, out, truth, s.batch_size, s.lam, s.hit_weight,
                                                       raw if s.weight_raw_hits else None, s.gan_weight,
                                                       s.pixel_loss)
        return (gen_total, disc), (gen_gan, gen_l1, g_ntv, d_ntv)

    @jax.jit
    def step(state, raw_u8, truth_u8, key):
        g_tv, g_ntv, d_tv, d_ntv, g_opt_v, d_opt_v = state
        raw, truth = ei.network_input(raw_u8), ei.network_input(truth_u8)
        n = raw.shape[0]  # the extra hits in Pix2Pix_training's order, with JAX's random numbers
        if s.mix_tracks:
            u = jax.random.uniform(jax.random.fold_in(key, 11), (n,))
            raw, truth = pm.mixed_tracks(raw, truth, u, s.mix_tracks)
        if s.bend_augment:
            u = jax.random.uniform(jax.random.fold_in(key, 17), (n, 3))
            raw, truth = pm.bent_events(raw, truth, u, s.bend_augment)
        if s.mix_background:
            u = jax.random.uniform(jax.random.fold_in(key, 13), (n,))
            raw, truth = pm.mixed_background(raw, truth, u, s.mix_background)
        if s.noise_augment:
            raw = with_noise_hits(raw, s.noise_augment, key)
        if s.beside_augment:
            u = jax.random.uniform(jax.random.fold_in(key, 7), (n, 5))
            raw, truth = pm.beside_segments(raw, truth, u, s.beside_augment)
        (gen_total, disc), pullback, (gen_gan, gen_l1, g_ntv, d_ntv) = jax.vjp(
            lambda g, d: losses(g, d, g_ntv, d_ntv, raw, truth), g_tv, d_tv, has_aux=True)
        one, zero = jnp.ones_like(gen_total), jnp.zeros_like(disc)
        g_grads, _ = pullback((one, zero))
        g_tv, g_opt_v = gen_opt.stateless_apply(g_opt_v, g_grads, g_tv)
        if gan:
            _, d_grads = pullback((zero, one))
            d_tv, d_opt_v = disc_opt.stateless_apply(d_opt_v, d_grads, d_tv)
        return (g_tv, g_ntv, d_tv, d_ntv, g_opt_v, d_opt_v), (gen_total, gen_gan, gen_l1, disc)

    return step


def with_learning_rate(optimizer, values, rate):
    """The optimizer's variable values (stateless_apply's) with its learning rate set to rate."""
    return [jnp.asarray(rate, v.dtype) if var.name == "learning_rate" else v
            for var, v in zip(optimizer.variables, values, strict=True)]


def learning_rate(optimizer, values):
    """The learning rate held in the optimizer's variable values (the one the epoch's steps used)."""
    return next(float(v) for var, v in zip(optimizer.variables, values, strict=True) if var.name == "learning_rate")


def make_predict(generator, mirror=False, shift=0):
    """Jitted inference (batch norm's moving statistics, no dropout), gated by the raw hits; averaged with the
    mirrored event's (mirror) and the event's moved `shift` wires (pix2pix_model.view_averaged, as Pix2Pix_training)."""

    @jax.jit
    def predict(g_tv, g_ntv, raw):
        def gated(images):
            out, _ = generator.stateless_call(g_tv, g_ntv, images, training=False)
            return out * (jnp.max(images, axis=-1, keepdims=True) > ei.SCALED_HIT_THRESHOLD).astype(out.dtype)

        return pm.view_averaged(gated, raw, mirror, shift)

    return predict


def batches(raw_u8, truth_u8, size=64):
    """(raw, truth) float32 0/1 batches (event_image.network_input) in order, the last one short."""
    for i in range(0, len(raw_u8), size):
        yield ei.network_input(raw_u8[i:i + size]), ei.network_input(truth_u8[i:i + size])


def test_probabilities(predict_params, raw_u8):
    """(N, 36, 112) float16: the largest output channel of each detector cell (as Pix2Pix_denoise)."""
    probs = [ei.crop_event(np.asarray(predict_params(ei.network_input(raw_u8[i:i + 64])))).max(axis=-1)
             for i in range(0, len(raw_u8), 64)]
    return np.concatenate(probs).astype(np.float16)


def run_epoch(step, state, train, order, noise_key, steps_before):
    """One epoch's steps over order's batches (rows of training indices) of train (raw, truth on the device):
    the new state and the losses summed over the epoch. Step k of the run draws its noise hits from key k."""
    sums = jnp.zeros(4)
    for k, idx in enumerate(order, steps_before + 1):
        idx = jnp.asarray(idx)
        key = jax.random.fold_in(noise_key, k)  # the batch's noise hits (--noise-augment)
        state, losses = step(state, train[0][idx], train[1][idx], key)
        sums = sums + jnp.stack(losses)  # summed on the device: no wait for each step
    return state, np.asarray(sums, np.float64)


def validate_epoch(s, predict_params, validation):
    """pix2pix_model.validate's scores of the validation split (raw, truth, track ids or None; uint8) in
    batches of --batch-size, with the run's --threshold-criterion, --tracks-kept, --validation-background and
    --validation-draws."""
    raw, truth, ids = validation
    return pm.validate(predict_params, batches(raw, truth, s.batch_size), criterion=s.threshold_criterion,
                       track_ids=ids, tracks_kept=s.tracks_kept, background=s.validation_background,
                       draws=s.validation_draws)[0]


def optimizers_and_state(generator, discriminator, s):
    """Both Adam optimizers, built, and the training state: the values of the two networks' and the
    two optimizers' variables, as the jitted step takes and returns them."""
    gen_opt = keras.optimizers.Adam(s.learning_rate, beta_1=s.beta_1)
    disc_opt = keras.optimizers.Adam(s.learning_rate, beta_1=s.beta_1)
    gen_opt.build(generator.trainable_variables)
    disc_opt.build(discriminator.trainable_variables)
    values = lambda variables: [v.value for v in variables]
    state = (values(generator.trainable_variables), values(generator.non_trainable_variables),
             values(discriminator.trainable_variables), values(discriminator.non_trainable_variables),
             values(gen_opt.variables), values(disc_opt.variables))
    return gen_opt, disc_opt, state


def write_best(s, when, validation, predict_params, test_raws):
    """The best epoch's best.json and outputs of each test split (test_probabilities{SUFFIX}.npz)."""
    out = Path(s.output_dir)
    for suffix, raw in test_raws.items():
        probabilities = test_probabilities(predict_params, raw)
        np.savez_compressed(out / f"test_probabilities{suffix}.npz", probabilities=probabilities)
    best = {**when, "base_filters": s.base_filters, "validation": validation, "settings": vars(s),
            "test_indices_from": str(Path(s.data).with_suffix(".split.npz"))}
    (out / "best.json").write_text(json.dumps(best, indent=2))


def train(s):
    """Train for s.epochs or s.seconds, write history.csv, best.json and the best epoch's test outputs."""
    out = Path(s.output_dir)
    check_output_folder(out, s.overwrite)  # another run's history.csv and best.json are not cut or mixed in
    out.mkdir(parents=True, exist_ok=True)
    keras.mixed_precision.set_dtype_policy(s.precision)
    keras.utils.set_random_seed(s.seed)
    data = load_pairs(s.data, track_ids=s.threshold_criterion == "tracks")
    (train_raw, train_truth, _), validation, test_raw = data["train"], data["validation"], data["test"][0]
    also = {Path(h5).stem: load_pairs(h5)["test"][0] for h5 in s.also_score}  # other files' test splits
    if s.threshold_criterion == "tracks" and validation[2] is None:
        print(f"note: {s.data} has no track_ids: the threshold criterion counts each validation event's truth "
              "as one track", flush=True)
    print(f"{jax.devices()[0].device_kind}: train {len(train_raw)}, validation {len(validation[0])} x "
          f"{s.validation_draws} draw(s), test {len(test_raw)} pairs; width {s.base_filters}, {s.precision}",
          flush=True)

    generator, discriminator = pm.build_generator(s.base_filters), pm.build_discriminator(s.base_filters)
    gen_opt, disc_opt, state = optimizers_and_state(generator, discriminator, s)
    step = make_train_step(generator, discriminator, gen_opt, disc_opt, s)
    predict = make_predict(generator, s.mirror_average, s.shift_average)
    train_raw_d, train_truth_d = jax.device_put(train_raw), jax.device_put(train_truth)  # uint8, on the device
    rng, noise_key = np.random.default_rng(s.seed), jax.random.key(s.seed)
    steps_per_epoch = len(train_raw) // s.batch_size

    scored = SCORED + (TRACKING_SCORED if s.threshold_criterion == "tracks" else ())
    fields = ["epoch", "step", "gen_total", "gen_gan", "gen_l1", "disc", *scored, "learning_rate", "seconds",
              "images_per_s"]
    history = (out / "history.csv").open("w", newline="")
    writer = csv.DictWriter(history, fields)
    writer.writeheader()
    best, started, total_steps = None, time.perf_counter(), 0
    for epoch in range(1, s.epochs + 1):
        if time.perf_counter() - started > s.seconds:
            print(f"time limit ({s.seconds:.0f} s) reached after {epoch - 1} epochs", flush=True)
            break
        t0 = time.perf_counter()
        rate = s.learning_rate * pm.lr_factor(s.lr_decay, epoch - 1, s.epochs)
        state = (*state[:4], with_learning_rate(gen_opt, state[4], rate), with_learning_rate(disc_opt, state[5], rate))
        order = rng.permutation(len(train_raw))[:steps_per_epoch * s.batch_size].reshape(steps_per_epoch, -1)
        state, sums = run_epoch(step, state, (train_raw_d, train_truth_d), order, noise_key, total_steps)
        total_steps += len(order)
        seconds = time.perf_counter() - t0
        predict_params = lambda raw, st=state: predict(st[0], st[1], jnp.asarray(raw))
        scores = validate_epoch(s, predict_params, validation)
        row = {"epoch": epoch, "step": total_steps, **dict(zip(fields[2:6], sums / steps_per_epoch, strict=True)),
               **{k: scores[k] for k in scored}, "learning_rate": learning_rate(gen_opt, state[4]),
               "seconds": round(seconds, 2),
               "images_per_s": round(steps_per_epoch * s.batch_size / seconds, 1)}
        writer.writerow(row)
        history.flush()
        print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
        rank = pm.epoch_rank(row, s.threshold_criterion, s.tracks_kept)
        if best is None or rank > best[0]:  # the state's arrays are kept, not copied: the step makes new ones
            best = (rank, {k: row[k] for k in ("epoch", "step", "threshold")}, {k: scores[k] for k in scored},
                    predict_params)
    history.close()
    if best is None:
        raise SystemExit("no epoch ran (--seconds): no best.json or test outputs written")
    write_best(s, *best[1:], {"": test_raw, **{f"_{stem}": raw for stem, raw in also.items()}})
    print(f"best epoch {best[1]['epoch']} ({s.threshold_criterion}); {out / 'best.json'}, "
          f"{out / 'test_probabilities.npz'}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # shows each default
    p.add_argument("--data", default=DATA, help="the project's HDF5 file (its NAME.split.npz beside it)")
    p.add_argument("--overwrite", action="store_true", help="write into a --output-dir that is not empty")
    p.add_argument("--output-dir", default=OUTPUT_DIR, help="the run's folder")
    p.add_argument("--also-score", nargs="*", default=[], metavar="H5",
                   help="other HDF5 files (each with its saved split): the best epoch's outputs of their test "
                        "splits go to test_probabilities_STEM.npz (e.g. events at another luminosity)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="epochs at most (see --seconds)")
    p.add_argument("--seconds", type=float, default=SECONDS, help="no epoch starts after this much training time")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="events per step")
    p.add_argument("--base-filters", type=int, default=BASE_FILTERS, help="the U-Net's width")
    p.add_argument("--lambda", dest="lam", type=float, default=LAMBDA, help="L1 weight")
    p.add_argument("--lam", dest="lam", type=float, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old name
    p.add_argument("--hit-weight", type=float, default=HIT_WEIGHT, help="weight of the truth's hit pixels")
    p.add_argument("--weight-raw-hits", action=argparse.BooleanOptionalAction, default=WEIGHT_RAW_HITS,
                   help="weight the raw hits' pixels as Pix2Pix_training.py does")
    p.add_argument("--learning-rate", type=float, default=LEARNING_RATE, help="Adam's")
    p.add_argument("--beta-1", type=float, default=BETA_1, help="Adam's")
    p.add_argument("--gan-weight", type=float, default=GAN_WEIGHT,
                   help="weight of the GAN term; 0 trains the generator on the weighted L1 alone")
    p.add_argument("--noise-augment", type=float, default=NOISE_AUGMENT,
                   help="extra noise hits on a fraction of each training event's cells drawn in 0..this (0 = off)")
    p.add_argument("--beside-augment", type=float, default=BESIDE_AUGMENT,
                   help="share of training events given one superlayer's track hits copied aside as background")
    p.add_argument("--mix-tracks", type=float, default=MIX_TRACKS,
                   help="share of training events given the batch's previous event's track hits (raw and truth)")
    p.add_argument("--mix-background", type=float, default=MIX_BACKGROUND,
                   help="share of training events given the batch's next event's background hits (raw only)")
    p.add_argument("--bend-augment", type=float, default=BEND_AUGMENT,
                   help="share of training events whose layers move along the wires by a tilt and a bend")
    p.add_argument("--mirror-average", action=argparse.BooleanOptionalAction, default=MIRROR_AVERAGE,
                   help="validate and score the output averaged with the mirrored event's, as Pix2Pix_training's")
    p.add_argument("--shift-average", type=int, default=SHIFT_AVERAGE, metavar="WIRES",
                   help="the same with the event moved WIRES wires along its layers (0 = off), as Pix2Pix_training's")
    p.add_argument("--lr-decay", choices=("none", "cosine"), default=LR_DECAY,
                   help="cosine: each epoch's learning rate is the set one x 0.5 (1 + cos(pi epoch / --epochs))")
    p.add_argument("--pixel-loss", choices=("l1", "bce"), default=PIXEL_LOSS,
                   help="the generator's per-pixel term with the hit weights: l1, or bce (the output a hit "
                        "probability, the truth its label)")
    p.add_argument("--threshold-criterion", choices=("balanced", "f1", "tracks"), default=THRESHOLD_CRITERION,
                   help="how validation chooses the threshold and the best epoch, as Pix2Pix_training's")
    p.add_argument("--tracks-kept", type=float, default=TRACKS_KEPT,
                   help="tracks criterion: the share of reconstructable tracks the threshold must keep")
    p.add_argument("--validation-background", type=int, default=VALIDATION_BACKGROUND, metavar="N",
                   help="validation events carry their own and the next N - 1 events' background (1 to --batch-size)")
    p.add_argument("--validation-draws", type=int, default=VALIDATION_DRAWS, metavar="D",
                   help="each validation event validated D times under other events' background (with N >= 2; "
                        "at most (--batch-size - 1) / (N - 1) times)")
    p.add_argument("--seed", type=int, default=SEED, help="the initialisation and the batches' order")
    p.add_argument("--precision", default=PRECISION, choices=("mixed_bfloat16", "float32"), help="Keras' dtype policy")
    s = p.parse_args(argv)
    if problem := pm.validation_problem(s.validation_background, s.validation_draws, s.batch_size):
        p.error(problem)
    s.validation_draws = pm.draws_that_fit(s.validation_background, s.validation_draws, s.batch_size)
    if not 0 <= s.shift_average < ei.WIRES:
        p.error(f"--shift-average must be 0 to {ei.WIRES - 1} wires, not {s.shift_average}")
    return s


if __name__ == "__main__":
    run_main(lambda argv: train(parse_args(argv)))
