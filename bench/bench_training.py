"""Benchmark of Pix2Pix_training.py's train step, and the quality checks behind its defaults.

1. Speed (default): the train step at batch 32 and the default width, against a faithful copy of
   the TensorFlow pix2pix tutorial's model and train step adapted to 128x128 (below, float32, tanh
   output, as the tutorial has it), on the same random batch in the same process. Every choice is
   timed: the tutorial step in float32 (the baseline) and under mixed_bfloat16, the project's step
   (the default recipe: the generator alone) in float32, in mixed bfloat16 (what MIXED_PRECISION="auto"
   picks on a CPU with bf16 units), with the GAN term (generator and discriminator, as the tutorial's)
   and with XLA (jit_compile). Then seconds per epoch of 10,000 pairs at BASE_FILTERS 64, 32 and 16.
2. Quality (--quality): short trainings on synthetic events (make_events.generate_events) with
   the real script's train(): float32 against bfloat16 over the same number of steps, and plain
   L1 (--hit-weight 1) against the hit-weighted L1 (the sparsity problem: a blank output), all with
   --pixel-loss l1 (the default is the cross-entropy).

    python bench/bench_training.py                  # speed, a few minutes on 2 cores
    python bench/bench_training.py --quality        # quality, ~10 minutes at width 16
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import Pix2Pix_training as pt  # noqa: E402  (imports TensorFlow quietly)
from Pix2Pix_training import keras, tf  # noqa: E402

BATCH = 32
WIDTH = 64
TIMED_STEPS = 5  # after 2 warm-up steps (tracing)
EPOCH_PAIRS = 10_000
QUALITY_EVENTS = 3000
QUALITY_WIDTH = 16
QUALITY_EPOCHS = 8
TUTORIAL_LAMBDA = 100


# --- The tutorial's model and step, adapted to 128x128 (7 down, 6 up), written here ---------------
def tutorial_down(filters, size, apply_batchnorm=True):
    """The tutorial's encoder block (LeakyReLU at its default slope)."""
    block = keras.Sequential()
    block.add(keras.layers.Conv2D(filters, size, strides=2, padding="same",
                                  kernel_initializer=tf.random_normal_initializer(0.0, 0.02), use_bias=False))
    if apply_batchnorm:
        block.add(keras.layers.BatchNormalization())
    block.add(keras.layers.LeakyReLU())
    return block


def tutorial_up(filters, size, apply_dropout=False):
    """The tutorial's decoder block."""
    block = keras.Sequential()
    block.add(keras.layers.Conv2DTranspose(filters, size, strides=2, padding="same",
                                           kernel_initializer=tf.random_normal_initializer(0.0, 0.02),
                                           use_bias=False))
    block.add(keras.layers.BatchNormalization())
    if apply_dropout:
        block.add(keras.layers.Dropout(0.5))
    block.add(keras.layers.ReLU())
    return block


def tutorial_generator():
    """The tutorial's U-Net with one level less (128x128), tanh output."""
    inputs = keras.layers.Input(shape=[128, 128, 3])
    downs = [tutorial_down(64, 4, False), tutorial_down(128, 4), tutorial_down(256, 4), tutorial_down(512, 4),
             tutorial_down(512, 4), tutorial_down(512, 4), tutorial_down(512, 4)]
    ups = [tutorial_up(512, 4, True), tutorial_up(512, 4, True), tutorial_up(512, 4, True), tutorial_up(256, 4),
           tutorial_up(128, 4), tutorial_up(64, 4)]
    # dtype float32: a no-op in float32; under a mixed policy the Keras guide's recipe (float32 outputs).
    last = keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh",
                                        kernel_initializer=tf.random_normal_initializer(0.0, 0.02), dtype="float32")
    x, skips = inputs, []
    for down in downs:
        x = down(x)
        skips.append(x)
    for up, skip in zip(ups, reversed(skips[:-1]), strict=True):
        x = keras.layers.Concatenate()([up(x), skip])
    return keras.Model(inputs=inputs, outputs=last(x))


def tutorial_discriminator():
    """The tutorial's PatchGAN."""
    init = tf.random_normal_initializer(0.0, 0.02)
    inp = keras.layers.Input(shape=[128, 128, 3], name="input_image")
    tar = keras.layers.Input(shape=[128, 128, 3], name="target_image")
    x = keras.layers.concatenate([inp, tar])
    x = tutorial_down(256, 4)(tutorial_down(128, 4)(tutorial_down(64, 4, False)(x)))
    x = keras.layers.Conv2D(512, 4, strides=1, kernel_initializer=init, use_bias=False)(keras.layers.ZeroPadding2D()(x))
    x = keras.layers.LeakyReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(1, 4, strides=1, kernel_initializer=init, dtype="float32")(keras.layers.ZeroPadding2D()(x))
    return keras.Model(inputs=[inp, tar], outputs=x)


def tutorial_train_step_fn():
    """The tutorial's losses, optimizers and @tf.function train step (without its summary writer)."""
    generator, discriminator = tutorial_generator(), tutorial_discriminator()
    loss_object = keras.losses.BinaryCrossentropy(from_logits=True)
    gen_opt, disc_opt = keras.optimizers.Adam(2e-4, beta_1=0.5), keras.optimizers.Adam(2e-4, beta_1=0.5)

    def generator_loss(disc_generated_output, gen_output, target):
        gan_loss = loss_object(tf.ones_like(disc_generated_output), disc_generated_output)
        l1_loss = tf.reduce_mean(tf.abs(target - gen_output))
        return gan_loss + TUTORIAL_LAMBDA * l1_loss, gan_loss, l1_loss

    def discriminator_loss(disc_real_output, disc_generated_output):
        real = loss_object(tf.ones_like(disc_real_output), disc_real_output)
        generated = loss_object(tf.zeros_like(disc_generated_output), disc_generated_output)
        return real + generated

    @tf.function
    def train_step(input_image, target, step):
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            gen_output = generator(input_image, training=True)
            disc_real_output = discriminator([input_image, target], training=True)
            disc_generated_output = discriminator([input_image, gen_output], training=True)
            gen_total_loss, gen_gan_loss, gen_l1_loss = generator_loss(disc_generated_output, gen_output, target)
            disc_loss = discriminator_loss(disc_real_output, disc_generated_output)
        gen_grads = gen_tape.gradient(gen_total_loss, generator.trainable_variables)
        disc_grads = disc_tape.gradient(disc_loss, discriminator.trainable_variables)
        gen_opt.apply_gradients(zip(gen_grads, generator.trainable_variables, strict=True))
        disc_opt.apply_gradients(zip(disc_grads, discriminator.trainable_variables, strict=True))
        return gen_total_loss, disc_loss

    return lambda raw, truth: train_step(raw, truth, tf.constant(0, tf.int64))


# --- The project's step ----------------------------------------------------------------------------
def project_train_step_fn(width, precision, jit=False, gan=False):
    """Pix2Pix_training's Trainer (default strategy), its step (Trainer.step_batch) fed one (raw, truth) batch.

    gan=False: the default recipe, the generator alone (no discriminator is built); gan=True: with the GAN term
    (--gan-weight 1), the generator and the discriminator each stepped, as the tutorial's step does."""
    args = ["--base-filters", str(width), "--batch-size", str(BATCH)] + (["--gan-weight", "1"] if gan else [])
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16"}[precision]
    with pt.dtype_policy(policy):
        trainer = pt.Trainer(pt.parse_args(args), tf.distribute.get_strategy(), precision)
    if jit:
        compiled = tf.function(lambda batch: trainer._train_step(batch, gan), jit_compile=True)
        trainer.train_step, trainer.generator_step = (compiled, trainer.generator_step) if gan else \
            (trainer.train_step, compiled)
    return lambda raw, truth: trainer.step_batch((raw, truth))


def random_batch(seed=0):
    """A batch of sparse synthetic-looking pairs: ~1 % lit raw pixels, half of them truth."""
    rng = np.random.default_rng(seed)
    raw = (rng.random((BATCH, 128, 128, 1)) < 0.01).astype(np.float32).repeat(3, -1)
    truth = raw * (rng.random((BATCH, 128, 128, 1)) < 0.5)
    return tf.constant(raw), tf.constant(truth)


def time_step(step, batch, timed=TIMED_STEPS):
    """Median seconds per step after two warm-up calls (the first one traces)."""
    return time_steps({"step": step}, batch, timed)["step"]


def time_steps(steps, batch, timed=TIMED_STEPS):
    """Median seconds per step of each variant, timed in interleaved rounds (A B C A B C ...), so that
    a change of load on the machine (other processes) falls on all variants alike."""
    for step in steps.values():
        for _ in range(2):  # the first call traces
            [float(v) for v in step(*batch)]
    times = {name: [] for name in steps}
    for _ in range(timed):
        for name, step in steps.items():
            t0 = time.perf_counter()
            [float(v) for v in step(*batch)]  # reading the losses waits for the step
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def speed(args):
    """Images per second of each variant and the ratio to the tutorial's float32 step."""
    batch = random_batch()
    t0 = time.perf_counter()
    steps = {"tutorial step, float32 (baseline)": tutorial_train_step_fn()}
    with pt.dtype_policy("mixed_bfloat16"):
        steps["tutorial step, mixed_bfloat16"] = tutorial_train_step_fn()
    steps["project step, float32"] = project_train_step_fn(args.width, "float32")
    steps["project step, mixed bfloat16 (auto here)"] = project_train_step_fn(args.width, "bfloat16")
    steps["project step + GAN term (G and D), mixed bfloat16"] = project_train_step_fn(args.width, "bfloat16",
                                                                                       gan=True)
    if not args.skip_xla:
        steps["project step, mixed bfloat16 + XLA jit_compile"] = project_train_step_fn(args.width, "bfloat16",
                                                                                        jit=True)
    print("(the project's step: the default recipe, the generator alone; the tutorial's and the GAN term's step "
          "train the generator and the discriminator)")
    print(f"Train step, batch {BATCH}, 128x128x3, width {args.width}: median of {args.timed_steps} interleaved "
          f"rounds after 2 warm-up steps each", flush=True)
    results = time_steps(steps, batch, args.timed_steps)
    print(f"(built, traced and timed in {time.perf_counter() - t0:.0f} s)")
    base = results["tutorial step, float32 (baseline)"]
    for name, seconds in results.items():
        print(f"  {name:<48} {seconds:6.3f} s/step {BATCH / seconds:6.1f} images/s  {base / seconds:5.2f}x")
    auto = pt.choose_precision("auto")
    print(f"MIXED_PRECISION='auto' picks {auto} on this machine")

    print(f"\nSeconds per epoch of {EPOCH_PAIRS:,} pairs (batch {BATCH}, {auto}, from measured step times):")
    for width in (64, 32, 16):
        seconds = (results["project step, mixed bfloat16 (auto here)"] if width == args.width and auto == "bfloat16"
                   else time_step(project_train_step_fn(width, auto if auto != "float16" else "float32"), batch,
                                  args.timed_steps))
        epoch = EPOCH_PAIRS / BATCH * seconds
        print(f"  BASE_FILTERS {width:>2}: {seconds:6.3f} s/step, {epoch:7.0f} s/epoch ({epoch / 60:.1f} min)",
              flush=True)


# --- Quality -------------------------------------------------------------------------------------
def make_h5(path, n, seed):
    """An HDF5 file of n synthetic (raw, truth) pairs from make_events, padded to 128x128."""
    import h5py

    import event_image as ei
    import make_events

    raw, truth = make_events.generate_events(n, seed=seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=ei.pad_event(raw), chunks=(32, 128, 128, 3), compression="gzip")
        f.create_dataset("truth", data=ei.pad_event(truth), chunks=(32, 128, 128, 3), compression="gzip")
        f.create_dataset("names", data=np.array([f"event_{i:06d}" for i in range(n)], dtype="S"))


def quality(args):
    """Train the same steps with each setting; print the final validation scores side by side."""
    folder = Path(tempfile.mkdtemp(prefix="bench_training_"))
    data = folder / "events.h5"
    make_h5(data, args.events, seed=11)
    common = ["--data", data, "--epochs", args.epochs, "--base-filters", args.quality_width,
              "--checkpoint-every", 0, "--sample-events", 2, "--pixel-loss", "l1"]
    runs = [("float32, hit weight 10", ["--mixed-precision", "float32"]),
            ("bfloat16, hit weight 10", ["--mixed-precision", "bfloat16"]),
            ("bfloat16, plain L1 (hit weight 1)", ["--mixed-precision", "bfloat16", "--hit-weight", 1])]
    batch = pt.parse_args([]).batch_size
    print(f"{args.events} synthetic events, width {args.quality_width}, {args.epochs} epochs, batch {batch}, "
          f"the L1 pixel loss; "
          f"runs in {folder}")
    rows = []
    for i, (name, extra) in enumerate(runs):
        t0 = time.time()
        settings = pt.parse_args([str(a) for a in common + extra + ["--output-dir", folder / f"run{i}"]])
        s = pt.train(settings)
        rows.append((name, s, time.time() - t0))
    print(f"\n{'setting':<36} {'thr':>5} {'eff':>6} {'rej':>6} {'pur':>6} {'F1':>6} {'val L1':>8} {'F1@0.5':>7}  time")
    for name, s, seconds in rows:
        print(f"{name:<36} {s['threshold']:5.2f} {s['efficiency']:6.3f} {s['rejection']:6.3f} {s['purity']:6.3f} "
              f"{s['f1']:6.3f} {s['val_l1']:8.5f} {s['f1_by_threshold']['0.5']:7.3f}  {seconds:.0f} s")


def main():
    """Parse the options and run the speed or the quality benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=WIDTH, help="BASE_FILTERS of the speed test (default %(default)s)")
    p.add_argument("--timed-steps", type=int, default=TIMED_STEPS, help="(default %(default)s)")
    p.add_argument("--skip-xla", action="store_true", help="leave out the XLA variant (slow to compile)")
    p.add_argument("--quality", action="store_true", help="run the quality comparison instead of the speed test")
    p.add_argument("--events", type=int, default=QUALITY_EVENTS, help="quality: events (default %(default)s)")
    p.add_argument("--epochs", type=int, default=QUALITY_EPOCHS, help="quality: epochs (default %(default)s)")
    p.add_argument("--quality-width", type=int, default=QUALITY_WIDTH, help="quality: width (default %(default)s)")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quality(args) if args.quality else speed(args)


if __name__ == "__main__":
    main()
