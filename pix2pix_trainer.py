"""The trainer of Pix2Pix_training.py: the devices, precision and strategy; the models, their
optimizers, the counters and the compiled train and predict steps under that strategy, with the
recipe's levers (--gan-weight, --gan-warmup, --disc-every, --label-smoothing, --ema-decay,
--lr-decay, --pixel-loss, --noise-augment, --beside-augment, --mix-tracks, --mix-background, --bend-augment; the
README's "Training" section); a stop asked for by Ctrl-C or SIGTERM, taken between steps.
"""

import json
import os
import signal
import sys
from pathlib import Path

import data_management
import event_image as ei
from script_utils import STOP_SIGNALS, InputError, import_keras, import_tensorflow

tf = import_tensorflow()  # first, so that its C++ start-up lines stay off stderr
keras = import_keras()

from pix2pix_model import (  # noqa: E402
    EVENT_CELLS,
    IMAGE_SHAPE,
    bent_events,
    beside_segments,
    build_discriminator,
    build_generator,
    discriminator_loss,
    generator_loss,
    lr_factor,
    mixed_background,
    mixed_tracks,
    synchronize_batch_norm,
    view_averaged,
    with_raw_hit_gate,
)


# --- The training batches' noise (--noise-augment) -------------------------------------------------
def with_noise_hits(raw, truth, most, seed):
    """(raw with extra noise hits, truth): uncorrelated hits on a fraction of each event's cells
    drawn in 0..most per event (--noise-augment), the truth unchanged: the model learns to remove
    noise up to several times the training events' own. seed: a stateless seed, shape (2,)."""
    n = tf.shape(raw)[0]
    fraction = most * tf.random.stateless_uniform([n, 1, 1, 1], seed)
    lit = tf.random.stateless_uniform([n, ei.PADDED_SIZE, ei.PADDED_SIZE, 1], seed + 1) < fraction
    return tf.maximum(raw, tf.cast(lit, raw.dtype) * EVENT_CELLS), truth


def with_beside_segments(raw, truth, share, seed):
    """pix2pix_model.beside_segments (--beside-augment) with TensorFlow's stateless random numbers. seed: shape (2,)."""
    return beside_segments(raw, truth, tf.random.stateless_uniform([tf.shape(raw)[0], 5], seed), share)


def with_mixed_tracks(raw, truth, share, seed):
    """pix2pix_model.mixed_tracks (--mix-tracks) with TensorFlow's stateless random numbers. seed: shape (2,)."""
    return mixed_tracks(raw, truth, tf.random.stateless_uniform([tf.shape(raw)[0]], seed), share)


def with_bent_events(raw, truth, share, seed):
    """pix2pix_model.bent_events (--bend-augment) with TensorFlow's stateless random numbers. seed: shape (2,)."""
    return bent_events(raw, truth, tf.random.stateless_uniform([tf.shape(raw)[0], 3], seed), share)


def with_mixed_background(raw, truth, share, seed):
    """pix2pix_model.mixed_background (--mix-background) with stateless random numbers. seed: shape (2,)."""
    return mixed_background(raw, truth, tf.random.stateless_uniform([tf.shape(raw)[0]], seed), share)


def epoch_batches(run, epoch, skip):
    """The epoch's distributed training batches, less the first skip (done before a resume); run: Pix2Pix_training's
    Run (its settings, trainer, split, steps per epoch and training memory)."""
    s, trainer = run.s, run.trainer
    data = (data_management.make_dataset(s.data, run.split["train"], batch_size=trainer.global_batch, shuffle=True,
                                         seed=s.seed, epoch=epoch, drop_remainder=True, memory=run.train_memory)
            .take(run.steps_per_epoch))
    data = augment(data, s, epoch).skip(skip)
    if run.multi_worker:
        options = tf.data.Options()  # several workers: each takes its share of every global batch
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        data = data.with_options(options)
    return trainer.strategy.experimental_distribute_dataset(data)


def augment(data, s, epoch):
    """The training batches with --mix-tracks' hits added, --bend-augment's layers moved, then --mix-background's,
    --noise-augment's and --beside-augment's hits added, seeded by (seed, epoch, batch): a resumed epoch gets
    the same ones."""
    @tf.autograph.experimental.do_not_convert  # plain TensorFlow ops and Python settings: nothing to convert
    def add(i, batch):
        seed = tf.stack([tf.constant(s.seed * 100_003 + epoch, tf.int64), 2 * i])
        if s.mix_tracks:
            batch = with_mixed_tracks(*batch, s.mix_tracks, tf.random.experimental.stateless_fold_in(seed, 11))
        if s.bend_augment:
            batch = with_bent_events(*batch, s.bend_augment, tf.random.experimental.stateless_fold_in(seed, 17))
        if s.mix_background:
            batch = with_mixed_background(*batch, s.mix_background, tf.random.experimental.stateless_fold_in(seed, 13))
        if s.noise_augment:
            batch = with_noise_hits(*batch, s.noise_augment, seed)
        if s.beside_augment:
            batch = with_beside_segments(*batch, s.beside_augment, tf.random.experimental.stateless_fold_in(seed, 7))
        return batch
    on = s.noise_augment or s.beside_augment or s.mix_tracks or s.mix_background or s.bend_augment
    return data.enumerate().map(add) if on else data


# --- Devices, precision, strategy ---------------------------------------------------------------------
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
        try:
            return tf.distribute.MultiWorkerMirroredStrategy(), chief, name
        except tf.errors.UnknownError as exc:  # its TF_CONFIG address cannot be bound: the port is taken
            raise InputError(f"TF_CONFIG: worker {name} could not start its server ({exc.message}); "
                             "is its port in use?") from None
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), True, name
    if not gpus and len(tf.config.list_logical_devices("CPU")) > 1:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        reduce_on_one = tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=reduce_on_one), True, name
    return tf.distribute.get_strategy(), True, name


# --- The trainer: models, optimizers, counters, the compiled steps ----------------------------------
def make_optimizer(learning_rate, beta_1, precision):
    """Adam(learning_rate, beta_1); under float16, wrapped in dynamic loss scaling."""
    opt = keras.optimizers.Adam(learning_rate, beta_1=beta_1)
    return keras.optimizers.LossScaleOptimizer(opt) if precision == "float16" else opt


class Trainer:
    """Models, optimizers, counters and the compiled train and predict steps, under one strategy."""

    def __init__(self, s, strategy, precision):
        self.s, self.strategy, self.precision = s, strategy, precision
        self.global_batch = s.batch_size * strategy.num_replicas_in_sync
        self.gan = s.gan_weight > 0  # --gan-weight 0: no discriminator is built or stepped
        with strategy.scope():
            self.generator = build_generator(s.base_filters, s.dropout)
            self.discriminator = build_discriminator(s.base_filters) if self.gan else None
            self.ema_generator = build_generator(s.base_filters, s.dropout) if s.ema_decay else None
            shown = self.ema_generator or self.generator  # what validation scores and what is exported
            if self.ema_generator is not None:
                self.ema_generator.set_weights(self.generator.get_weights())
            # What validation scores and what is exported: the generator, gated by the raw hits.
            self.inference_model = with_raw_hit_gate(shown) if s.gate_by_raw_hits else shown
            models = [m for m in (self.generator, self.discriminator, self.ema_generator) if m is not None]
            if strategy.num_replicas_in_sync > 1:
                for model in models:
                    synchronize_batch_norm(model)
            self.gen_opt = make_optimizer(s.generator_lr, s.beta_1, precision)
            self.disc_opt = make_optimizer(s.discriminator_lr, s.beta_1, precision) if self.gan else None
            # Build the optimizers' slots now, so that a checkpoint restores into them.
            self.gen_opt.build(self.generator.trainable_variables)
            if self.gan:
                self.disc_opt.build(self.discriminator.trainable_variables)
            counter = lambda dtype, value: tf.Variable(value, dtype=dtype, trainable=False,
                                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.step = counter(tf.int64, 0)  # generator steps done (the discriminator's: disc_steps())
            self.epoch = counter(tf.int64, 0)  # epochs completed
            self.batch_in_epoch = counter(tf.int64, 0)  # batches done in the current epoch
            self.best_f1 = counter(tf.float32, -1.0)  # best validation F1 so far
            self.gan_scale = counter(tf.float32, s.gan_weight)  # this epoch's GAN weight (set_epoch: warm-up)
        # Explicit variable lists: Keras 3 models do not give tf.train.Checkpoint their batch-norm
        # statistics and dropout seed states by themselves; the optimizers track their own.
        parts = {"generator": list(self.generator.variables), "generator_optimizer": list(self.gen_opt.variables)}
        if self.gan:
            parts.update(discriminator=list(self.discriminator.variables),
                         discriminator_optimizer=list(self.disc_opt.variables))
        if self.ema_generator is not None:
            parts["ema_generator"] = list(self.ema_generator.variables)
        self.checkpoint = tf.train.Checkpoint(**parts, step=self.step, epoch=self.epoch,
                                              batch_in_epoch=self.batch_in_epoch, best_f1=self.best_f1)
        # autograph=False: their branches are on Python settings; AutoGraph's source parsing could fail on
        # Python 3.11 (CPython gh-106905, "AST constructor recursion depth mismatch") and warn on stderr.
        self.train_step = tf.function(lambda batch: self._train_step(batch, True), autograph=False)  # G and D
        self.generator_step = tf.function(lambda batch: self._train_step(batch, False), autograph=False)  # G only
        self.update_ema = tf.function(self._update_ema, autograph=False)
        decide = lambda raw: self.inference_model(raw, training=False)  # noqa: E731
        self.predict = tf.function(lambda raw: view_averaged(decide, raw, s.mirror_average, s.shift_average),
                                   autograph=False,
                                   input_signature=[tf.TensorSpec((None,) + IMAGE_SHAPE, tf.float32)])

    def set_epoch(self, epoch):
        """Epoch (0-based)'s GAN weight (ramped up linearly over --gan-warmup epochs) and learning rates."""
        s = self.s
        warm = min(1.0, epoch / s.gan_warmup) if s.gan_warmup else 1.0
        self.gan_scale.assign(s.gan_weight * warm)
        factor = lr_factor(s.lr_decay, epoch, s.epochs)
        self.gen_opt.learning_rate = s.generator_lr * factor
        if self.gan:
            self.disc_opt.learning_rate = s.discriminator_lr * factor

    def disc_steps(self, step):
        """How many discriminator steps go with step generator steps (it steps at 0, K, 2K, ...)."""
        return -(-step // self.s.disc_every) if self.gan else 0

    def step_batch(self, batch):
        """One generator step, with a discriminator step every --disc-every, then the EMA update."""
        step_disc = self.gan and int(self.step.numpy()) % self.s.disc_every == 0
        losses = (self.train_step if step_disc else self.generator_step)(batch)
        if self.ema_generator is not None:
            self.update_ema()
        return losses

    def _update_ema(self):
        """ema = decay x ema + (1 - decay) x weight, for every float variable (batch-norm statistics too)."""
        d = self.s.ema_decay
        for e, v in zip(self.ema_generator.variables, self.generator.variables, strict=True):
            if "float" in str(v.dtype):
                e.assign(d * e + (1.0 - d) * v)

    def _replica_step(self, raw, truth, step_disc):
        """One replica's share of a step: two tapes, as in the tutorial; the discriminator's optional."""
        s = self.s
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            gen_output = self.generator(raw, training=True)
            disc_fake = self.discriminator([raw, gen_output], training=True) if self.gan else None
            gen_total, gen_gan, gen_l1 = generator_loss(disc_fake, gen_output, truth, self.global_batch, s.lam,
                                                        s.hit_weight, raw if s.weight_raw_hits else None,
                                                        gan_weight=self.gan_scale, pixel_loss=s.pixel_loss)
            disc = tf.zeros(())
            if self.gan:
                disc_real = self.discriminator([raw, truth], training=True)
                disc = discriminator_loss(disc_real, disc_fake, self.global_batch, 1.0 - s.label_smoothing)
        gen_vars = self.generator.trainable_variables
        gen_grads = gen_tape.gradient(self.gen_opt.scale_loss(gen_total), gen_vars)
        self.gen_opt.apply_gradients(zip(gen_grads, gen_vars, strict=True))
        if step_disc:
            disc_vars = self.discriminator.trainable_variables
            disc_grads = disc_tape.gradient(self.disc_opt.scale_loss(disc), disc_vars)
            self.disc_opt.apply_gradients(zip(disc_grads, disc_vars, strict=True))
        return gen_total, gen_gan, gen_l1, disc

    def _train_step(self, batch, step_disc):
        """One optimizer step on a distributed (raw, truth) batch; returns the four global losses."""
        per_replica = self.strategy.run(lambda raw, truth: self._replica_step(raw, truth, step_disc), args=batch)
        losses = [self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in per_replica]
        self.step.assign_add(1)
        self.batch_in_epoch.assign_add(1)
        return losses

    def counters(self):
        """(step, epoch, batch_in_epoch) as Python ints."""
        return int(self.step.numpy()), int(self.epoch.numpy()), int(self.batch_in_epoch.numpy())


# --- Stopping between steps: Ctrl-C or a batch system's SIGTERM -----------------------------------------
STOP_REQUESTED = []  # the signal that asked the run to stop (request_stop), if any


class StopNow(KeyboardInterrupt):
    """A second stop signal: stop at once, saving nothing more (a KeyboardInterrupt to every other handler)."""


def request_stop(signum, frame):
    """Ctrl-C or a batch system's SIGTERM (pre-emption, the end of a time slot): stop after the
    current step, with a checkpoint of it, so that the same command resumes from there.

    The signal only sets a flag that the training loop reads between steps (check_stop). A
    KeyboardInterrupt raised wherever the signal lands can be lost: Python drops one raised in a
    garbage-collector callback, and Keras imports JAX's when JAX is installed. A second signal
    stops at once.
    """
    if STOP_REQUESTED:
        raise StopNow
    STOP_REQUESTED.append(signum)
    print(f"\n{signal.Signals(signum).name}: stopping after the current step (again to stop at once)",
          file=sys.stderr, flush=True)


def catch_stop_signals():
    """From now on Ctrl-C and SIGTERM go to request_stop."""
    STOP_REQUESTED.clear()
    for s in STOP_SIGNALS:
        signal.signal(s, request_stop)


def check_stop():
    """Between steps: a stop asked for by a signal becomes the KeyboardInterrupt that saves and exits."""
    if STOP_REQUESTED:
        raise KeyboardInterrupt
