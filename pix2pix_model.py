"""The Pix2Pix model of the project, free of any one Keras backend: its builders, losses and the
validation that chooses the output threshold (validate).

Pix2Pix_training.py trains it with TensorFlow; everything here is plain Keras 3 (keras.layers,
keras.ops) and numpy, so the same generator, discriminator and losses also run under Keras'
JAX backend (bench/train_jax.py, for GPU machines without TensorFlow).

- generator: a U-Net of seven downsampling blocks (4x4 convolutions, stride 2, batch norm except
  the first, leaky ReLU) and six mirrored upsampling blocks with skip connections (dropout DROPOUT,
  0.5, on the first three), then a sigmoid output layer (the data are 0..1, so no tanh);
- discriminator: the 70x70 PatchGAN on the concatenated (input, target) pair, a 14x14 map of logits;
- loss: GAN loss + LAMBDA x L1, where the L1 of the hit pixels is weighted by HIT_WEIGHT
  (a track lights ~50 of 16,384 pixels: plain L1 is smallest for an empty output);
- the training recipe's levers both trainers share: the extra hits of --beside-augment and
  --mix-tracks, the moved layers of --bend-augment (each trainer draws the random numbers) and the
  learning rate of --lr-decay.
"""

import contextlib
import functools
import math

import keras
import numpy as np
from keras import layers, ops

import event_image as ei
import tracking

BASE_FILTERS = 64  # filters of the first block (the paper's)
LAMBDA = 100.0  # weight of the L1 term against the GAN term (the paper's)
HIT_WEIGHT = 10.0  # L1 weight of the hit pixels (1 = plain L1, which learns a blank output)
BATCH_SIZE = 16  # training events per step and replica: measured better than 32 (twice the steps per epoch; README)
DROPOUT = 0.5  # dropout rate on the decoder's three deepest blocks (the paper's; 0 = none)
NOISE_AUGMENT = 0.05  # training batches get extra noise hits on up to this fraction of each event's cells (README)
BESIDE_AUGMENT = 0.5  # share of training events given a track's segment copied aside as background (README)
MIX_TRACKS = 0.5  # share of training events given another training event's tracks, in raw and truth (README)
MIX_BACKGROUND = 0.0  # share of training events given another training event's background hits, in raw (README)
BEND_AUGMENT = 0.0  # share of training events whose layers are moved along the wires by a tilt and a bend (README)
PIXEL_LOSS = "bce"  # the generator's per-pixel term: l1 (the paper's) | bce, a hit probability per pixel (README)
LR_DECAY = "cosine"  # none: constant learning rates | cosine: falling along a half cosine over the epochs
THRESHOLD_CRITERION = "tracks"  # how validation chooses the threshold: balanced | f1 | tracks (as tracking would)
VALIDATION_BACKGROUND = 2  # validation events carry this many events' background (2: as at twice the luminosity)
VALIDATION_DRAWS = 8  # each validation event validated under up to this many other events' backgrounds
TRACKS_KEPT = 0.99  # threshold criterion "tracks": the share of reconstructable tracks the threshold must keep
MIRROR_AVERAGE = False  # validate, denoise and export the output averaged with the mirrored event's (2x the time)
SHIFT_AVERAGE = 0  # wires (0 = off): the same with the event moved this many wires along its layers (one pass more)
EVENT_CELLS = ei.event_region_mask()[..., None].astype(np.float32)  # 1 on the layout's 36x112 event cells
IMAGE_SHAPE = (ei.PADDED_SIZE, ei.PADDED_SIZE, ei.CHANNELS)
GENERATOR_BLOCKS = 7  # 128 -> 1 pixel at the bottleneck


# --- The model ---------------------------------------------------------------------------------
def downsample(filters, size=4, apply_batchnorm=True):
    """Conv 4x4 stride 2 -> (batch norm) -> leaky ReLU: halves the image, the encoder's block."""
    init = keras.initializers.RandomNormal(0.0, 0.02)
    block = keras.Sequential()
    block.add(layers.Conv2D(filters, size, strides=2, padding="same", kernel_initializer=init, use_bias=False))
    if apply_batchnorm:
        block.add(layers.BatchNormalization())
    block.add(layers.LeakyReLU(negative_slope=0.2))
    return block


def upsample(filters, size=4, dropout=0.0):
    """Transposed conv 4x4 stride 2 -> batch norm -> (dropout at this rate, if > 0) -> ReLU: the decoder's block."""
    init = keras.initializers.RandomNormal(0.0, 0.02)
    block = keras.Sequential()
    block.add(layers.Conv2DTranspose(filters, size, strides=2, padding="same", kernel_initializer=init,
                                     use_bias=False))
    block.add(layers.BatchNormalization())
    if dropout:
        block.add(layers.Dropout(dropout))
    block.add(layers.ReLU())
    return block


def raw_hit_gate(raw):
    """(N, 128, 128, 1) float32 mask, 1 where any channel of raw (0..1) is a hit (> 0.5), else 0.

    Built from fixed built-in layers so that the exported .keras file carries it: ReLU with a
    threshold keeps only channels above 0.5, a fixed 1x1 convolution adds them up (x4, so one
    hit channel gives >= 2), and ReLU(max_value=1) clips that to 1.
    """
    bright = layers.ReLU(threshold=ei.SCALED_HIT_THRESHOLD, dtype="float32", name="gate_hit_channels")(raw)
    summed = layers.Conv2D(1, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(4.0),
                           trainable=False, dtype="float32", name="gate_any_channel")(bright)
    return layers.ReLU(max_value=1.0, dtype="float32", name="gate_mask")(summed)


def build_generator(base_filters=BASE_FILTERS, dropout=DROPOUT):
    """The U-Net generator: (N, 128, 128, 3) in 0..1 -> (N, 128, 128, 3) float32 in 0..1.

    dropout (training only) changes no weight: generators of any rate share one weight layout."""
    f = base_filters
    down_stack = [downsample(f, apply_batchnorm=False), downsample(2 * f), downsample(4 * f),
                  downsample(8 * f), downsample(8 * f), downsample(8 * f), downsample(8 * f)]
    up_stack = [upsample(8 * f, dropout=dropout), upsample(8 * f, dropout=dropout),
                upsample(8 * f, dropout=dropout), upsample(4 * f), upsample(2 * f), upsample(f)]
    # The output layer computes in float32 under mixed precision: a sigmoid in 0..1, like the data.
    last = layers.Conv2DTranspose(ei.CHANNELS, 4, strides=2, padding="same", activation="sigmoid",
                                  kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02), dtype="float32")
    inputs = keras.Input(IMAGE_SHAPE, name="raw")
    return keras.Model(inputs, unet(inputs, down_stack, up_stack, last), name="generator")


def unet(x, down_stack, up_stack, last):
    """The U-Net's wiring: x down the encoder's blocks, up the decoder's with the skip connections, then last."""
    skips = []
    for down in down_stack:
        x = down(x)
        skips.append(x)
    for up, skip in zip(up_stack, reversed(skips[:-1]), strict=True):
        x = layers.Concatenate()([up(x), skip])
    return last(x)


def with_raw_hit_gate(generator):
    """The generator's output multiplied by the raw hit mask (sharing the generator's weights).

    The gated model decides which raw hits to keep and cannot light a pixel where the raw image
    had none (the bare U-Net lit ~60 such pixels per event beside the tracks). Training runs the
    bare U-Net: inside the loss the gate leaves the L1 almost no gradient (measured: stuck at
    keep-everything for 3 epochs); validation and the exported models use the gated one.
    """
    inputs = keras.Input(IMAGE_SHAPE, name="raw")
    gated = layers.Multiply(dtype="float32", name="gated_output")([generator(inputs), raw_hit_gate(inputs)])
    return keras.Model(inputs, gated, name="gated_generator")


def view_tables(source_wire):
    """{rows: (each cell's source as a flat row x column index, whether it has one)} of a view of the 36x112
    event in which cell (layer, wire) shows the event's cell (layer, source_wire[layer, wire]) (-1: none), for
    the event (rows 36) and the 128x128 layout (rows 128); cells off the event are their own source, unshown."""
    event = np.maximum(source_wire, 0), source_wire >= 0
    padded = np.tile(np.arange(ei.PADDED_SIZE), (ei.PADDED_SIZE, 1)), np.zeros((ei.PADDED_SIZE,) * 2, bool)
    cells = ei.LAYER_ROWS[:, None], np.arange(ei.WIRES)[None, :] + ei.PAD_LEFT
    padded[0][cells], padded[1][cells] = event[0] + ei.PAD_LEFT, event[1]
    return {rows: ((index + index.shape[1] * np.arange(rows)[:, None]).ravel().astype("int32"), valid[None, :, :, None])
            for rows, (index, valid) in ((ei.LAYERS, event), (ei.PADDED_SIZE, padded))}


MIRROR_TABLES = view_tables(ei.MIRROR_WIRE)


@functools.lru_cache
def shift_tables(wires):
    """view_tables of the event moved `wires` wires along its layers (negative: towards wire 0); the hits
    moved off the event's wires are left out."""
    source = np.arange(ei.WIRES) - wires
    return view_tables(np.broadcast_to(np.where((source >= 0) & (source < ei.WIRES), source, -1), ei.MIRROR_WIRE.shape))


def viewed(images, tables):
    """images (B, 36 or 128, W, C) as a view of view_tables shows them; a cell with no source gets 0."""
    index, valid = tables[images.shape[1]]  # index: the flat (row, column) cell each cell takes
    _, rows, columns, channels = images.shape
    cells = ops.take(ops.reshape(images, (-1, rows * columns, channels)), index, axis=1)
    return ops.reshape(cells, (-1, rows, columns, channels)) * valid.astype("float32")  # numpy: a constant in graphs


def mirrored(images):
    """images (B, 36 or 128, W, C) with every layer mirrored along its wires (event_image.MIRROR_WIRE);
    a cell without a mirror gets 0."""
    return viewed(images, MIRROR_TABLES)


def view_averaged(predict, images, mirror=False, shift=0):
    """predict(images) averaged, cell by cell, with its answers for views of the same events brought back:
    the event mirrored along its wires (mirror: --mirror-average) and moved `shift` wires along its layers
    (--shift-average). A cell a view leaves out (a hit without a mirror, moved off the wires) is left out of
    that view's share. Each view is one more pass of predict."""
    rows = images.shape[1]
    views = ([(MIRROR_TABLES, MIRROR_TABLES)] if mirror else []) + \
        ([(shift_tables(shift), shift_tables(-shift))] if shift else [])
    total, count = predict(images), 1.0
    for there, back in views:
        total = total + viewed(predict(viewed(images, there)), back)
        count = count + back[rows][1].astype("float32")
    return total / count if views else total


def build_discriminator(base_filters=BASE_FILTERS):
    """The 70x70 PatchGAN on the (input, target) pair: a (N, 14, 14, 1) float32 map of logits."""
    f = base_filters
    init = keras.initializers.RandomNormal(0.0, 0.02)
    raw = keras.Input(IMAGE_SHAPE, name="input_image")
    target = keras.Input(IMAGE_SHAPE, name="target_image")
    x = layers.Concatenate()([raw, target])  # (128, 128, 6)
    x = downsample(f, apply_batchnorm=False)(x)  # 64
    x = downsample(2 * f)(x)  # 32
    x = downsample(4 * f)(x)  # 16
    x = layers.ZeroPadding2D()(x)  # 18
    x = layers.Conv2D(8 * f, 4, strides=1, kernel_initializer=init, use_bias=False)(x)  # 15
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.ZeroPadding2D()(x)  # 17
    logits = layers.Conv2D(1, 4, strides=1, kernel_initializer=init, dtype="float32")(x)  # 14
    return keras.Model([raw, target], logits, name="discriminator")


@contextlib.contextmanager
def dtype_policy(name):
    """Build Keras layers under the global dtype policy name, then put the previous one back."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def synchronize_batch_norm(model):
    """Several replicas: each batch norm of model uses the global batch's mean and variance (Keras'
    synchronized=True), so that every replica updates its moving statistics alike; otherwise each
    worker keeps its own and the workers end with different weights."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # the encoder and decoder blocks
            synchronize_batch_norm(layer)
        elif isinstance(layer, layers.BatchNormalization):
            layer.synchronized = True


# --- The losses (per example, averaged over the global batch so that replicas add up) --------------
def bce_with_logits(logits, label):
    """Sigmoid cross-entropy of a patch map against a constant label, one value per example.

    The numerically stable form max(x, 0) - x z + log(1 + exp(-|x|)), as TensorFlow's
    sigmoid_cross_entropy_with_logits computes it.
    """
    elementwise = ops.relu(logits) - logits * label + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.mean(elementwise, axis=(1, 2, 3))


def average_over_batch(per_example, global_batch):
    """Sum over this replica's examples / the global batch: replicas' shares add up to the batch mean."""
    return ops.sum(per_example) / global_batch


def generator_loss(disc_fake, gen_output, target, global_batch, lam=LAMBDA, hit_weight=HIT_WEIGHT, raw=None,
                   gan_weight=1.0, pixel_loss=PIXEL_LOSS):
    """gan_weight x GAN loss (fool the discriminator) + lam x L1, the truth's hit pixels weighted by hit_weight.

    With raw given, the raw image's hits are weighted too: every pixel the denoiser has to decide
    on (keep a track hit, remove a noise hit) then counts hit_weight times an empty pixel.
    pixel_loss "bce" puts the binary cross-entropy of each pixel (the output a hit probability,
    the truth its label) in place of the L1, with the same weights.
    disc_fake None (no discriminator): the GAN loss is 0, a plain U-Net on the weighted pixel loss.
    Returns (total, gan, l1), each averaged over the global batch (gan unweighted; l1 the pixel loss).
    """
    decided = target if raw is None else ops.maximum(target, raw)
    hits = ops.cast(ops.max(decided, axis=-1, keepdims=True) > ei.SCALED_HIT_THRESHOLD, "float32")
    weights = 1.0 + (hit_weight - 1.0) * hits
    if pixel_loss == "bce":
        p = ops.clip(gen_output, 1e-7, 1.0 - 1e-7)
        per_pixel = -(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))
    else:
        per_pixel = ops.abs(target - gen_output)
    l1 = ops.mean(weights * per_pixel, axis=(1, 2, 3))
    gan = ops.zeros_like(l1) if disc_fake is None else bce_with_logits(disc_fake, 1.0)
    total = gan_weight * gan + lam * l1
    return tuple(average_over_batch(v, global_batch) for v in (total, gan, l1))


def discriminator_loss(disc_real, disc_fake, global_batch, real_label=1.0):
    """Real pairs -> real_label (1, or less with label smoothing), generated pairs -> 0; averaged
    over the global batch (balanced: 2 log 2)."""
    return average_over_batch(bce_with_logits(disc_real, real_label) + bce_with_logits(disc_fake, 0.0), global_batch)


# --- The training batches' extra hits and the learning rate (each trainer draws the random numbers) -------
# The padded row of the first layer of each superlayer, and the most wires a --beside-augment copy lies aside.
SUPERLAYER_ROWS = ei.LAYER_ROWS[::ei.LAYERS_PER_SUPERLAYER].astype("int32")
BESIDE_WIRES = 5


def beside_segments(raw, truth, u, share):
    """(raw with a background segment beside a track, truth): on a share of the events, the truth hits
    of one superlayer, copied 1..BESIDE_WIRES wires aside (either side) and leaning up to one wire more
    or less over its 6 layers, are added to the raw event, not to the truth (--beside-augment): a
    segment confined to one superlayer along a real track is background. u: (n, 5) uniform in [0, 1)."""
    on = ops.cast(u[:, 0] < share, raw.dtype)
    first = ops.take(ops.convert_to_tensor(SUPERLAYER_ROWS), ops.cast(u[:, 1] * ei.SUPERLAYERS, "int32"))
    aside = 1.0 + ops.floor(u[:, 2] * BESIDE_WIRES)
    lean = u[:, 4] * 2.0 - 1.0  # wires more (or fewer) aside at the superlayer's last layer than at its first
    rows = ops.arange(ei.PADDED_SIZE, dtype="int32")[None, :]
    band = ops.logical_and(rows >= first[:, None], rows < first[:, None] + ei.LAYERS_PER_SUPERLAYER)  # (n, 128)
    step = ops.cast(rows - first[:, None], "float32") / (ei.LAYERS_PER_SUPERLAYER - 1)
    wires = ops.maximum(1.0, ops.round(aside[:, None] + lean[:, None] * step))  # never on the track itself
    shift = ops.cast(wires * ops.sign(u[:, 3:4] - 0.5), "int32")  # (n, 128) wires, per row
    source = ops.arange(ei.PADDED_SIZE, dtype="int32")[None, None, :] - shift[:, :, None]  # (n, 128, 128) column
    copy = ops.take_along_axis(truth, ops.clip(source, 0, ei.PADDED_SIZE - 1)[..., None], axis=2)
    # EVENT_CELLS: an event cell's source column is inside the padded image (the side pads exceed BESIDE_WIRES + 1).
    copy = copy * ops.cast(band, raw.dtype)[:, :, None, None] * on[:, None, None, None] * EVENT_CELLS
    return ops.maximum(raw, copy), truth


def mixed_tracks(raw, truth, u, share):
    """(raw, truth) with, on a share of the events, the previous event's truth hits in the batch added to
    both (--mix-tracks): more tracks, crossing other background, from the same simulation. u: (n,)
    uniform in [0, 1)."""
    other = ops.roll(truth, 1, axis=0) * ops.cast(u < share, truth.dtype)[:, None, None, None]
    return ops.maximum(raw, other), ops.maximum(truth, other)


# --bend-augment: the most wires the first and last layers move by the tilt, and by the bend (either way);
# LAYER_POSITION: each padded row's layer on -1..1 (first to last layer; 0 on the empty rows).
BEND_TILT_WIRES = 10.0
BEND_CURVE_WIRES = 6.0
LAYER_POSITION = np.zeros(ei.PADDED_SIZE, np.float32)
LAYER_POSITION[ei.LAYER_ROWS] = np.linspace(-1.0, 1.0, ei.LAYERS)


def bent_events(raw, truth, u, share):
    """(raw, truth) with, on a share of the events, each layer's hits (raw and truth alike) moved along the
    wires by round(tilt t + bend t^2), t the layer's LAYER_POSITION, tilt and bend drawn per event in
    +-BEND_TILT_WIRES and +-BEND_CURVE_WIRES (--bend-augment): the same hits on tracks of other slopes and
    curvatures. Hits moved off the 112 wires are dropped from both. u: (n, 3) uniform in [0, 1)."""
    on = ops.cast(u[:, 0] < share, "float32")
    tilt = (u[:, 1] * 2.0 - 1.0) * BEND_TILT_WIRES * on
    bend = (u[:, 2] * 2.0 - 1.0) * BEND_CURVE_WIRES * on
    t = ops.convert_to_tensor(LAYER_POSITION)[None, :]
    shift = ops.cast(ops.round(tilt[:, None] * t + bend[:, None] * t * t), "int32")  # (n, 128) wires, per row
    source = ops.arange(ei.PADDED_SIZE, dtype="int32")[None, None, :] - shift[:, :, None]  # (n, 128, 128) column
    source = ops.clip(source, 0, ei.PADDED_SIZE - 1)[..., None]  # a clipped source is a side pad: empty
    return tuple(ops.take_along_axis(a, source, axis=2) * EVENT_CELLS for a in (raw, truth))


def mixed_background(raw, truth, u, share):
    """(raw, truth) with, on a share of the events, the next event's background hits in the batch (its raw
    hits that are not in its truth) added to the raw image only (--mix-background): two events' background
    over one event's tracks, as CLAS12 simulation merges recorded background into its events. u: (n,)
    uniform in [0, 1)."""
    other = ops.roll(raw * (1 - truth), -1, axis=0) * ops.cast(u < share, raw.dtype)[:, None, None, None]
    return ops.maximum(raw, other), truth


def validation_problem(background, draws, batch_size):
    """Why --validation-background and --validation-draws do not fit batches of batch_size ('' when they do)."""
    if not 1 <= background <= batch_size:
        hint = (f" (its default is {VALIDATION_BACKGROUND}: with --batch-size {batch_size} give "
                f"--validation-background {batch_size})" if batch_size < background else "")
        return f"--validation-background must be 1 to --batch-size ({batch_size}), not {background}{hint}"
    if draws < 1:
        return f"--validation-draws must be at least 1, not {draws}"
    return ""


def draws_that_fit(background, draws, batch_size):
    """The validation draws a run makes of --validation-draws draws: each draw takes background - 1 other events of
    a batch of batch_size, so at most (batch_size - 1) // (background - 1) of them; 1 with background 1 (the
    event's own background only)."""
    return 1 if background == 1 else min(draws, (batch_size - 1) // (background - 1))


def with_more_background(raw, truth, times, draw=0):
    """raw (numpy) with the background hits (raw hits not in the truth) of the batch's next times - 1 events
    added, as mixed_background adds the next one's: each event then carries times events' background over
    its own tracks, as at times the luminosity (--validation-background). draw d takes the times - 1 events
    after the first d x (times - 1) instead (--validation-draws: other backgrounds over the same tracks).
    The others wrap around the batch, never to the event itself: in a small batch draws and events repeat."""
    if times == 1:
        return raw
    background, others = raw * (1 - truth), max(len(raw) - 1, 1)
    for k in range(1, times):
        shift = 1 + (k - 1 + draw * (times - 1)) % others if len(raw) > 1 else 0
        raw = np.maximum(raw, np.roll(background, -shift, axis=0))
    return raw


def lr_factor(decay, epoch, epochs):
    """The learning rate of epoch (0-based) over the set one: none = 1; cosine = 0.5 (1 + cos(pi epoch / epochs)),
    from 1 in the first epoch down towards 0 in the last (--lr-decay)."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) if decay == "cosine" else 1.0


# --- Validation: the output threshold ----------------------------------------------------------------
def validate(predict, dataset, max_batches=0, criterion="balanced", track_ids=None, tracks_kept=TRACKS_KEPT,
             background=1, draws=1):
    """Validation L1 and hit-level scores at every threshold tried; the best one chosen.

    background: each event carries that many events' background (with_more_background), 1 = its own;
    draws: each event is validated that many times, under other events' background each time (draw 0, 1,
    ...), and every figure counts all of them (more fake segments to choose the threshold on).

    criterion "balanced" picks the threshold of event_image.THRESHOLDS where the worse of
    efficiency and rejection is best (physicists want both high); "f1" the best F1 (which
    favours efficiency here); "tracks" judges event_image.SWEEP_THRESHOLDS as tracking would
    (choose_for_tracking), with the validation events' track ids (N, 36, 112) in the dataset's
    order (None: each event's truth is one track).

    Returns {"val_l1", "threshold", "efficiency", "rejection", "purity", "f1", "invented_per_event",
    "f1_by_threshold"} (with "tracks": also "tracks_kept" and "fake_segments_per_event") and the
    first batch (raw, truth, output) for the sample picture.
    """
    thresholds = ei.SWEEP_THRESHOLDS if criterion == "tracks" else ei.THRESHOLDS
    counts = {t: {} for t in thresholds}
    track_counts = {t: tracking.add_counts({}, {}) for t in thresholds}
    l1_sum, events, first = 0.0, 0, None
    for i, (raw, truth) in enumerate(dataset):
        if max_batches and i >= max_batches:
            break
        raw, truth = np.asarray(raw, np.float32), np.asarray(truth, np.float32)  # once for all draws
        ids = None if track_ids is None else track_ids[events:events + len(truth)]
        for draw in range(draws):
            given = with_more_background(raw, truth, background, draw)
            output = np.asarray(predict(given), np.float32)
            first = (given, truth, output) if first is None else first
            l1_sum += float(np.abs(truth - output).mean(axis=(1, 2, 3)).sum())
            raw_hits, truth_hits, brightest = ei.padded_hits(given, truth, output)
            kept = {t: brightest > t for t in thresholds}
            for t in thresholds:
                counts[t] = ei.add_counts(counts[t], ei.hit_counts(raw_hits, truth_hits, kept[t]))
            if criterion == "tracks":
                add_tracking_counts(track_counts, raw_hits, truth_hits, kept, ids)
        events += len(truth)
    scores = {t: ei.scores_from_counts(c) for t, c in counts.items()}
    f1 = {t: (sc["f1"] if not math.isnan(sc["f1"]) else -1.0) for t, sc in scores.items()}
    extra = {}
    if criterion == "tracks":
        tracked = {t: tracking.scores_from_counts(c) for t, c in track_counts.items()}
        best = choose_for_tracking(tracked, tracks_kept)
        extra = {"tracks_kept": tracked[best]["kept_ge5"],
                 "fake_segments_per_event": tracked[best]["fake_segments_per_event"]}
    elif criterion == "balanced":
        balanced = {t: min(sc["efficiency"], sc["rejection"]) for t, sc in scores.items()}
        best = best_threshold({t: (v if not math.isnan(v) else -1.0) for t, v in balanced.items()})
    else:
        best = best_threshold(f1)
    return {"val_l1": l1_sum / max(events * draws, 1), "threshold": float(best), **scores[best], **extra,
            "f1_by_threshold": {str(t): v for t, v in f1.items()}}, first


def best_threshold(goodness):
    """The threshold with the highest goodness ({threshold: value}); ties: the one nearest 0.5."""
    return max(goodness, key=lambda t: (goodness[t], -abs(t - 0.5)))


def add_tracking_counts(track_counts, raw_hits, truth_hits, kept, track_ids):
    """Add one batch's tracking counts (tracking.counts_of_keeps) at each threshold of track_counts, in place.

    raw_hits, truth_hits: the batch's hit masks (B, 36, 112); kept: {threshold: the output's hits}
    (ei.padded_hits); only raw hits count as kept.
    """
    keeps = [raw_hits & kept[t] for t in track_counts]
    for t, per_event in zip(track_counts, tracking.counts_of_keeps(raw_hits, truth_hits, keeps, track_ids),
                            strict=True):
        track_counts[t] = tracking.add_counts(track_counts[t], {k: int(v.sum()) for k, v in per_event.items()})


def choose_for_tracking(tracked, tracks_kept=TRACKS_KEPT):
    """The threshold (a key of tracked: {threshold: tracking.scores_from_counts}) tracking would want.

    Of the thresholds keeping at least tracks_kept of the tracks reconstructable from >= 5 of 6
    superlayers in the raw events, the one leaving the fewest fake segments (ties: the one
    keeping more tracks, then the one nearest 0.5); when none keeps that many, the one keeping the most.
    """
    return max(tracked, key=lambda t: (*tracking_rank(tracked[t]["kept_ge5"], tracked[t]["fake_segments_per_event"],
                                                      tracks_kept), -abs(t - 0.5)))


def tracking_rank(kept, fakes, tracks_kept=TRACKS_KEPT):
    """The order tracking wants (higher is better) of a share of tracks kept and fake segments per event:
    keeping at least tracks_kept first, then fewer fake segments and more tracks; below it, more tracks
    and then fewer fake segments. NaN counts as nothing kept / endless fake segments."""
    kept = -1.0 if math.isnan(kept) else kept
    fakes = math.inf if math.isnan(fakes) else fakes
    return (1, -fakes, kept) if kept >= tracks_kept else (0, kept, -fakes)


def f1_of(row):
    """A row's validation F1 as a float; nan (no hit kept at all) counts as 0."""
    try:
        f1 = float(row["f1"])
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(f1) else f1


def epoch_rank(row, criterion, tracks_kept):
    """How an epoch's validation (a history row, numbers or strings) ranks for the best export: higher is better.

    Its F1, except under the "tracks" criterion, where epochs rank as thresholds do
    (tracking_rank: keeping tracks_kept of the reconstructable tracks first, then the
    fewest fake segments per event, then more tracks), then by F1.
    """
    f1 = f1_of(row)
    if criterion != "tracks":
        return (f1,)
    try:
        kept, fakes = float(row["tracks_kept"]), float(row["fake_segments_per_event"])
    except (KeyError, TypeError, ValueError):  # a row written without them
        kept, fakes = math.nan, math.nan
    return (*tracking_rank(kept, fakes, tracks_kept), f1)
