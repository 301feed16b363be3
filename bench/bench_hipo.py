"""Benchmark of clas12_hipo: HIPO -> sector images, and HIPO -> HIPO with DC order rewritten.

On one synthetic file of N events x 2 sectors (hipo_writer.write_events), each measurement in a
fresh child process (its own peak memory, ru_maxrss), against reading the same file's raw bytes
in that process (the I/O floor):
  (a) raw       the file read in 8 MiB blocks
  (b) events    hipopybind's bare event loop (Reader.next + read, no bank decoded)
  (c) images    list-free loop over clas12_hipo.read_sector_events (sector images/s)
  (d) rewrite   clas12_hipo.rewrite_orders with a keep-all decide (events/s)
(c) is also run on the first N/4 events' file: its peak memory should not grow with N.

Then the scripts' HIPO routes, each in a fresh child process, on make_events' synthetic set
(--format hipo, 2 sectors per HIPO event, and the same events as PNG pairs):
  (e) HIPO -> HDF5 (hipo_pairs.convert_hipo, Pix2Pix_data.py --hipo) against the PNG route
      (Pix2Pix_data.convert) on the same --pairs-sectors sector images: sectors/s, HIPO events/s,
      peak memory of the main process and of a worker; the HIPO route again on a quarter of them
      (flat memory); a few chunks of both files compared.
  (f) HIPO -> denoised HIPO (hipo_denoise.denoise_hipo, Pix2Pix_denoise.py --hipo) with an untrained
      width-16 generator (the demo's width; the time does not depend on the weights), on
      --denoise-sectors sectors: events/s, time in the model vs in the rest (HIPO reading and
      writing, thresholds), and a keep-all rewrite of the same file (the HIPO I/O alone).
      Target: HIPO I/O at most 20 % of the denoising time.

    python bench/bench_hipo.py               # 20,000 events, 100,000 sectors, 4,000 denoised (about 10 min)
    python bench/bench_hipo.py -n 4000 --pairs-sectors 20000 --denoise-sectors 1000
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hipopybind as hb  # noqa: E402
import numpy as np  # noqa: E402

import clas12_hipo as ch  # noqa: E402
import hipo_writer  # noqa: E402
from script_utils import ArgumentParser, run_main  # noqa: E402

N_EVENTS = 20_000
PAIRS_SECTORS = 100_000  # (e): sector images converted to HDF5 by each route
DENOISE_SECTORS = 4_000  # (f): sector images denoised
WIDTH = 16  # (f): the demo's generator width
WORKERS = 2  # (e): conversion processes of both routes
SECTORS = (2, 5)
SMALL_FRACTION = 4
BLOCK = 8 << 20


def synthetic_events(n, seed=1):
    """n events of two sectors: one straight track (36 hits, id 1) and 2 % noise each."""
    rng = np.random.default_rng(seed)
    rows = np.arange(ch.N_LAYERS)
    for i in range(n):
        sectors = {}
        for s in SECTORS:
            truth = np.zeros((ch.N_LAYERS, ch.N_WIRES), bool)
            wires = np.clip(rng.integers(10, 100) + np.round(rng.uniform(-1, 1) * rows), 0, 111).astype(int)
            truth[rows, wires] = True
            raw = truth | (rng.random(truth.shape) < 0.02)
            sectors[s] = (raw, truth, truth.astype(np.int16))
        yield {"run": 1, "event": i + 1, "sectors": sectors}


def read_raw(path):
    """(a) Read the file's bytes in blocks; return the byte count."""
    total = 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(BLOCK):
            total += len(block)
    return total


def bare_events(path):
    """(b) hipopybind's event loop with nothing decoded; return the event count."""
    reader, event, n = hb.Reader(), hb.Event(), 0
    reader.open(str(path))
    while reader.next():
        reader.read(event)
        n += 1
    return n


def images(path):
    """(c) Every sector image of the file; return their count."""
    return sum(1 for _ in ch.read_sector_events(path))


def rewrite(path):
    """(d) A keep-all rewrite into a temporary file; return the event count."""
    with tempfile.TemporaryDirectory(dir=Path(path).parent) as folder:
        return ch.rewrite_orders(path, Path(folder) / "out.hipo", lambda masks: masks)["events"]


METHODS = {"raw": read_raw, "events": bare_events, "images": images, "rewrite": rewrite}


def peaks():
    """(peak MB of this process, peak MB of its largest finished child process)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def to_h5(source, out):
    """(e) One conversion to HDF5 in this process: a .hipo file or a PNG folder (raw/, truth/)."""
    import hipo_pairs
    import Pix2Pix_data

    t0 = time.perf_counter()
    if str(source).endswith(".hipo"):
        pairs = hipo_pairs.convert_hipo([source], out, workers=WORKERS)["pairs"]
    else:
        pairs = Pix2Pix_data.convert(Path(source) / "raw", Path(source) / "truth", out, workers=WORKERS)["pairs"]
    main_mb, worker_mb = peaks()
    return {"count": pairs, "seconds": time.perf_counter() - t0, "peak_mb": main_mb, "worker_mb": worker_mb}


def denoise(source, out):
    """(f) An untrained width-16 generator denoising a HIPO file; the time inside model.probabilities apart."""
    import hipo_denoise
    import pix2pix_model
    import trained_model
    from script_utils import import_keras

    import_keras()
    model_path = Path(out).with_suffix(".keras")
    pix2pix_model.with_raw_hit_gate(pix2pix_model.build_generator(WIDTH)).save(model_path)
    model, _ = trained_model.load_model(model_path)
    predict, in_model = model.probabilities, [0.0]

    def timed(maps):
        t = time.perf_counter()
        try:
            return predict(maps)
        finally:
            in_model[0] += time.perf_counter() - t

    model.probabilities = timed
    timed(np.zeros((32, ch.N_LAYERS, ch.N_WIRES), bool))  # traced once, before the clock starts
    in_model[0] = 0.0
    t0 = time.perf_counter()
    counts = hipo_denoise.denoise_hipo(model, 0.5, source, out, batch_size=32)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    rewrite(source)
    return {"count": counts["events"], "sectors": counts["sectors"], "seconds": seconds, "model_seconds": in_model[0],
            "keep_all_seconds": time.perf_counter() - t0, "peak_mb": peaks()[0]}


SCRIPT_METHODS = {"to_h5": to_h5, "denoise": denoise}


def child(method, path, out=None):
    """Run one method after a raw read of the same file (warm cache); print timings as JSON."""
    if method in SCRIPT_METHODS:
        print(json.dumps(SCRIPT_METHODS[method](path, out)))
        return
    read_raw(path)  # the page cache holds the file for every method alike
    t0 = time.perf_counter()
    read_raw(path)
    raw_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    count = METHODS[method](path)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"count": count, "seconds": seconds, "raw_seconds": raw_s, "peak_mb": peak_mb}))


def measure(method, path, out=None):
    """One method in a fresh child process: its JSON line as a dict."""
    extra = [str(out)] if out is not None else []
    proc = subprocess.run([sys.executable, __file__, "--child", method, str(path), *extra], capture_output=True,
                          text=True)
    if proc.returncode:
        sys.exit(f"bench: {method} {path} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def make_set(folder, n, fmt):
    """make_events.py's set of seed 1: n events as PNG pairs (folder) or a HIPO file (folder.hipo)."""
    out = Path(f"{folder}.hipo") if fmt == "hipo" else Path(folder)
    subprocess.run([sys.executable, str(ROOT / "make_events.py"), "--format", fmt, "--output", str(out), "-n", str(n),
                    "--seed", "1", "--workers", str(WORKERS)], check=True, capture_output=True)
    return out


def same_chunks(a, b, chunk=256):
    """Whether two HDF5 pair files hold the same images in their first, middle and last chunk of events."""
    import h5py

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        n = len(fa["raw"])
        if n != len(fb["raw"]):
            return False
        starts = sorted({0, max(0, n // 2 - chunk // 2), max(0, n - chunk)})
        return all(np.array_equal(fa[k][s:s + chunk], fb[k][s:s + chunk]) for k in ("raw", "truth") for s in starts)


def bench_to_h5(folder, n):
    """(e) HIPO -> HDF5 against PNG -> HDF5 on the same n sector images, and the HIPO route on n / 4."""
    t0 = time.perf_counter()
    hipo, small = make_set(folder / "set", n, "hipo"), make_set(folder / "small", n // 4, "hipo")
    pngs = make_set(folder / "set", n, "png")
    print(f"\n(e) HIPO -> HDF5 vs PNG -> HDF5, {n:,} sector images ({n // 2:,} HIPO events of 2 sectors), "
          f"{WORKERS} workers (sets made in {time.perf_counter() - t0:.0f} s)")
    results = {"HIPO -> HDF5": measure("to_h5", hipo, folder / "hipo.h5"),
               "PNG -> HDF5": measure("to_h5", pngs, folder / "png.h5"),
               "HIPO, n / 4": measure("to_h5", small, folder / "small.h5")}
    print(f"{'route':14s} {'sectors':>8s} {'seconds':>8s} {'sectors/s':>10s} {'HIPO ev/s':>10s} {'main MB':>8s} "
          f"{'worker MB':>9s}")
    for name, r in results.items():
        print(f"{name:14s} {r['count']:8d} {r['seconds']:8.1f} {r['count'] / r['seconds']:10,.0f} "
              f"{r['count'] / 2 / r['seconds']:10,.0f} {r['peak_mb']:8.0f} {r['worker_mb']:9.0f}")
    ratio = results["PNG -> HDF5"]["seconds"] / results["HIPO -> HDF5"]["seconds"]
    print(f"HIPO route {ratio:.1f}x the PNG route's rate; the two files' images are "
          f"{'equal' if same_chunks(folder / 'hipo.h5', folder / 'png.h5') else 'DIFFERENT'} (chunks compared)")


def bench_denoise(folder, n):
    """(f) HIPO -> denoised HIPO at width 16: events/s, time in the model vs in HIPO I/O."""
    hipo = make_set(folder / "denoise", n, "hipo")
    r = measure("denoise", hipo, folder / "denoised.hipo")
    rest = r["seconds"] - r["model_seconds"]
    print(f"\n(f) HIPO -> denoised HIPO, width {WIDTH}, {r['sectors']:,} sectors in {r['count']:,} events: "
          f"{r['seconds']:.1f} s, {r['count'] / r['seconds']:,.1f} events/s ({r['sectors'] / r['seconds']:,.1f} "
          f"sectors/s); model {r['model_seconds']:.1f} s ({100 * r['model_seconds'] / r['seconds']:.1f} %), "
          f"HIPO I/O and the rest {rest:.2f} s ({100 * rest / r['seconds']:.1f} %; target <= 20 %); "
          f"a keep-all rewrite of the file alone: {r['keep_all_seconds']:.2f} s "
          f"({100 * r['keep_all_seconds'] / r['seconds']:.1f} %); peak {r['peak_mb']:.0f} MB")


def main(argv=None):
    """Write the synthetic HIPO files, time each way of reading, converting and denoising them, print the table."""
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=N_EVENTS, help=f"events (default {N_EVENTS})")
    parser.add_argument("--pairs-sectors", type=int, default=PAIRS_SECTORS,
                        help=f"(e): sector images converted to HDF5 by each route (default {PAIRS_SECTORS}; 0: skip)")
    parser.add_argument("--denoise-sectors", type=int, default=DENOISE_SECTORS,
                        help=f"(f): sector images denoised (default {DENOISE_SECTORS}; 0: skip)")
    parser.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    if args.n < SMALL_FRACTION or args.pairs_sectors in range(1, 16) or args.denoise_sectors < 0:
        parser.error(f"need -n at least {SMALL_FRACTION} and --pairs-sectors 0 or at least 16 (its quarter makes a "
                     "set of its own)")
    with tempfile.TemporaryDirectory() as folder:
        big, small = Path(folder) / "big.hipo", Path(folder) / "small.hipo"
        t0 = time.perf_counter()
        hipo_writer.write_events(big, synthetic_events(args.n))
        write_s = time.perf_counter() - t0
        hipo_writer.write_events(small, synthetic_events(args.n // SMALL_FRACTION))
        size_mb = big.stat().st_size / 1e6
        print(f"{args.n} events x {len(SECTORS)} sectors: {size_mb:.1f} MB, written in {write_s:.1f} s "
              f"({args.n / write_s:,.0f} events/s)")
        results = {m: measure(m, big) for m in METHODS}
        results["images small"] = measure("images", small)
    raw = results["raw"]
    print(f"{'method':14s} {'count':>8s} {'seconds':>8s} {'per s':>10s} {'x raw read':>11s} {'peak MB':>8s}")
    for name, r in results.items():
        print(f"{name:14s} {r['count']:8d} {r['seconds']:8.3f} {r['count'] / r['seconds']:10,.0f} "
              f"{r['seconds'] / r['raw_seconds']:11.1f} {r['peak_mb']:8.0f}")
    print(f"raw read: {size_mb / raw['seconds']:,.0f} MB/s; images: "
          f"{results['images']['count'] / results['images']['seconds']:,.0f} sector images/s, "
          f"{results['images']['seconds'] / results['events']['seconds']:.1f}x hipopybind's bare event loop; "
          f"rewrite: {results['rewrite']['count'] / results['rewrite']['seconds']:,.0f} events/s")
    print(f"peak memory of images: {results['images small']['peak_mb']:.0f} MB at {args.n // SMALL_FRACTION} "
          f"events, {results['images']['peak_mb']:.0f} MB at {args.n}")
    with tempfile.TemporaryDirectory() as folder:
        if args.pairs_sectors:
            bench_to_h5(Path(folder), args.pairs_sectors)
        if args.denoise_sectors:
            bench_denoise(Path(folder), args.denoise_sectors)


if __name__ == "__main__":
    run_main(main)
