"""Benchmark of data_management's training pipeline on large generated HDF5 files.

For each file size (50,000 and 200,000 pairs by default) a file like Pix2Pix_data.py writes is
generated once with make_events (padded 128x128x3, chunks of 32 events, gzip level 1) and kept
in WORK_DIR. Then, in a fresh child process per size (so that its peak memory is its own):

- pairs/s of one epoch of the shuffled training split through make_dataset (streaming: the files
  are far above the memory budget), and the peak resident memory of that process;
- pairs/s of a naive pipeline in the same process: a generator that reads one random index at a
  time (h5py dataset[i]), batched by tf.data, same scaling;
- pairs/s of the simpler shuffle "permute the indices, cut batches, sort each, read each batch
  with one fancy-indexed h5py read", to show why data_management reads whole chunks instead.

Finally, on a small file that fits the memory budget, the second epoch in memory against
streaming. Run: python bench/bench_pipeline.py [--sizes 50000 200000] [--work-dir DIR]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import data_management as dm  # noqa: E402
import event_image as ei  # noqa: E402
import pairs_h5  # noqa: E402
from script_utils import ArgumentParser, check_folder_can_be_made, run_main  # noqa: E402

# -------------------------------------------------------------------------------------------
SIZES = (50_000, 200_000)  # pairs per generated file
SMALL_SIZE = 3_000  # a file that fits the memory budget (in memory vs streaming)
WORK_DIR = "/tmp/bench_pipeline"  # generated files are kept here and reused
BATCH_SIZE = 32
NAIVE_PAIRS = 2_000  # pairs timed through the naive and the sort-per-batch pipelines
CHUNK_EVENTS = pairs_h5.CHUNK_EVENTS  # as Pix2Pix_data.py writes
SLICE = 2_000  # events generated and written at a time
SEED = 1
LUMINOSITY = 1.0
# -------------------------------------------------------------------------------------------


def build_file(path, n):
    """Write n generated pairs (make_events) like Pix2Pix_data.py does, slice by slice; skip if present."""
    import h5py

    import make_events

    if path.exists():
        return
    tmp = path.with_suffix(".partial")
    shape = (n,) + dm.PAIR_SHAPE
    t0 = time.perf_counter()
    with h5py.File(tmp, "w") as f:
        sets = [f.create_dataset(k, shape, np.uint8, chunks=(CHUNK_EVENTS,) + dm.PAIR_SHAPE, compression="gzip",
                                 compression_opts=1) for k in ("raw", "truth")]
        for start in range(0, n, SLICE):
            stop = min(n, start + SLICE)
            raw, truth = make_events.generate_events(stop - start, SEED, LUMINOSITY, start)
            sets[0][start:stop] = ei.pad_event(raw)
            sets[1][start:stop] = ei.pad_event(truth)
        f.create_dataset("names", data=[make_events.event_name(i) for i in range(n)], dtype=h5py.string_dtype())
    tmp.rename(path)
    print(f"generated {path} ({n} pairs, {path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s",
          flush=True)


def rate(batches, limit=None):
    """Iterate batches (up to limit pairs); return pairs/s."""
    pairs, t0 = 0, time.perf_counter()
    for raw, _ in batches:
        pairs += int(raw.shape[0])
        if limit and pairs >= limit:
            break
    return pairs / (time.perf_counter() - t0)


def naive_dataset(path, indices, seed):
    """One random index at a time through from_generator, then batched: the pipeline to beat."""
    import h5py
    import tensorflow as tf

    def generator():
        with h5py.File(path, "r") as f:
            for i in np.random.default_rng(seed).permutation(indices):
                yield f["raw"][i], f["truth"][i]

    spec = tf.TensorSpec(dm.PAIR_SHAPE, tf.uint8)
    ds = tf.data.Dataset.from_generator(generator, output_signature=(spec, spec)).batch(BATCH_SIZE)
    return ds.map(lambda r, t: (tf.cast(r, tf.float32) / 255.0, tf.cast(t, tf.float32) / 255.0)).prefetch(2)


def sorted_batches(path, indices, seed):
    """Permute, cut into batches, sort each batch, one fancy-indexed read per batch (numpy only)."""
    import h5py

    order = np.random.default_rng(seed).permutation(indices)
    with h5py.File(path, "r") as f:
        for s in range(0, len(order), BATCH_SIZE):
            batch = np.sort(order[s:s + BATCH_SIZE])
            yield f["raw"][batch], f["truth"][batch]


def child(path):
    """Measure one file in this process; print one JSON line."""
    split = dm.load_split(path, split_seed=SEED)
    train = split["train"]
    ds = dm.make_dataset(path, train, BATCH_SIZE, shuffle=True, seed=SEED)
    t0, cpu0 = time.perf_counter(), time.process_time()
    pipeline = rate(ds)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    naive = rate(naive_dataset(path, train, SEED), NAIVE_PAIRS)
    per_batch_sort = rate(sorted_batches(path, train, SEED), NAIVE_PAIRS)
    print(json.dumps({"n": len(train) + len(split["validation"]) + len(split["test"]), "train": len(train),
                      "pipeline": pipeline, "seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak_mb, "naive": naive,
                      "sort_per_batch": per_batch_sort}))


def memory_vs_streaming(path):
    """Second-epoch pairs/s of the training split held in memory and streamed (same order)."""
    train = dm.load_split(path, split_seed=SEED)["train"]
    out = {}
    for mode, budget in (("streaming", 0), ("in memory", dm.MEMORY_BUDGET_MB)):
        ds = dm.make_dataset(path, train, BATCH_SIZE, shuffle=True, seed=SEED, memory_budget_mb=budget)
        first = rate(ds)
        out[mode] = (first, rate(ds))
    return out


def main(argv=None):
    """Generate the files, measure each in a child process, print the table."""
    p = ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="pairs per file (default %(default)s)")
    p.add_argument("--work-dir", default=WORK_DIR, help="where the generated files are kept (default %(default)s)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(Path(args.child))
    if min(args.sizes) < CHUNK_EVENTS:
        p.error(f"--sizes: each at least {CHUNK_EVENTS} pairs (one chunk), not {min(args.sizes)}")
    work = Path(args.work_dir)
    check_folder_can_be_made(work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs; batch {BATCH_SIZE}; chunks of {CHUNK_EVENTS} events, gzip 1; "
          f"memory budget {dm.MEMORY_BUDGET_MB} MB; shuffle window {dm.SHUFFLE_WINDOW}", flush=True)
    rows = []
    for n in args.sizes:
        path = work / f"pairs_{n}.h5"
        build_file(path, n)
        proc = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"\n{'pairs':>8} {'train':>7} {'pipeline pairs/s':>17} {'epoch s':>8} {'CPU s':>6} {'pairs/CPU-s':>12} "
          f"{'peak RSS MB':>12} {'naive pairs/s':>14} {'ratio':>6} {'sort-per-batch pairs/s':>23}")
    for r in rows:
        print(f"{r['n']:>8} {r['train']:>7} {r['pipeline']:>17.0f} {r['seconds']:>8.1f} {r['cpu_seconds']:>6.1f} "
              f"{r['train'] / r['cpu_seconds']:>12.0f} {r['peak_mb']:>12.0f} {r['naive']:>14.0f} "
              f"{r['pipeline'] / r['naive']:>6.1f} {r['sort_per_batch']:>23.0f}")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (other processes share the {os.cpu_count()} CPUs)")
    small = work / f"pairs_{SMALL_SIZE}.h5"
    build_file(small, SMALL_SIZE)
    for mode, (first, second) in memory_vs_streaming(small).items():
        print(f"{SMALL_SIZE} pairs, {mode}: first epoch {first:.0f} pairs/s, second epoch {second:.0f} pairs/s")
    return 0


if __name__ == "__main__":
    run_main(main)
