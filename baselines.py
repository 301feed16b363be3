"""The two classical baselines a CLAS12 denoiser is judged against, and a script that scores them.

1. SNR, CLAS12's "simple noise removal" (the reconstruction's pre-tracking filter, after
   cnuphys/snr in JeffersonLab/clas12-offline-software): `snr_keep`.
2. The CLAS12 AI group's denoising convolutional auto-encoder (Gavalian et al., arXiv
   2205.02616, network "0b"): `build_cae`, `train_cae`, `get_cae` (trained once per data file
   and cached as .keras), `cae_keep`.

    python baselines.py                                     # both on the test split of data/pairs.h5
    python baselines.py --data data/pairs.h5 --split validation --methods snr
"""

import argparse
import hashlib
import json
import time
import zipfile
from pathlib import Path

import numpy as np

import data_management
import pairs_h5
from data_management import fingerprint, load_split
from event_image import LAYERS, LAYERS_PER_SUPERLAYER, SUPERLAYERS, WIRES, crop_event, hit_mask, hit_scores
from script_utils import (
    ArgumentParser,
    InputError,
    atomic_output,
    can_write_in,
    check_not_an_input,
    import_keras,
    progress,
    run_main,
    seed_number,
)

# --- Settings (each one has a command-line option) ---------------------------------------
DATA = data_management.DATA  # the HDF5 file of pairs
SPLIT = "test"  # the split the script scores on
MAX_EVENTS = None  # score only the first this many events of the split (None: all)
METHODS = ("snr", "cae")  # the baselines to score
SNR_SHIFTS = (0, 1, 2, 2, 4, 4)  # SNR bucket width, in wires, of layers 1..6 of a superlayer (CLAS12's values)
SNR_MAX_MISSING = 2  # layers of a superlayer allowed to miss an SNR segment
CAE_EPOCHS = 10  # the clas12ai command-line default
CAE_BATCH_SIZE = 8  # the clas12ai default
CAE_MAX_TRAIN_PAIRS = None  # train the CAE on only the first this many train events (None: all)
CAE_THRESHOLD = 0.5  # an output wire is a hit above this
CAE_CACHE = None  # folder of the trained CAEs (None: beside the HDF5 file)
SEED = 1234  # the CAE's initialisation and the order of its training events
SPLIT_SEED = data_management.SPLIT_SEED  # the train/validation/test split

# --- CAE recipe (Gavalian et al., network 0b) --------------------------------------------
CAE_FILTERS = 54  # filters of every hidden convolution
CAE_KERNEL = (4, 3)  # (layers, wires)
CAE_POOLS = ((2, 2), (3, 2))  # 36x112 -> 18x56 -> 6x28, then mirrored back up
CAE_VALIDATION_EVENTS = 512  # validation events used for the per-epoch val_loss (0: none)
READ_CHUNK = 1024  # events read from the HDF5 file at once


# ==========================================================================================
# SNR
# ==========================================================================================
def _window_any(x, shifts, upward):
    """out[..., i, p] = any hit of x[..., i, :] in p..p+shifts[i] (upward) or p-shifts[i]..p.

    x: bool (..., R, W), R = len(shifts) (one row per layer) or 1 (the same row for every
    layer); outside the row counts as empty. Widens the window one wire at a time over
    the whole array and picks, for each layer, the width it needs.
    """
    shifts = np.asarray(shifts)
    out = np.empty(x.shape[:-2] + (len(shifts), x.shape[-1]), bool)
    cur = x.copy()
    for k in range(int(shifts.max()) + 1):
        if k:  # cur covers one more wire: p..p+k (or p-k..p)
            if upward:
                cur[..., :-1] |= cur[..., 1:].copy()
            else:
                cur[..., 1:] |= cur[..., :-1].copy()
        rows = np.flatnonzero(shifts == k)
        if len(rows):
            out[..., rows, :] = cur[..., rows, :] if x.shape[-2] > 1 else cur
    return out


def snr_segments(raw_mask, shifts=SNR_SHIFTS, max_missing=SNR_MAX_MISSING):
    """Surviving segment candidates of every superlayer, for both leaning directions.

    Returns (rising, falling, pad): bool (..., 6 superlayers, 112 + 2*pad) indexed by the
    candidate's wire in the superlayer's first layer, shifted by pad (candidates may start
    up to pad wires outside the chamber, their first layer then counting as missing).
    "rising": the track's wire number grows with the layer (hits of layer i in s..s+shift);
    "falling": it shrinks (hits in s-shift..s).
    """
    raw_mask = np.asarray(raw_mask, bool)
    if raw_mask.shape[-2:] != (LAYERS, WIRES):
        raise ValueError(f"expected (..., {LAYERS}, {WIRES}) hit masks, got {raw_mask.shape}")
    shifts = np.asarray(shifts, int)
    if shifts.shape != (LAYERS_PER_SUPERLAYER,) or (shifts < 0).any():
        raise ValueError(f"shifts must be {LAYERS_PER_SUPERLAYER} non-negative wire counts, got {shifts}")
    pad = int(shifts.max())
    layers = raw_mask.reshape(raw_mask.shape[:-2] + (SUPERLAYERS, LAYERS_PER_SUPERLAYER, WIRES))
    padded = np.zeros(layers.shape[:-1] + (WIRES + 2 * pad,), bool)
    padded[..., pad:pad + WIRES] = layers
    rising = (~_window_any(padded, shifts, upward=True)).sum(axis=-2) <= max_missing
    falling = (~_window_any(padded, shifts, upward=False)).sum(axis=-2) <= max_missing
    return rising, falling, pad


def snr_keep(raw_mask, shifts=SNR_SHIFTS, max_missing=SNR_MAX_MISSING):
    """CLAS12 simple noise removal: the raw hits that lie in a segment candidate's bucket.

    raw_mask: bool hit mask (36, 112) or (N, 36, 112); returns a mask of the same shape,
    a subset of raw_mask. shifts: bucket width of layers 1..6 of a superlayer (the same
    for both leaning directions); max_missing: layers a candidate may miss.
    """
    raw_mask = np.asarray(raw_mask, bool)
    rising, falling, pad = snr_segments(raw_mask, shifts, max_missing)
    shifts = np.asarray(shifts, int)
    # A hit at wire w of layer i is in a rising candidate's bucket when s in w-shift..w,
    # in a falling one's when s in w..w+shift.
    in_bucket = (_window_any(rising[..., None, :], shifts, upward=False)
                 | _window_any(falling[..., None, :], shifts, upward=True))
    keep = in_bucket[..., pad:pad + WIRES].reshape(raw_mask.shape)
    return keep & raw_mask


def snr_keep_plain(raw, shifts=SNR_SHIFTS, max_missing=SNR_MAX_MISSING):
    """SNR of one (36, 112) event written as plain loops: the readable definition that snr_keep
    vectorises (tests compare the two; bench/bench_baselines.py times them)."""
    raw = np.asarray(raw, bool)
    keep = np.zeros_like(raw)
    pad = max(shifts)
    for sl in range(SUPERLAYERS):
        hits = raw[LAYERS_PER_SUPERLAYER * sl:LAYERS_PER_SUPERLAYER * (sl + 1)]
        for direction in (+1, -1):
            for s in range(-pad, WIRES + pad):
                buckets = [(s, s + w) if direction > 0 else (s - w, s) for w in shifts]
                buckets = [(max(a, 0), min(b, WIRES - 1)) for a, b in buckets]
                missing = sum(a > b or not hits[i, a:b + 1].any() for i, (a, b) in enumerate(buckets))
                if missing <= max_missing:
                    for i, (a, b) in enumerate(buckets):
                        if a <= b:
                            keep[LAYERS_PER_SUPERLAYER * sl + i, a:b + 1] |= hits[i, a:b + 1]
    return keep


# ==========================================================================================
# The HDF5 file: hit masks and what a trained CAE depends on
# ==========================================================================================
def read_masks(h5_path, indices, desc="reading"):
    """Raw and truth hit masks, bool (n, 36, 112) each, of the given sorted event indices.

    Reads contiguous blocks of READ_CHUNK events and crops each back to the detector cells,
    so memory holds only the small masks.
    """
    indices = np.asarray(indices, np.int64)
    raw = np.zeros((len(indices), LAYERS, WIRES), bool)
    truth = np.zeros_like(raw)
    if len(indices) == 0:
        return raw, truth
    with pairs_h5.reading(h5_path) as f:
        starts = range(int(indices[0]), int(indices[-1]) + 1, READ_CHUNK)
        for start in progress(starts, desc=desc, unit="chunk"):
            lo, hi = np.searchsorted(indices, [start, start + READ_CHUNK])
            if lo == hi:
                continue
            stop = int(indices[hi - 1]) + 1
            take = indices[lo:hi] - start
            raw[lo:hi] = hit_mask(crop_event(f["raw"][start:stop][take]))
            truth[lo:hi] = hit_mask(crop_event(f["truth"][start:stop][take]))
    return raw, truth


def data_fingerprint(h5_path, train_indices):
    """A short hash of what a CAE trained on this file depends on: its contents and the train split.

    data_management.fingerprint covers N, the names and a few sampled events.
    """
    h = hashlib.sha256(fingerprint(h5_path).encode())
    h.update(np.asarray(train_indices, np.int64).tobytes())
    return h.hexdigest()[:16]


# ==========================================================================================
# The convolutional auto-encoder
# ==========================================================================================
def build_cae():
    """The clas12ai denoising auto-encoder (network 0b): (36, 112, 1) -> (36, 112, 1) in 0..1.

    Two 4x3 ReLU convolutions of 54 filters per stage, max-pooling (2, 2) then (3, 2), the
    same mirrored with up-sampling, and a 4x3 sigmoid convolution; binary cross-entropy,
    Nadam. 'same' padding throughout, so every wire keeps its place.
    """
    keras = import_keras()
    layers = keras.layers
    conv = dict(kernel_size=CAE_KERNEL, activation="relu", padding="same")
    model = keras.Sequential(name="clas12_cae")
    model.add(keras.Input((LAYERS, WIRES, 1)))
    for pool in CAE_POOLS:  # encoder
        model.add(layers.Conv2D(CAE_FILTERS, **conv))
        model.add(layers.Conv2D(CAE_FILTERS, **conv))
        model.add(layers.MaxPooling2D(pool))
    model.add(layers.Conv2D(CAE_FILTERS, **conv))  # bottleneck at 6x28
    model.add(layers.Conv2D(CAE_FILTERS, **conv))
    for i, pool in enumerate(reversed(CAE_POOLS)):  # decoder, mirrored
        model.add(layers.UpSampling2D(pool))
        if i < len(CAE_POOLS) - 1:
            model.add(layers.Conv2D(CAE_FILTERS, **conv))
            model.add(layers.Conv2D(CAE_FILTERS, **conv))
    model.add(layers.Conv2D(1, kernel_size=CAE_KERNEL, activation="sigmoid", padding="same"))
    model.compile(optimizer=keras.optimizers.Nadam(), loss="binary_crossentropy")
    return model


def _mask_dataset(raw, truth, batch_size, shuffle, seed):
    """tf.data of (raw, truth) float32 (B, 36, 112, 1) batches from bool mask arrays."""
    import_keras()
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((raw.view(np.uint8), truth.view(np.uint8)))
    if shuffle:
        ds = ds.shuffle(len(raw), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    to_float = lambda x: tf.cast(x, tf.float32)[..., None]
    return ds.map(lambda r, t: (to_float(r), to_float(t)), num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def train_cae(h5_path, epochs=CAE_EPOCHS, seed=SEED, split_seed=SPLIT_SEED, batch_size=CAE_BATCH_SIZE,
              max_train_pairs=CAE_MAX_TRAIN_PAIRS, verbose=0):
    """Train a fresh CAE on the TRAIN split of a project HDF5 file (raw hit mask -> truth hit mask).

    seed: the initialisation and the order of the training events; split_seed: the split
    (data_management.load_split). max_train_pairs: use only the first this many train events.
    The fit history is kept on the model as `model.history.history` (loss, and val_loss on up
    to CAE_VALIDATION_EVENTS validation events).
    """
    keras = import_keras()
    split = load_split(h5_path, split_seed=split_seed)
    train_idx = split["train"][:max_train_pairs] if max_train_pairs else split["train"]
    if len(train_idx) == 0:
        raise InputError(f"{h5_path}: the train split is empty")
    raw, truth = read_masks(h5_path, train_idx, desc="CAE train data")
    val_idx = split["validation"][:CAE_VALIDATION_EVENTS]
    validation = None
    if len(val_idx) and CAE_VALIDATION_EVENTS:
        validation = _mask_dataset(*read_masks(h5_path, val_idx, desc="CAE validation data"), batch_size, False, seed)
    keras.utils.set_random_seed(seed)
    model = build_cae()
    model.fit(_mask_dataset(raw, truth, batch_size, True, seed), epochs=epochs, validation_data=validation,
              shuffle=False, verbose=verbose)  # the dataset shuffles itself
    return model


def cae_cache_path(h5_path, cae_cache=None, epochs=CAE_EPOCHS, seed=SEED, split_seed=SPLIT_SEED,
                   batch_size=CAE_BATCH_SIZE, max_train_pairs=CAE_MAX_TRAIN_PAIRS):
    """Where get_cae keeps the model trained on this file with these settings.

    Default folder: beside the HDF5 file. The name carries the data fingerprint (with the
    train split, so the split seed) and the training settings, so a changed split or recipe never
    reuses a stale model, nor does a file changed where the fingerprint looks (N, the names, a few
    events: data_management.fingerprint); the model's own code (loss, optimizer) is not in it.
    """
    h5_path = Path(h5_path)
    split = load_split(h5_path, split_seed=split_seed)
    settings = json.dumps([epochs, seed, batch_size, max_train_pairs, CAE_FILTERS, CAE_KERNEL, CAE_POOLS])
    key = hashlib.sha256((data_fingerprint(h5_path, split["train"]) + settings).encode()).hexdigest()[:16]
    return Path(cae_cache or h5_path.parent) / f"{h5_path.stem}.cae-{key}.keras"


def get_cae(h5_path, cae_cache=None, train_if_missing=True, **train_kwargs):
    """The CAE trained on this file: loaded from the cache folder, else trained (train_cae) and cached.

    train_kwargs go to train_cae (epochs, seed, split_seed, batch_size, max_train_pairs, verbose)
    and into the cache key. With train_if_missing=False a missing cache is an InputError.
    """
    key_kwargs = {k: v for k, v in train_kwargs.items() if k != "verbose"}
    path = cae_cache_path(h5_path, cae_cache, **key_kwargs)
    if path.is_file():
        return load_cached_cae(path)
    if not train_if_missing:
        raise InputError(f"{h5_path}: no trained CAE cached at {path}")
    check_not_an_input(path, [h5_path])
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"{path.parent}: CAE cache folder is a file, not a folder")
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    if not can_write_in(path.parent):  # found out before training, not after
        raise InputError(f"{path}: folder {path.parent} is not writable (choose another CAE cache folder)")
    model = train_cae(h5_path, **train_kwargs)
    with atomic_output(path, overwrite=True, ext=".keras") as tmp:  # Keras insists on the .keras ending
        model.save(tmp)
    return model


def load_cached_cae(path):
    """The cached CAE of a .keras file; a damaged or cut-short file is a one-line InputError."""
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a cut-short zip
        raise InputError(f"{path}: unreadable CAE cache file (not a complete .keras file: cut short?); delete it "
                         "to retrain")
    try:
        return import_keras().models.load_model(path)
    except Exception as exc:  # a damaged cache file: say so rather than retrain silently
        why = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise InputError(f"{path}: unreadable CAE cache file ({type(exc).__name__}: {why}); delete it to retrain") \
            from None


def cae_keep(model, raw_mask, threshold=CAE_THRESHOLD, batch_size=256):
    """The CAE's output thresholded: bool (N, 36, 112) (or (36, 112) for one event).

    The output is not masked with the raw hits: event_image.hit_counts counts only raw hits
    as kept and reports the others as invented.
    """
    raw_mask = np.asarray(raw_mask, bool)
    if raw_mask.shape[-2:] != (LAYERS, WIRES) or raw_mask.ndim not in (2, 3):
        raise ValueError(f"expected (N, {LAYERS}, {WIRES}) or ({LAYERS}, {WIRES}) hit masks, got {raw_mask.shape}")
    batch = raw_mask.reshape(-1, LAYERS, WIRES, 1).astype(np.float32)
    keep = np.zeros(batch.shape[:-1], bool)
    for start in range(0, len(batch), batch_size):
        out = model.predict_on_batch(batch[start:start + batch_size])
        keep[start:start + batch_size] = np.asarray(out)[..., 0] > threshold
    return keep.reshape(raw_mask.shape)


# ==========================================================================================
# The script: score both baselines on one split
# ==========================================================================================
def build_parser():
    """The command line: every setting above."""
    p = ArgumentParser(description=__doc__)
    p.add_argument("--data", default=DATA, help="project HDF5 file of pairs (default %(default)s)")
    p.add_argument("h5", nargs="?", default=None, help=argparse.SUPPRESS)  # the old spelling of --data
    p.add_argument("--split", default=SPLIT, choices=("train", "validation", "test"),
                   help="split to score on (default %(default)s)")
    p.add_argument("--max-events", type=int, default=MAX_EVENTS, help="score only the first N events of the split")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=("snr", "cae"),
                   help="baselines to score (default: both)")
    p.add_argument("--snr-shifts", type=int, nargs=6, default=SNR_SHIFTS, metavar="W",
                   help="SNR bucket widths of layers 1-6 of a superlayer, in wires "
                        f"(default {' '.join(map(str, SNR_SHIFTS))})")
    p.add_argument("--snr-max-missing", type=int, default=SNR_MAX_MISSING,
                   help="layers an SNR segment may miss (default %(default)s)")
    p.add_argument("--cae-epochs", type=int, default=CAE_EPOCHS, help="CAE training epochs (default %(default)s)")
    p.add_argument("--cae-batch-size", type=int, default=CAE_BATCH_SIZE,
                   help="CAE training batch size (default %(default)s)")
    p.add_argument("--cae-max-train-pairs", type=int, default=CAE_MAX_TRAIN_PAIRS,
                   help="train the CAE on the first N train events (default: all)")
    p.add_argument("--cae-threshold", type=float, default=CAE_THRESHOLD,
                   help="CAE output threshold (default %(default)s)")
    p.add_argument("--cae-cache", default=CAE_CACHE, help="folder of the cached CAEs (default: beside the HDF5 file)")
    p.add_argument("--cache-dir", dest="cae_cache", help=argparse.SUPPRESS)  # the old spelling of --cae-cache
    p.add_argument("--seed", type=seed_number, default=SEED,
                   help="the CAE's initialisation and training order (default %(default)s)")
    p.add_argument("--split-seed", type=seed_number, default=SPLIT_SEED,
                   help="seed of the train/validation/test split (default %(default)s)")
    p.add_argument("--no-train", action="store_true", help="fail instead of training when no CAE is cached")
    return p


def check_cae_cache(args):
    """Refuse a CAE cache folder that is missing, or read-only when a CAE would have to be saved there."""
    if args.cae_cache is None:
        return
    if Path(args.cae_cache).exists() and not Path(args.cae_cache).is_dir():
        raise InputError(f"{args.cae_cache}: CAE cache folder is a file, not a folder")
    if not Path(args.cae_cache).is_dir():
        raise InputError(f"{args.cae_cache}: CAE cache folder does not exist")
    cached = any(Path(args.cae_cache).glob(f"{Path(args.data).stem}.cae-*.keras"))
    if "cae" in args.methods and not args.no_train and not cached \
            and not can_write_in(args.cae_cache):  # refused before anything is made or written
        raise InputError(f"{args.cae_cache}: CAE cache folder is not writable (choose another --cae-cache)")


def parse_args(argv=None):
    """The command line, with impossible settings refused (InputError)."""
    args = build_parser().parse_args(argv)
    if args.h5 is not None and args.data == DATA:  # --data wins over the old positional
        args.data = args.h5
    if not str(args.data).strip():
        raise InputError("--data: the HDF5 file path is empty")
    args.methods = list(dict.fromkeys(args.methods))  # each scored once, in the order given
    for name in ("max_events", "cae_epochs", "cae_batch_size", "cae_max_train_pairs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if min(args.snr_shifts) < 0 or not 0 <= args.snr_max_missing <= LAYERS_PER_SUPERLAYER:
        raise InputError("--snr-shifts must be >= 0 and --snr-max-missing in 0..6")
    if not 0.0 < args.cae_threshold < 1.0:
        raise InputError(f"--cae-threshold must be in (0, 1), got {args.cae_threshold}")
    check_cae_cache(args)
    return args


def keep_function(method, args):
    """The chosen baseline as f(raw masks) -> kept masks (the CAE is loaded or trained here)."""
    if method == "snr":
        return lambda raw: snr_keep(raw, args.snr_shifts, args.snr_max_missing)
    model = get_cae(args.data, args.cae_cache, train_if_missing=not args.no_train, epochs=args.cae_epochs,
                    seed=args.seed, split_seed=args.split_seed, batch_size=args.cae_batch_size,
                    max_train_pairs=args.cae_max_train_pairs, verbose=2)
    return lambda raw: cae_keep(model, raw, args.cae_threshold)


def main(argv=None):
    """Score the chosen baselines on one split and print one line of scores per baseline."""
    args = parse_args(argv)
    indices = load_split(args.data, split_seed=args.split_seed)[args.split][:args.max_events]
    if len(indices) == 0:
        raise InputError(f"{args.data}: the {args.split} split is empty")
    raw, truth = read_masks(args.data, indices, desc=f"{args.split} events")
    print(f"{args.data}: {len(indices)} {args.split} events, {raw.sum() / len(raw):.1f} raw hits/event, "
          f"{(raw & truth).sum() / len(raw):.1f} track hits/event")
    for method in args.methods:
        keep = keep_function(method, args)
        t0 = time.perf_counter()
        kept = keep(raw)
        rate = len(raw) / (time.perf_counter() - t0)
        s = hit_scores(raw, truth, kept)
        print(f"{method.upper():4s} efficiency {s['efficiency']:.4f}  rejection {s['rejection']:.4f}  "
              f"purity {s['purity']:.4f}  F1 {s['f1']:.4f}  invented/event {s['invented_per_event']:.2f}  "
              f"({rate:,.0f} events/s)")
    return 0


if __name__ == "__main__":
    run_main(main)
