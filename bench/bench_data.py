"""Benchmark of Pix2Pix_data.py against a naive loop and against bare PNG decoding.

On one set of generated PNG pairs (make_events.py), in one run, each method in a fresh
child process whose memory is sampled from outside:
  (a) naive     one process: PIL open, pad, append to lists, write the HDF5 file at the end
  (b) convert   Pix2Pix_data.convert (worker processes, streamed chunks)
  (c) decode    bare PNG decoding of the same files with all cores (the ceiling for (b))
It prints pairs per second, the ratios (b)/(a) and (b)/(c), and the peak memory of (a) and
(b) at two sizes (N and N/4) to show that (b) does not grow with N. Also the file size and
the read speed of the HDF5 file in batches of 32 (how data_management reads it).

    python bench/bench_data.py               # 20,000 pairs (about a minute on 2 cores)
    python bench/bench_data.py -n 4000       # fewer
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

import event_image as ei  # noqa: E402
import Pix2Pix_data  # noqa: E402
import worker_pools  # noqa: E402
from script_utils import ArgumentParser, check_folder_can_be_made, run_main  # noqa: E402

N_PAIRS = 20_000
SMALL_FRACTION = 4  # memory is also measured at N / SMALL_FRACTION
REPEATS = 2  # (b) and (c) are timed this many times; the best counts
WORKERS = os.cpu_count() or 1
READ_BATCH = 32  # data_management reads contiguous batches of 32
SAMPLE_SECONDS = 0.02  # how often the children's memory is sampled


# --- The three methods (each runs in a child process: `bench_data.py --child METHOD ...`) ---------
def naive(raw_dir, truth_dir, output):
    """(a) The straightforward loop: open, pad, append to lists, write everything at the end."""
    raws, truths, names = [], [], []
    for name in sorted(os.listdir(raw_dir)):
        with Image.open(Path(raw_dir) / name) as im:
            raws.append(ei.pad_event(np.asarray(im.convert("RGB"))))
        with Image.open(Path(truth_dir) / name) as im:
            truths.append(ei.pad_event(np.asarray(im.convert("RGB"))))
        names.append(name)
    with h5py.File(output, "w") as f:
        chunks = (Pix2Pix_data.CHUNK_EVENTS, *Pix2Pix_data.EVENT_SHAPE)
        f.create_dataset("raw", data=np.stack(raws), chunks=chunks, compression="gzip", compression_opts=1)
        f.create_dataset("truth", data=np.stack(truths), chunks=chunks, compression="gzip", compression_opts=1)
        f.create_dataset("names", data=names, dtype=h5py.string_dtype("utf-8"))
    return len(names)


def decode_pairs(paths):
    """(c) worker: decode the PNGs of some pairs and nothing else."""
    for raw, truth in paths:
        for path in (raw, truth):
            with Image.open(path) as im:
                np.asarray(im.convert("RGB"))
    return len(paths)


def decode(raw_dir, truth_dir, workers):
    """(c) Bare PNG decoding of every pair with all cores: the ceiling of any converter."""
    import multiprocessing

    names = sorted(os.listdir(raw_dir))
    jobs = [[(os.path.join(raw_dir, n), os.path.join(truth_dir, n)) for n in names[i:i + 64]]
            for i in range(0, len(names), 64)]
    with multiprocessing.get_context(worker_pools.POOL_START).Pool(workers) as pool:  # started as convert's
        return sum(pool.imap_unordered(decode_pairs, jobs))


def cpu_seconds():
    """User + system CPU time of this process and of its finished (waited-for) children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def child(method, raw_dir, truth_dir, output, workers):
    """Run one method, timed from after the imports; print {"pairs", "seconds", "cpu"} as JSON."""
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    if method == "naive":
        pairs = naive(raw_dir, truth_dir, output)
    elif method == "convert":
        pairs = Pix2Pix_data.convert(raw_dir, truth_dir, output, workers=workers, overwrite=True)["pairs"]
    else:
        pairs = decode(raw_dir, truth_dir, workers)
    print(json.dumps({"pairs": pairs, "seconds": time.perf_counter() - t0, "cpu": cpu_seconds() - cpu0}))


# --- Running and measuring ---------------------------------------------------------------------------
def run_child(method, events, output, workers):
    """Run a method in a child process; its result, and the peak RSS of its main process and
    of its whole process tree (summed), sampled every SAMPLE_SECONDS."""
    cmd = [sys.executable, __file__, "--child", method, str(events / "raw"), str(events / "truth"), str(output),
           str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak_main = peak_tree = 0
    while proc.poll() is None:
        try:
            main_rss = ps.memory_info().rss
            tree = main_rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
        except psutil.Error:
            break
        peak_main, peak_tree = max(peak_main, main_rss), max(peak_tree, tree)
        time.sleep(SAMPLE_SECONDS)
    out, _ = proc.communicate()
    if proc.returncode:
        sys.exit(f"bench: {method} failed")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(rate=result["pairs"] / result["seconds"], cpu_rate=result["pairs"] / result["cpu"],
                  peak_main_mb=peak_main / 2**20, peak_tree_mb=peak_tree / 2**20)
    return result


def make_events(folder, n):
    """Generate n pairs with make_events.py (kept between runs when folder already holds them)."""
    if (folder / "raw").is_dir() and len(os.listdir(folder / "raw")) == n:
        return
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, str(ROOT / "make_events.py"), "--output", str(folder), "-n", str(n), "--seed", "0"],
                   check=True, stdout=subprocess.DEVNULL)


def read_speed(path):
    """Pairs per second read from the file in contiguous batches of READ_BATCH (data_management's way)."""
    with h5py.File(path, "r") as f:
        n = len(f["raw"])
        t0 = time.perf_counter()
        for a in range(0, n, READ_BATCH):
            f["raw"][a:a + READ_BATCH], f["truth"][a:a + READ_BATCH]
        return n / (time.perf_counter() - t0)


def main(argv=None):
    """Generate the PNG sets, time each method in its own child process, print the ratios."""
    p = ArgumentParser(description=__doc__)
    p.add_argument("-n", "--pairs", type=int, default=N_PAIRS, help="pairs to generate (default %(default)s)")
    p.add_argument("--workers", type=int, default=WORKERS, help="processes for (b) and (c) (default %(default)s)")
    p.add_argument("--repeats", type=int, default=REPEATS, help="timings of (b) and (c); best counts")
    p.add_argument("--dir", default=None, help="keep the generated PNGs and outputs here (default: a temp folder)")
    a = p.parse_args(argv)
    for flag, value, least in (("-n", a.pairs, SMALL_FRACTION), ("--workers", a.workers, 1),
                               ("--repeats", a.repeats, 1)):
        if value < least:
            p.error(f"{flag} must be at least {least}, not {value}")
    if a.dir:
        check_folder_can_be_made(a.dir)
    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="bench_data."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        sizes = (a.pairs, max(a.pairs // SMALL_FRACTION, 1))
        t0 = time.perf_counter()
        for n in sizes:
            make_events(work / f"events_{n}", n)
        print(f"{a.pairs} and {sizes[1]} generated pairs ready ({time.perf_counter() - t0:.0f} s); "
              f"{a.workers} workers, {os.cpu_count()} CPUs")
        big = work / f"events_{a.pairs}"
        load = os.getloadavg()
        runs = {}
        for _ in range(a.repeats):  # interleaved, so that a busy moment hurts both alike
            for method in ("decode", "convert"):
                r = run_child(method, big, work / f"{method}.h5", a.workers)
                if method not in runs or r["rate"] > runs[method]["rate"]:
                    runs[method] = r
        runs["naive"] = run_child("naive", big, work / "naive.h5", 1)
        small = {m: run_child(m, work / f"events_{sizes[1]}", work / f"{m}_small.h5", w)
                 for m, w in (("naive", 1), ("convert", a.workers))}

        a_, b_, c_ = runs["naive"], runs["convert"], runs["decode"]
        print(f"load average before: {load[0]:.1f} (on a busy machine the per-CPU-second figures are the fair ones)")
        for label, r in (("(a) naive loop   ", a_), ("(b) Pix2Pix_data ", b_), ("(c) bare decoding", c_)):
            print(f"{label} {r['rate']:7.0f} pairs/s wall ({r['seconds']:5.1f} s)   {r['cpu_rate']:7.0f} pairs per "
                  f"CPU-second ({r['cpu']:5.1f} CPU-s)")
        print(f"wall:       (b)/(a) = {b_['rate'] / a_['rate']:.2f}   (b)/(c) = {b_['rate'] / c_['rate']:.2f} "
              "(target >= 0.8)")
        print(f"CPU-second: (b)/(a) = {b_['cpu_rate'] / a_['cpu_rate']:.2f}   "
              f"(b)/(c) = {b_['cpu_rate'] / c_['cpu_rate']:.2f}")
        for label, n, ra, rb in (("N", sizes[0], a_, b_), ("N/4", sizes[1], small["naive"], small["convert"])):
            print(f"peak memory at {label} = {n:6d}: (a) {ra['peak_main_mb']:7.0f} MiB   (b) main "
                  f"{rb['peak_main_mb']:5.0f} MiB, with workers {rb['peak_tree_mb']:5.0f} MiB (RSS summed)")
        size = (work / "convert.h5").stat().st_size
        raw_bytes = 2 * a.pairs * int(np.prod(Pix2Pix_data.EVENT_SHAPE))
        print(f"file: {size / 1e6:.1f} MB for {raw_bytes / 1e6:.0f} MB of uint8 images ({raw_bytes / size:.0f}x); "
              f"naive (h5py gzip level 1): {(work / 'naive.h5').stat().st_size / 1e6:.1f} MB; "
              f"read in batches of {READ_BATCH}: {read_speed(work / 'convert.h5'):.0f} pairs/s")
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        run_main(main)
