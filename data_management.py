"""The train / validation / test split of an HDF5 file of event pairs, and its tf.data pipelines.

The split is made once per file and settings, saved beside it (data/pairs.h5 ->
data/pairs.split.npz) and reused while the file is unchanged, so training and evaluation agree
on the test events; a changed file or other settings give a new split with a SplitChangedWarning.
Each split is a tf.data.Dataset of (raw, truth) float32 batches (B, 128, 128, 3) in 0..1, read a
whole HDF5 chunk at a time; the training set is reshuffled every pass, reproducibly.

    from data_management import load_datasets, load_split
    train, validation, test = load_datasets("data/pairs.h5")    # len(ds) = batches
    split = load_split("data/pairs.h5")                         # {"train": indices, ...}

Run on its own it prints a summary of the split and times one epoch of the training pipeline:

    python data_management.py --data data/pairs.h5
"""

import argparse
import hashlib
import itertools
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np

import pairs_h5
from event_image import CHANNELS, LAYERS, PADDED_SIZE, PNG_HIT_THRESHOLD, WIRES, crop_event, hit_mask
from script_utils import (
    SEED_LIMIT,
    ArgumentParser,
    InputError,
    atomic_output,
    import_tensorflow,
    progress,
    run_main,
    seed_number,
    tensorflow_here,
)

# --- Settings (each one has a command-line option) ------------------------------------------
DATA = "data/pairs.h5"  # the file written by Pix2Pix_data.py
BATCH_SIZE = 32
TEST_FRACTION = 0.25  # of all pairs
VALIDATION_FRACTION = 0.25  # of the pairs left after the test split
SPLIT_SEED = 1234  # the train/validation/test split (and, by default, the per-pass shuffles)
SHUFFLE_WINDOW = 1024  # pairs permuted together when shuffling (whole HDF5 chunks are gathered)
MEMORY_BUDGET_MB = 1024  # load pairs into memory only when raw + truth of the file fit in this

# --- Fixed ----------------------------------------------------------------------------------
FINGERPRINT_SAMPLES = 8  # events hashed (with N and the names) to notice a changed file
SPLITS = ("train", "validation", "test")
PAIR_SHAPE = pairs_h5.EVENT_SHAPE
PAIR_BYTES = 2 * int(np.prod(PAIR_SHAPE))  # raw + truth of one pair, uint8
SPLIT_FORMAT = 1  # version of the saved split file


class SplitChangedWarning(UserWarning):
    """The saved split did not match the HDF5 file or the settings; a new one was made."""


# --- Checking the input ---------------------------------------------------------------------
def check_fractions(test_fraction, validation_fraction):
    """Refuse fractions outside (0, 1), or so near 1 that training would get under a millionth of the pairs."""
    for name, value in (("test fraction", test_fraction), ("validation fraction", validation_fraction)):
        if not 0.0 < value < 1.0:
            raise InputError(f"{name} must be between 0 and 1 (exclusive), got {value}")
    if (1 - test_fraction) * (1 - validation_fraction) < 1e-6:
        raise InputError(f"test fraction {test_fraction} and validation fraction {validation_fraction} leave "
                         "training less than a millionth of the pairs")


def split_sizes(n, test_fraction=TEST_FRACTION, validation_fraction=VALIDATION_FRACTION):
    """(train, validation, test) pair counts for N pairs, as train_test_split rounds them.

    train_test_split gives the test part ceil(fraction * n) and the rest to the other part.
    """
    n_test = int(np.ceil(test_fraction * n))
    n_rest = n - n_test
    n_validation = int(np.ceil(validation_fraction * n_rest))
    return n_rest - n_validation, n_validation, n_test


def min_pairs(test_fraction=TEST_FRACTION, validation_fraction=VALIDATION_FRACTION):
    """The fewest pairs that leave all three splits non-empty (training holds at most N (1 - t) (1 - v))."""
    n = max(3, int(1 / ((1 - test_fraction) * (1 - validation_fraction))))
    while min(split_sizes(n, test_fraction, validation_fraction)) < 1:
        n += 1
    return n


def check_h5(h5_path, test_fraction=TEST_FRACTION, validation_fraction=VALIDATION_FRACTION, splits=True):
    """Check the HDF5 file of pairs and return N; raise InputError naming the problem.

    Required: datasets `raw` and `truth`, uint8, shape (N, 128, 128, 3) each, enough pairs to
    make all three splits non-empty (splits=False: one pair, for a reader of events only); `names`,
    if present, must have N entries.
    """
    path = Path(h5_path)
    check_fractions(test_fraction, validation_fraction)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        lengths = {}
        for key in ("raw", "truth"):
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise InputError(f"{path}: no '{key}' dataset (expected 'raw' and 'truth' as Pix2Pix_data.py writes)")
            ds = f[key]
            if ds.dtype != np.uint8:
                raise InputError(f"{path}: '{key}' has dtype {ds.dtype}, expected uint8")
            if ds.ndim != 4 or ds.shape[1:] != PAIR_SHAPE:
                raise InputError(f"{path}: '{key}' has shape {ds.shape}, expected (N, {PADDED_SIZE}, {PADDED_SIZE}, "
                                 f"{CHANNELS})")
            lengths[key] = ds.shape[0]
            pairs_h5.check_virtual_sources(path, key, ds)
        if lengths["raw"] != lengths["truth"]:
            raise InputError(f"{path}: 'raw' has {lengths['raw']} pairs but 'truth' has {lengths['truth']}")
        n = lengths["raw"]
        if "names" in f and len(f["names"]) != n:
            raise InputError(f"{path}: 'names' has {len(f['names'])} entries but 'raw' and 'truth' have {n}")
        ids = f.get("track_ids")
        if ids is not None and (ids.dtype != np.uint8 or ids.shape != (n, LAYERS, WIRES)):
            raise InputError(f"{path}: 'track_ids' is {ids.dtype} {ids.shape}, expected uint8 ({n}, {LAYERS}, {WIRES})")
    if not splits:
        if n == 0:
            raise InputError(f"{path}: holds no pairs")
        return n
    need = min_pairs(test_fraction, validation_fraction)
    if n < need:
        raise InputError(f"{path}: only {n} pairs; at least {need} are needed to make train, validation and "
                         f"test non-empty")
    return n


def fingerprint(h5_path):
    """A cheap fingerprint of the file's contents: N, the names and a few evenly spaced events.

    Not a hash of the whole file (that would read all of it): a change that touches neither
    the names nor a sampled event goes unnoticed.
    """
    h = hashlib.sha256()
    with pairs_h5.reading(h5_path) as f:
        n = f["raw"].shape[0]
        h.update(f"n={n}".encode())
        if "names" in f:
            names = np.asarray(f["names"][()]).ravel()
            h.update(b"\0".join(x if isinstance(x, bytes) else str(x).encode() for x in names))
        sample = np.unique(np.linspace(0, n - 1, min(n, FINGERPRINT_SAMPLES)).astype(np.int64))
        for key in ("raw", "truth"):
            h.update(np.ascontiguousarray(f[key][sample]).tobytes())
    return h.hexdigest()


# --- The split --------------------------------------------------------------------------------
def split_path(h5_path):
    """Where the split of an HDF5 file is saved: pairs.h5 -> pairs.split.npz."""
    return Path(h5_path).with_suffix(".split.npz")


def make_split(n, split_seed=SPLIT_SEED, test_fraction=TEST_FRACTION, validation_fraction=VALIDATION_FRACTION):
    """Shuffle the indices 0..n-1 and cut them into train/validation/test (sorted int64 arrays)."""
    # Imported here: scikit-learn takes a second to import, which scripts that need no split
    # (denoising a PNG folder, say) should not pay.
    from sklearn.model_selection import train_test_split
    from sklearn.utils import shuffle as sklearn_shuffle

    order = sklearn_shuffle(np.arange(n, dtype=np.int64), random_state=split_seed)
    rest, test = train_test_split(order, test_size=test_fraction, shuffle=False)
    train, validation = train_test_split(rest, test_size=validation_fraction, shuffle=False)
    return {name: np.sort(part) for name, part in zip(SPLITS, (train, validation, test), strict=True)}


def _read_saved_split(path):
    """The saved split file as a dict, or None when it is missing or unreadable."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except Exception:  # a damaged or foreign file: treated as no split, then replaced
        return None


def _why_not_reusable(saved, n, fp, wanted):
    """Why a saved split (a dict) does not fit the file and settings, or None when it does."""
    try:
        if int(saved["format"]) != SPLIT_FORMAT:
            return "it has another format"
        if int(saved["n"]) != n:
            return f"it was made for {int(saved['n'])} pairs, the file now has {n}"
        if str(saved["fingerprint"]) != fp:
            return "the file's contents changed since it was made"
        for key, value in wanted.items():
            if float(saved[key]) != value:
                name = "split seed" if key == "seed" else key.replace("_", " ")
                return f"it was made with {name} {saved[key].item()}, now {value}"
    except KeyError:
        return "it is incomplete"
    return None


def load_split(h5_path, split_seed=SPLIT_SEED, test_fraction=TEST_FRACTION, validation_fraction=VALIDATION_FRACTION):
    """The split of an HDF5 file: {"train", "validation", "test"} -> sorted int64 indices.

    Validates the file (check_h5), then reuses the split saved beside it when it was made for
    the same file contents, split seed and fractions; otherwise makes the split, saves it
    atomically and, if an old one was replaced, warns (SplitChangedWarning) saying why.
    """
    n = check_h5(h5_path, test_fraction, validation_fraction)
    if not 0 <= split_seed < SEED_LIMIT:
        raise InputError(f"split seed must be an integer from 0 to {SEED_LIMIT - 1}, got {split_seed}")
    path = split_path(h5_path)
    fp = fingerprint(h5_path)
    saved = _read_saved_split(path)
    # "seed" is the split seed's key in the saved file (format 1)
    wanted = {"seed": split_seed, "test_fraction": test_fraction, "validation_fraction": validation_fraction}
    reason = "it could not be read" if saved is None and path.exists() else None
    if saved is not None:
        reason = _why_not_reusable(saved, n, fp, wanted)
        if reason is None:
            return {name: saved[name].astype(np.int64) for name in SPLITS}
    split = make_split(n, split_seed, test_fraction, validation_fraction)
    if reason is not None:
        warnings.warn(f"{h5_path}: replacing the saved split {path} because {reason}; made a new split "
                      f"(split seed {split_seed}); results made with the old split are not comparable",
                      SplitChangedWarning, stacklevel=2)
    try:
        with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as out:
            np.savez(out, format=SPLIT_FORMAT, n=n, fingerprint=fp, **wanted, **split)
    except (InputError, OSError) as exc:  # e.g. a read-only data folder: the split is deterministic anyway
        warnings.warn(f"{h5_path}: could not save the split ({exc}); using it unsaved", SplitChangedWarning,
                      stacklevel=2)
    return split


# --- Reading batches ----------------------------------------------------------------------
def fits_in_memory(n, memory_budget_mb=MEMORY_BUDGET_MB):
    """Whether raw + truth of a whole file of n pairs fit in the memory budget."""
    return n * PAIR_BYTES <= memory_budget_mb * 2**20


def make_dataset(h5_path, indices, batch_size=BATCH_SIZE, shuffle=False, seed=SPLIT_SEED, epoch=0,
                 drop_remainder=False, window=SHUFFLE_WINDOW, memory_budget_mb=MEMORY_BUDGET_MB, memory=None):
    """A tf.data.Dataset of (raw, truth) float32 batches (B, 128, 128, 3) of the given pairs, each pixel 0 or 1.

    A hit (any channel above PNG_HIT_THRESHOLD) is 1 on all three channels, as the denoiser feeds the model
    (event_image.network_input), whatever colour the file stores.

    shuffle=False: file order. shuffle=True: the k-th pass (k = 0, 1, ... from creation) is
    ordered by np.random.default_rng([seed, epoch + k]) as pairs_h5.epoch_windows says (the chunks in
    random order, windows of about `window` pairs permuted), so a resumed run made with
    epoch=E repeats the order of epoch E, whether the pairs stream or sit in memory. The last short batch is kept
    unless drop_remainder (then the batch size is static). len(dataset) is the number of batches.
    The pairs are held in memory after the first pass when raw + truth of the whole file fit in
    memory_budget_mb; otherwise every pass streams from the file. memory: a dict that datasets of the
    same file and pairs share (the training's, one per epoch), so that they read the pairs once.
    """
    tf = import_tensorflow()

    indices = np.sort(np.asarray(indices, np.int64))
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if drop_remainder and len(indices) < batch_size:
        raise InputError(f"{h5_path}: {len(indices)} pairs are fewer than one batch of {batch_size} "
                         "(with the last short batch dropped nothing would be left)")
    with h5py.File(h5_path, "r") as f:
        n = f["raw"].shape[0]
    memory = ({} if memory is None else memory) if fits_in_memory(n, memory_budget_mb) else None
    passes = itertools.count(epoch)

    def generator():
        yield from pairs_h5.iterate_uint8(h5_path, indices, batch_size, window, shuffle, seed, next(passes),
                                          drop_remainder, memory)

    batch_dim = batch_size if drop_remainder else None
    spec = tf.TensorSpec((batch_dim,) + PAIR_SHAPE, tf.uint8)
    ds = tf.data.Dataset.from_generator(generator, output_signature=(spec, spec))
    batches = len(indices) // batch_size if drop_remainder else -(-len(indices) // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))

    def as_hits(images):  # event_image.network_input's job, in TensorFlow
        hits = tf.reduce_max(images, axis=-1, keepdims=True) > PNG_HIT_THRESHOLD
        return tf.cast(tf.repeat(hits, CHANNELS, axis=-1), tf.float32)

    def scale(raw, truth):
        return as_hits(raw), as_hits(truth)

    return ds.map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def load_datasets(h5_path, batch_size=BATCH_SIZE, seed=SPLIT_SEED, drop_remainder=False, epoch=0,
                  test_fraction=TEST_FRACTION, validation_fraction=VALIDATION_FRACTION,
                  memory_budget_mb=MEMORY_BUDGET_MB, *, split_seed=SPLIT_SEED):
    """(train, validation, test) tf.data.Datasets of (raw, truth) batches of the file's split.

    The split is load_split's with split_seed; seed orders the training passes. train is
    reshuffled every pass (and drops its last short batch if drop_remainder); validation and
    test are in file order with every pair.
    """
    split = load_split(h5_path, split_seed, test_fraction, validation_fraction)
    common = dict(batch_size=batch_size, seed=seed, memory_budget_mb=memory_budget_mb)
    return (
        make_dataset(h5_path, split["train"], shuffle=True, epoch=epoch, drop_remainder=drop_remainder, **common),
        make_dataset(h5_path, split["validation"], **common),
        make_dataset(h5_path, split["test"], **common),
    )


# --- The summary (run as a script) ------------------------------------------------------
def hits_per_event(h5_path, indices, batch_size=BATCH_SIZE):
    """Hits per event (numpy arrays) of raw and truth over the given pairs, read in file order."""
    raw_hits, truth_hits = [], []
    batches = pairs_h5.iterate_uint8(h5_path, indices, batch_size, SHUFFLE_WINDOW)
    for raw, truth in progress(batches, total=-(-len(indices) // batch_size), desc="counting hits", leave=False):
        raw_hits.append(hit_mask(crop_event(raw), PNG_HIT_THRESHOLD).sum(axis=(1, 2)))
        truth_hits.append(hit_mask(crop_event(truth), PNG_HIT_THRESHOLD).sum(axis=(1, 2)))
    return np.concatenate(raw_hits), np.concatenate(truth_hits)


def time_epoch(dataset):
    """Iterate a dataset once; return (pairs, seconds)."""
    pairs, t0 = 0, time.perf_counter()
    for raw, _ in progress(dataset, total=len(dataset), desc="timing one epoch", leave=False):
        pairs += int(raw.shape[0])
    return pairs, time.perf_counter() - t0


class NotedData(argparse.Action):
    """--data, noted as given (data_given): the old positional spelling must not name a second file."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.data, namespace.data_given = values, True


def build_parser():
    """The command line: every setting above."""
    p = ArgumentParser(description=__doc__)
    p.add_argument("--data", default=DATA, action=NotedData, help="HDF5 file of pairs (default %(default)s)")
    p.add_argument("h5_path", nargs="?", default=None, help=argparse.SUPPRESS)  # the old spelling of --data
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="pairs per batch (default %(default)s)")
    p.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                   help="fraction of all pairs in the test split (default %(default)s)")
    p.add_argument("--validation-fraction", type=float, default=VALIDATION_FRACTION,
                   help="fraction of the non-test pairs in the validation split (default %(default)s)")
    p.add_argument("--split-seed", type=seed_number, default=SPLIT_SEED,
                   help="seed of the train/validation/test split (default %(default)s)")
    p.add_argument("--shuffle-window", type=int, default=SHUFFLE_WINDOW,
                   help="pairs permuted together when shuffling (default %(default)s)")
    p.add_argument("--memory-budget-mb", type=float, default=MEMORY_BUDGET_MB,
                   help="hold the pairs in memory when the whole file fits in this (default %(default)s)")
    p.add_argument("--no-timing", action="store_true", help="skip timing one epoch of the training pipeline")
    return p


def parse_args(argv=None):
    """The command line, with impossible settings refused (InputError)."""
    args = build_parser().parse_args(argv)
    if args.h5_path is not None and getattr(args, "data_given", False):
        raise InputError(f"two HDF5 files, --data {args.data} and {args.h5_path}: give one, as --data")
    if args.h5_path is not None:
        args.data = args.h5_path
    if not str(args.data).strip():
        raise InputError("--data: the HDF5 file path is empty")
    if args.batch_size < 1 or args.shuffle_window < 1:
        raise InputError("--batch-size and --shuffle-window must be at least 1")
    return args


def print_split_table(h5_path, split, batch_size):
    """One line per split: pairs, share, batches, raw and truth hits per event (mean ± std)."""
    n = sum(len(v) for v in split.values())
    print(f"{'split':<11} {'pairs':>8} {'%':>6} {'batches':>8} {'raw hits/event':>16} {'truth hits/event':>17}")
    for name in SPLITS:
        idx = split[name]
        raw_hits, truth_hits = hits_per_event(h5_path, idx, batch_size)
        print(f"{name:<11} {len(idx):>8} {100 * len(idx) / n:>6.2f} {-(-len(idx) // batch_size):>8} "
              f"{raw_hits.mean():>9.1f} ± {raw_hits.std():<5.1f} {truth_hits.mean():>9.1f} ± {truth_hits.std():<5.1f}")


def main(argv=None):
    """Make or reuse the split, print its summary and time one training epoch."""
    args = parse_args(argv)
    saved = split_path(args.data)
    before = saved.stat().st_mtime_ns if saved.exists() else None
    split = load_split(args.data, args.split_seed, args.test_fraction, args.validation_fraction)
    reused = before is not None and saved.exists() and saved.stat().st_mtime_ns == before  # not made again
    n = sum(len(v) for v in split.values())
    print(f"{args.data}: {n} pairs, split {'reused from' if reused else 'saved to'} {saved} "
          f"(split seed {args.split_seed})")
    print_split_table(args.data, split, args.batch_size)
    if not args.no_timing and not tensorflow_here():
        print("no TensorFlow here: the split is saved, the pipeline's timing skipped")
    elif not args.no_timing:
        train = make_dataset(args.data, split["train"], args.batch_size, shuffle=True, seed=args.split_seed,
                             window=args.shuffle_window, memory_budget_mb=args.memory_budget_mb)
        mode = "in memory after the first pass" if fits_in_memory(n, args.memory_budget_mb) else "streaming"
        pairs, seconds = time_epoch(train)
        print(f"one epoch of the training pipeline ({mode}): {pairs} pairs in {seconds:.2f} s "
              f"= {pairs / max(seconds, 1e-9):.0f} pairs/s")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    run_main(main)
