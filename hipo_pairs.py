"""CLAS12 HIPO files -> the project's HDF5 pairs file (what `Pix2Pix_data.py --hipo` runs).

Every sector image that clas12_hipo.read_sector_events yields becomes one pair, in file order:
raw = the hits of DC::tot (else DC::tdc) rows whose order's tens digit is a raw order, truth =
the TimeBasedTrkg::TBHits hits that are raw hits (the others are dropped, counted and warned
about), name FILE:EVENT:SECTOR (FILE: the base name, or the path below the files' common folder when
base names clash; a file given twice is refused). Datasets and attributes are those of a PNG conversion (pairs_h5),
plus `track_ids` (N, 36, 112) uint8: TBHits' trkID of each truth hit, 0 elsewhere. Streamed, with
padding and compression on worker processes: memory stays flat in the number of events.
--shard K/N takes the K-th of N slices of the sector list, which each job finds in a first pass.

    import hipo_pairs
    print(hipo_pairs.convert_hipo(["sim.hipo"], "data/pairs.h5"))
"""

import contextlib
import hashlib
import itertools
import os
import time
from collections import deque
from pathlib import Path

import h5py
import numpy as np

import clas12_hipo as ch
import event_image as ei
import Pix2Pix_data
from pairs_h5 import ChunkWriter, create_names, create_track_ids, write_attrs
from script_utils import InputError, atomic_output, progress, warn
from worker_pools import ordered_results, worker_pool

CAPACITY_GUESS = 4096  # first size of the datasets when the number of pairs is not known yet


def encode_chunk(task):
    """Pad and compress one chunk of sector images (runs in a worker process).

    task: (chunk_events, level, raw, truth), raw and truth (m, 36, 112) bool with m <= chunk_events.
    Truth hits that are not raw hits are dropped and counted (stray). Returns what
    Pix2Pix_data.decode_chunk returns for a chunk of m good pairs, without its good/bad lists."""
    chunk_events, level, raw, truth = task
    kept = truth & raw
    stray = truth & ~raw
    raw_images, truth_images, _, _ = Pix2Pix_data.chunk_buffers(chunk_events)
    m = len(raw)
    raw_images[:m], truth_images[:m] = ei.mask_to_image(raw), ei.mask_to_image(kept)
    raw_images[m:], truth_images[m:] = 0, 0
    raw_blob, truth_blob = Pix2Pix_data.padded_blobs(raw_images, truth_images, level)
    return {"raw": raw_blob, "truth": truth_blob, "raw_hits": int(raw.sum()), "truth_hits": int(kept.sum()),
            "stray_hits": int(stray.sum()), "stray_pairs": int(stray.any(axis=(1, 2)).sum())}


def new_digest(raw_orders, keep_sectors_without_truth):
    """The pair-list sha256, started with the settings that choose the pairs (parts must agree on them)."""
    return hashlib.sha256(f"hipo raw_orders={list(raw_orders)} keep_sectors_without_truth="
                          f"{bool(keep_sectors_without_truth)}\n".encode())


def file_labels(paths):
    """The FILE part of each file's pair names FILE:EVENT:SECTOR: its base name or, when two files share one
    (farm outputs d1/dst.hipo, d2/dst.hipo), every file's path relative to the files' common folder."""
    names = [Path(p).name for p in paths]
    if len(set(names)) == len(names):
        return names
    full = [os.path.abspath(p) for p in paths]
    common = os.path.commonpath(full)
    return [Path(os.path.relpath(f, common)).as_posix() for f in full]


def sector_records(paths, raw_orders, keep_sectors_without_truth, stats, digest):
    """read_sector_events' records, named FILE:EVENT:SECTOR with FILE from file_labels (unique), each name added
    to digest as Pix2Pix_data.pair_list_digest adds a pair.

    A file without a TBHits bank has no truth: an InputError naming it."""
    labels = file_labels(paths)
    by_label = dict(zip(labels, paths, strict=True))
    for record in ch.read_sector_events(paths, raw_orders, keep_sectors_without_truth, stats, labels=labels):
        if record.truth is None:
            raise InputError(f"{by_label[record.file]}: no {ch.TBHITS.name} bank: no truth for training pairs")
        digest.update(f"{record.name}\0{record.name}\n".encode("utf-8", "surrogateescape"))
        yield record


def no_pairs_message(paths, raw_orders, stats):
    """Why HIPO file(s) gave no pair: no DC hit of the raw orders at all, or no sector with truth hits."""
    if stats["events"] and stats["events_without_dc_hits"] == stats["events"]:
        orders = " ".join(str(o) for o in raw_orders)
        return (f"{paths[0]}: none of the {stats['events']} events has a DC hit of the orders --raw-orders "
                f"{orders} keeps (their tens digit)")
    return (f"{paths[0]}: no sector with {ch.TBHITS.name} hits on raw hits in the HIPO file(s) "
            f"({stats['events']} events; --keep-sectors-without-truth keeps the others)")


def chunk_tasks(records, chunk_events, level, side):
    """encode_chunk's tasks, chunk_events records each; each chunk's names and track ids go to side, in order.

    The track ids are those of the truth hits that are raw hits (the truth encode_chunk keeps), 0 elsewhere."""
    while block := list(itertools.islice(records, chunk_events)):
        side.append(([r.name for r in block], np.stack([r.paired_track_ids() for r in block])))
        yield chunk_events, level, np.stack([r.raw for r in block]), np.stack([r.truth for r in block])


def write_records(f, records, *, workers, chunk_events, level, capacity, total, desc):
    """Encode the records chunk by chunk (on workers) into the open file f; return (pairs written, hit counts)."""
    writer = ChunkWriter(f, capacity, chunk_events, level)
    names = create_names(f, capacity)
    ids = create_track_ids(f, capacity, chunk_events, level)
    counts = dict.fromkeys(Pix2Pix_data.HIT_COUNTS, 0)
    side = deque()
    tasks = chunk_tasks(records, chunk_events, level, side)
    in_flight = workers * Pix2Pix_data.IN_FLIGHT_PER_WORKER
    with worker_pool(workers) as pool, progress(total=total, unit="pair", desc=desc) as bar, \
            contextlib.closing(ordered_results(pool, encode_chunk, tasks, in_flight)) as results:
        for result in results:
            chunk_names, chunk_ids = side.popleft()
            at, m = writer.count, len(chunk_names)
            for ds in (*names, ids):
                if ds.shape[0] < at + m:
                    ds.resize(max(at + m, 2 * ds.shape[0]), axis=0)
            for ds in names:
                ds[at:at + m] = chunk_names
            ids[at:at + m] = chunk_ids
            writer.add_chunk(result, m)
            for key in counts:
                counts[key] += result[key]
            bar.update(m)
    written = writer.close()
    for ds in (*names, ids):
        ds.resize(written, axis=0)
    return written, counts


# PNG settings that --hipo refuses when they are changed
PNG_ONLY = ("raw_dir", "truth_dir", "layout", "raw_tag", "truth_tag", "skip_bad", "tracks_dir", "tracks_tag")


def check_args(args):
    """Pix2Pix_data.py's command line: --hipo refuses PNG and --merge options; the HIPO options need --hipo."""
    if args.hipo:
        given = [f"--{k.replace('_', '-')}" for k in PNG_ONLY if getattr(args, k) != getattr(Pix2Pix_data, k.upper())]
        if given or args.merge:
            raise InputError(f"--hipo reads HIPO files: it cannot be combined with {', '.join(given) or '--merge'}")
        if any(o % 10 or not 0 <= o <= 90 for o in args.raw_orders):
            raise InputError(f"--raw-orders {' '.join(map(str, args.raw_orders))}: must be tens digits 0, 10, ..., 90")
    elif tuple(args.raw_orders) != Pix2Pix_data.RAW_ORDERS or args.keep_sectors_without_truth:
        raise InputError("--raw-orders and --keep-sectors-without-truth only go with --hipo")


def check_given_once(paths):
    """Refuse a file given twice (os.path.samefile's test: also through a link or another spelling of its path):
    its events would be paired twice, and land in both the training and the test split."""
    seen = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue  # a missing or unreadable file: check_hipo_file names it
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise InputError(f"{path}: given twice to --hipo (the same file as {seen[key]}); give each file once, "
                             "or its events are paired twice")
        seen[key] = path


def check_inputs(paths, output, overwrite):
    """Every input a complete HIPO file given once, the output none of them and writable; return the paths."""
    paths = [Path(p) for p in paths]
    if Path(os.path.realpath(output)) in {Path(os.path.realpath(p)) for p in paths}:  # realpath: no error on loops
        raise InputError(f"{output}: the output is one of the --hipo input files")
    check_given_once(paths)
    Pix2Pix_data.check_outputs(output, overwrite, skip_bad=False, inputs=paths)
    for path in paths:
        ch.check_hipo_file(path)
    return paths


def convert_hipo(paths, output, *, raw_orders=ch.RAW_ORDERS, keep_sectors_without_truth=False,
                 workers=Pix2Pix_data.WORKERS, shard=None, overwrite=False, chunk_events=Pix2Pix_data.CHUNK_EVENTS,
                 compression_level=Pix2Pix_data.COMPRESSION_LEVEL):
    """Convert the sector images of HIPO files into one HDF5 pairs file; return Pix2Pix_data's summary dict.

    shard: None, "K/N" or (K, N). Raises InputError on any bad input (nothing is written then)."""
    t0 = time.perf_counter()
    output = Path(output)
    k, n = Pix2Pix_data.check_settings(workers, chunk_events, compression_level, shard)
    paths = check_inputs(paths, output, overwrite)
    choice = (raw_orders, keep_sectors_without_truth)
    total = start = stop = sha = None  # unsharded: known at the end of the one pass
    if n > 1:
        first_pass = new_digest(*choice)
        total = sum(1 for _ in sector_records(paths, *choice, {}, first_pass))
        sha = first_pass.hexdigest()
        start, stop = Pix2Pix_data.shard_range(k, n, total)
        if start == stop:
            warn(f"shard {k}/{n} of {total} pairs is empty")
    stats, digest = {}, new_digest(*choice)
    records = itertools.islice(sector_records(paths, *choice, stats, digest), start, stop)
    capacity = CAPACITY_GUESS if total is None else stop - start
    with atomic_output(output, overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            written, counts = write_records(f, records, workers=workers, chunk_events=chunk_events,
                                            level=compression_level, capacity=capacity,
                                            total=None if total is None else capacity, desc=output.name)
            if total is None:
                total, start, stop = written, 0, written
            if written == 0 and n == 1:
                raise InputError(no_pairs_message(paths, raw_orders, stats))
            write_attrs(f, pair_layout="hipo", source_files=[str(p.resolve()) for p in paths],
                        raw_orders=list(raw_orders), keep_sectors_without_truth=keep_sectors_without_truth,
                        pairs=written, skipped=0, shard_index=k, shard_count=n, total_pairs=total, pair_start=start,
                        pair_stop=stop, pair_list_sha256=sha or digest.hexdigest(), chunk_events=chunk_events,
                        track_ids=True)
    if counts["stray_hits"]:
        warn(f"dropped {counts['stray_hits']} TBHits hit(s) in {counts['stray_pairs']} sector(s) that are not raw "
             f"hits (no DC row of order {'/'.join(map(str, raw_orders))} on that wire)")
    note = (f" ({stats['events']} HIPO events read, {stats['events_without_dc_hits']} without DC hits, "
            f"{stats['sectors_without_truth']} sectors without TBHits hits left out)" if n == 1 else "")
    return Pix2Pix_data.run_summary(output, written, 0, f"{k}/{n}", counts, t0, read=written, note=note)
