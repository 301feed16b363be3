"""Raw/truth event PNG pairs -> one HDF5 file of padded 128x128x3 images for Pix2Pix.

Top to bottom:
1. Find the pairs by name, never by sort order: two folders holding files of equal names
   (--layout folders, the default), or one folder whose names carry a raw and a truth tag
   (--layout tagged: "..._all_..." and "..._truth_...", as the original data come).
   An unpaired file, an empty or missing folder is an error naming it.
2. In worker processes, read and check every image (event_image.read_event_png: 112 wide,
   36 high, 8 bits; grayscale, palette and fully opaque RGBA become RGB), place it into the
   128x128 layout (event_image.pad_event) and compress whole HDF5 chunks (ISA-L deflate: an
   ordinary zlib stream that any HDF5 gzip filter reads, several times faster than zlib).
3. In the main process, write the chunks in sorted name order into one HDF5 file:
     raw, truth    uint8 (N, 128, 128, 3), chunks of CHUNK_EVENTS events, gzip
     names         the raw file names (in the folders layout also the truth file names)
     truth_names   the truth file names
     attrs         layout (event_image.LAYOUT as JSON), pair_layout, source folders, tags,
                   created (UTC), pairs, skipped, and the shard fields below
   under a hidden temporary name that becomes OUTPUT only when everything went well.

Memory stays flat however many pairs there are: only a bounded number of chunks are in
flight at once and no image is kept after it is written.

Farm jobs: --shard K/N (1 <= K <= N) converts only the K-th of N contiguous slices of the
sorted pair list into its own part file; --merge PART... --output FILE joins the parts into
one file, equal pair for pair to an unsharded run, as an HDF5 virtual dataset (the parts must
stay beside it) or, with --copy, a self-contained copy. Missing or overlapping shards are an
error naming them.

Examples:
    python Pix2Pix_data.py --raw-dir events/raw --truth-dir events/truth --output data/pairs.h5
    python Pix2Pix_data.py --layout tagged --raw-dir original_pngs --output data/pairs.h5
    python Pix2Pix_data.py --raw-dir events/raw --truth-dir events/truth --shard 3/8 --output parts/p3.h5
    python Pix2Pix_data.py --merge parts/p*.h5 --output data/pairs.h5
"""

import argparse
import contextlib
import datetime
import hashlib
import json
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import deque, namedtuple
from pathlib import Path

import h5py
import numpy as np
from isal import isal_zlib

import event_image as ei
from script_utils import (
    InputError,
    atomic_output,
    check_output_path,
    progress,
    release_stop_signals,
    run_main,
    start_pool,
    warn,
)

# --- Settings (each one has a command-line option) ---------------------------------------
RAW_DIR = "data/raw"  # raw PNGs (with --layout tagged: the one folder holding both kinds)
TRUTH_DIR = "data/truth"  # truth PNGs, same file names as in RAW_DIR
OUTPUT_H5 = "data/pairs.h5"
PAIR_LAYOUT = "folders"  # "folders": RAW_DIR/NAME + TRUTH_DIR/NAME; "tagged": one folder, tags in names
RAW_TAG = "_all_"  # tagged layout: a raw file's name carries this ...
TRUTH_TAG = "_truth_"  # ... and its truth file's name this instead
WORKERS = os.cpu_count() or 1  # decoding processes (1: no extra processes)
CHUNK_EVENTS = 32  # events per HDF5 chunk along axis 0 (data_management reads batches of 32)
COMPRESSION_LEVEL = 1  # ISA-L deflate level 0-3 (1: fast, ~60x smaller on these near-empty images)
SKIP_BAD = False  # True: leave bad pairs out with a warning and list them in OUTPUT.skipped.txt
OVERWRITE = False

# --- Fixed facts ---------------------------------------------------------------------------
EVENT_SHAPE = (ei.PADDED_SIZE, ei.PADDED_SIZE, ei.CHANNELS)
IN_FLIGHT_PER_WORKER = 4  # chunks queued or decoded per worker process: bounds the memory
SKIPPED_SUFFIX = ".skipped.txt"  # the list of skipped pairs, beside the output
NAMES_BLOCK = 65536  # names copied at once when merging
PROBLEMS_SHOWN = 3  # files named in a one-line error before "and N more"
PART_ATTRS = ("shard_index", "shard_count", "total_pairs", "pair_start", "pair_stop", "pair_list_sha256")

Pair = namedtuple("Pair", "raw_name truth_name raw_path truth_path")


# --- Finding the pairs ---------------------------------------------------------------------
def case_hint(name, others_by_lower):
    """' (X differs only in case)' when a file of the other kind has name in another case."""
    other = others_by_lower.get(name.lower())
    return f" ({other} differs only in case)" if other is not None else ""


def pair_folders(raw_dir, truth_dir):
    """Pairs of equal file names in two folders, and the unpaired files as (path, reason)."""
    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    raw_str, truth_str = str(raw_dir), str(truth_dir)
    if raw_dir.resolve() == truth_dir.resolve():
        raise InputError(f"{raw_dir}: raw and truth folders are the same (for one folder use --layout tagged)")
    raw, truth = ei.list_pngs(raw_dir, "raw"), ei.list_pngs(truth_dir, "truth")
    raw_set, truth_set = set(raw), set(truth)
    raw_lower = {n.lower(): n for n in raw if n not in truth_set}
    truth_lower = {n.lower(): n for n in truth if n not in raw_set}
    problems = [(raw_dir / n, f"no truth file {truth_dir / n}{case_hint(n, truth_lower)}")
                for n in raw if n not in truth_set]
    problems += [(truth_dir / n, f"no raw file {raw_dir / n}{case_hint(n, raw_lower)}")
                 for n in truth if n not in raw_set]
    pairs = [Pair(n, n, os.path.join(raw_str, n), os.path.join(truth_str, n)) for n in raw if n in truth_set]
    return pairs, problems


def pair_tagged(folder, raw_tag=RAW_TAG, truth_tag=TRUTH_TAG):
    """Pairs in one folder whose names differ only by the raw and truth tags, and the problems."""
    if not raw_tag or not truth_tag or raw_tag == truth_tag:
        raise InputError(f"raw tag {raw_tag!r} and truth tag {truth_tag!r} must be two different non-empty strings")
    folder = Path(folder)
    raw, truth, problems = {}, {}, []  # key (the name with its tag cut out) -> file name
    for name in ei.list_pngs(folder, "tagged"):
        n_raw, n_truth = name.count(raw_tag), name.count(truth_tag)
        if n_raw + n_truth == 0:
            problems.append((folder / name, f"name carries neither tag {raw_tag!r} nor {truth_tag!r}"))
        elif n_raw + n_truth > 1:
            problems.append((folder / name, "name carries more than one tag: raw or truth?"))
        elif n_raw:
            raw[name.replace(raw_tag, "\0")] = name
        else:
            truth[name.replace(truth_tag, "\0")] = name
    raw_lower = {k.lower(): n for k, n in raw.items() if k not in truth}
    truth_lower = {k.lower(): n for k, n in truth.items() if k not in raw}
    problems += [(folder / n, f"no truth file {k.replace(chr(0), truth_tag)}{case_hint(k, truth_lower)}")
                 for k, n in raw.items() if k not in truth]
    problems += [(folder / n, f"no raw file {k.replace(chr(0), raw_tag)}{case_hint(k, raw_lower)}")
                 for k, n in truth.items() if k not in raw]
    pairs = sorted((Pair(n, truth[k], os.path.join(folder, n), os.path.join(folder, truth[k]))
                    for k, n in raw.items() if k in truth),
                   key=lambda p: p.raw_name)
    return pairs, sorted(problems)


def find_pairs(raw_dir, truth_dir=None, layout=PAIR_LAYOUT, raw_tag=RAW_TAG, truth_tag=TRUTH_TAG):
    """The sorted pair list and the problems (unpaired files, unusable names) of either layout."""
    if layout == "folders":
        pairs, problems = pair_folders(raw_dir, TRUTH_DIR if truth_dir is None else truth_dir)
    elif layout == "tagged":
        if truth_dir is not None and Path(truth_dir).resolve() != Path(raw_dir).resolve():
            raise InputError(f"{truth_dir}: --layout tagged reads one folder (--raw-dir); do not give --truth-dir")
        pairs, problems = pair_tagged(raw_dir, raw_tag, truth_tag)
    else:
        raise InputError(f"unknown pair layout {layout!r} (expected 'folders' or 'tagged')")
    good = []
    for pair in pairs:  # the names go into HDF5 as UTF-8
        try:
            pair.raw_name.encode("utf-8"), pair.truth_name.encode("utf-8")
            good.append(pair)
        except UnicodeEncodeError:
            problems.append((pair.raw_path, "file name is not valid UTF-8"))
    return good, problems


def describe_problems(problems):
    """One line naming the first few problem files and how many more there are."""
    shown = "; ".join(f"{path}: {reason}" for path, reason in problems[:PROBLEMS_SHOWN])
    more = len(problems) - PROBLEMS_SHOWN
    return shown + (f"; and {more} more" if more > 0 else "")


def pair_list_digest(pairs):
    """sha256 of the whole sorted pair list: parts of one conversion must agree on it."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(f"{p.raw_name}\0{p.truth_name}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def parse_shard(text):
    """'K/N' -> (K, N) with 1 <= K <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise InputError(f"--shard {text}: expected K/N with 1 <= K <= N (the K-th of N slices)")
    return int(m.group(1)), int(m.group(2))


def shard_range(k, n, total):
    """The K-th of N contiguous, near-equal slices of range(total), as (start, stop)."""
    return (k - 1) * total // n, k * total // n


# --- Worker processes: read, check, pad, compress --------------------------------------------
def watch_parent(parent_pid):
    """Worker start-up: ignore Ctrl-C (the main process handles it) and exit if the main dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the pool stops its workers with SIGTERM
    release_stop_signals()  # held since the fork (start_pool)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)  # the main process was killed: nobody will read our results

    threading.Thread(target=watch, daemon=True).start()


_BUFFERS = {}  # per process: the chunk buffers decode_chunk reuses (no fresh megabytes per chunk)


def chunk_buffers(chunk_events):
    """Reused event and padded buffers of one chunk: raw, truth, padded raw, padded truth."""
    if chunk_events not in _BUFFERS:
        _BUFFERS.clear()
        events = np.zeros((2, chunk_events, ei.LAYERS, ei.WIRES, ei.CHANNELS), np.uint8)
        padded = np.zeros((2, chunk_events, *EVENT_SHAPE), np.uint8)  # the borders stay zero
        _BUFFERS[chunk_events] = (events[0], events[1], padded[0], padded[1])
    return _BUFFERS[chunk_events]


def decode_chunk(task):
    """Read, check, pad and compress one chunk of pairs (runs in a worker process).

    task: (chunk_events, level, [(raw_path, truth_path), ...]) with at most chunk_events pairs.
    The good pairs are packed at the front of one zero-filled (chunk_events, 128, 128, 3) chunk
    per dataset, compressed as a zlib stream (what the HDF5 gzip filter stores).
    """
    chunk_events, level, paths = task
    raw, truth, raw_padded, truth_padded = chunk_buffers(chunk_events)
    good, bad = [], []
    for i, (raw_path, truth_path) in enumerate(paths):
        errors = []
        for path, images in ((raw_path, raw), (truth_path, truth)):
            try:
                images[len(good)] = ei.read_event_png(path)
            except InputError as exc:
                errors.append(str(exc))
        if errors:
            bad.append((i, "; ".join(errors)))
        else:
            good.append(i)
    k = len(good)
    raw[k:], truth[k:] = 0, 0  # rows of an earlier chunk or of a bad pair
    raw_hits, truth_hits = ei.hit_mask(raw[:k]), ei.hit_mask(truth[:k])
    stray = truth_hits & ~raw_hits  # truth hits that are not raw hits: swapped folders?
    # event_image.pad_event's placement, into the reused buffers
    raw_padded[:, ei.LAYER_ROWS, ei.WIRE_COLUMNS] = raw
    truth_padded[:, ei.LAYER_ROWS, ei.WIRE_COLUMNS] = truth
    return {
        "good": good,
        "bad": bad,
        "raw": isal_zlib.compress(raw_padded.data, level),
        "truth": isal_zlib.compress(truth_padded.data, level),
        "raw_hits": int(raw_hits.sum()),
        "truth_hits": int(truth_hits.sum()),
        "stray_hits": int(stray.sum()),
        "stray_pairs": int(stray.any(axis=(1, 2)).sum()),
    }


def unpack_chunk(blob, chunk_events):
    """The (chunk_events, 128, 128, 3) uint8 events of one compressed chunk."""
    return np.frombuffer(isal_zlib.decompress(blob), np.uint8).reshape(chunk_events, *EVENT_SHAPE)


@contextlib.contextmanager
def worker_pool(workers):
    """A pool of worker processes (None for workers <= 1), made before any file is opened."""
    if workers <= 1:
        yield None
        return
    parent = os.getpid()
    with start_pool(lambda: multiprocessing.Pool(workers, initializer=watch_parent, initargs=(parent,))) as pool:
        yield pool


def ordered_results(pool, func, tasks, in_flight):
    """func(task) for each task, in task order, on the pool; a bounded number of tasks in flight."""
    if pool is None:
        yield from map(func, tasks)
        return
    pending = deque()
    for task in tasks:
        pending.append(pool.apply_async(func, (task,)))
        if len(pending) >= in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# --- Writing the HDF5 file ----------------------------------------------------------------------
class ChunkWriter:
    """Append events to the raw and truth datasets of an open file, one whole chunk at a time.

    A chunk compressed by a worker goes in as it is (write_direct_chunk) when it starts on a
    chunk boundary; otherwise (after a skipped pair, or when merging) events gather in a
    one-chunk buffer that is compressed here. Memory: one chunk per dataset.
    """

    def __init__(self, f, capacity, chunk_events=CHUNK_EVENTS, level=COMPRESSION_LEVEL):
        self.chunk_events, self.level = chunk_events, level
        self.datasets = {
            key: f.create_dataset(key, shape=(capacity, *EVENT_SHAPE), maxshape=(None, *EVENT_SHAPE), dtype=np.uint8,
                                  chunks=(chunk_events, *EVENT_SHAPE), compression="gzip", compression_opts=level)
            for key in ("raw", "truth")
        }
        self.buffer = {key: np.zeros((chunk_events, *EVENT_SHAPE), np.uint8) for key in self.datasets}
        self.filled = 0  # events in the buffer
        self.written = 0  # events in the file

    def _grow(self, n):
        """Make room for n more events (the capacity is only a first guess when merging)."""
        for ds in self.datasets.values():
            if ds.shape[0] < n:
                ds.resize(n, axis=0)

    def add_compressed(self, chunks, count):
        """Write one worker-compressed chunk holding count events; only on a chunk boundary."""
        if self.filled or self.written % self.chunk_events:
            raise RuntimeError("add_compressed off a chunk boundary")
        self._grow(self.written + count)
        for key, ds in self.datasets.items():
            ds.id.write_direct_chunk((self.written, 0, 0, 0), chunks[key])
        self.written += count

    def add_events(self, arrays):
        """Append uint8 events {"raw": (m, 128, 128, 3), "truth": (m, 128, 128, 3)}."""
        m, pos = len(arrays["raw"]), 0
        while pos < m:
            take = min(self.chunk_events - self.filled, m - pos)
            for key in self.buffer:
                self.buffer[key][self.filled:self.filled + take] = arrays[key][pos:pos + take]
            self.filled += take
            pos += take
            if self.filled == self.chunk_events:
                self.flush()

    def flush(self):
        """Compress and write the buffered events (a partial chunk only at the very end)."""
        if not self.filled:
            return
        self._grow(self.written + self.filled)
        for key, ds in self.datasets.items():
            self.buffer[key][self.filled:] = 0
            blob = isal_zlib.compress(self.buffer[key].data, self.level)
            ds.id.write_direct_chunk((self.written, 0, 0, 0), blob)
        self.written += self.filled
        self.filled = 0

    def close(self):
        """Write what is buffered and cut the datasets to the events written."""
        self.flush()
        for ds in self.datasets.values():
            ds.resize(self.written, axis=0)
        return self.written


def create_names(f, capacity):
    """The names and truth_names datasets (UTF-8 strings), cut to size at the end."""
    return [f.create_dataset(key, shape=(capacity,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"),
                             chunks=(min(max(capacity, 1), 4096),)) for key in ("names", "truth_names")]


def write_attrs(f, **attrs):
    """Record the 128x128 layout, the creation time and the given facts as file attributes."""
    f.attrs["layout"] = json.dumps(ei.LAYOUT)
    f.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    f.attrs["created_by"] = "Pix2Pix_data.py"
    for key, value in attrs.items():
        f.attrs[key] = value


def stale_temp_files(output):
    """Hidden temporary files that killed runs left beside output (a rerun ignores them)."""
    output = Path(output)
    return sorted(output.parent.glob(f".{output.name}.*.tmp"))


def skipped_list_path(output):
    """Where --skip-bad lists the pairs it left out: OUTPUT.skipped.txt."""
    return Path(f"{output}{SKIPPED_SUFFIX}")


# --- Convert ----------------------------------------------------------------------------------------
def convert(raw_dir, truth_dir, output, *, layout=PAIR_LAYOUT, raw_tag=RAW_TAG, truth_tag=TRUTH_TAG,
            workers=WORKERS, shard=None, skip_bad=SKIP_BAD, overwrite=OVERWRITE, chunk_events=CHUNK_EVENTS,
            compression_level=COMPRESSION_LEVEL):
    """Convert the PNG pairs of raw_dir/truth_dir (or one tagged folder) into one HDF5 file.

    truth_dir is None for layout="tagged". shard: None, "K/N" or (K, N). Raises InputError on
    any bad input (nothing is written then). Returns a summary dict (see summary_line).
    """
    t0 = time.perf_counter()
    output = Path(output)
    if workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    if not 1 <= chunk_events <= 4096:
        raise InputError(f"--chunk-events {chunk_events}: must be between 1 and 4096")
    if compression_level not in (0, 1, 2, 3):
        raise InputError(f"--compression-level {compression_level}: must be 0, 1, 2 or 3")
    k, n = (1, 1) if shard is None else parse_shard(shard if isinstance(shard, str) else "{}/{}".format(*shard))
    if layout == "folders" and truth_dir is None:
        truth_dir = TRUTH_DIR
    check_output_path(output, overwrite)
    skip_path = skipped_list_path(output)
    if skip_bad:
        check_output_path(skip_path, overwrite)
    stale = stale_temp_files(output)
    if stale:
        warn(f"{stale[0]}: {len(stale)} temporary file(s) like this one were left by interrupted runs; ignored "
             f"(delete them when no run is writing {output.name})")

    pairs, problems = find_pairs(raw_dir, truth_dir, layout, raw_tag, truth_tag)
    if problems and not skip_bad:
        raise InputError(f"unpaired or unusable files: {describe_problems(problems)} (--skip-bad leaves them out)")
    total = len(pairs)
    start, stop = shard_range(k, n, total)
    skipped = [(str(path), reason) for path, reason in problems] if k == 1 else []  # part 1 reports them
    if total == 0:
        raise InputError(f"{raw_dir}: no pairs found ({describe_problems(problems)})")
    if start == stop:
        warn(f"shard {k}/{n} of {total} pairs is empty")

    counts = dict(raw_hits=0, truth_hits=0, stray_hits=0, stray_pairs=0)
    mine = pairs[start:stop]
    tasks = ((chunk_events, compression_level, [(p.raw_path, p.truth_path) for p in mine[i:i + chunk_events]])
             for i in range(0, len(mine), chunk_events))
    workers = min(workers, -(-len(mine) // chunk_events))
    with atomic_output(output, overwrite) as tmp, worker_pool(workers) as pool:
        with h5py.File(tmp, "w") as f:
            writer = ChunkWriter(f, len(mine), chunk_events, compression_level)
            names_ds, truth_names_ds = create_names(f, len(mine))
            bar = progress(total=len(mine), unit="pair", desc=output.name)
            results = ordered_results(pool, decode_chunk, tasks, workers * IN_FLIGHT_PER_WORKER)
            with contextlib.closing(results):
                for task_start, result in zip(range(0, len(mine), chunk_events), results, strict=True):
                    for i, reason in result["bad"]:
                        if not skip_bad:
                            raise InputError(f"{reason} (--skip-bad leaves bad pairs out)")
                        skipped.append((mine[task_start + i].raw_name, reason))
                    good = [mine[task_start + i] for i in result["good"]]
                    at = writer.written + writer.filled
                    names_ds[at:at + len(good)] = [p.raw_name for p in good]
                    truth_names_ds[at:at + len(good)] = [p.truth_name for p in good]
                    if result["bad"] or writer.filled or writer.written % chunk_events:
                        writer.add_events({key: unpack_chunk(result[key], chunk_events)[:len(good)]
                                           for key in ("raw", "truth")})
                    else:
                        writer.add_compressed(result, len(good))
                    for key in counts:
                        counts[key] += result[key]
                    bar.update(len(result["good"]) + len(result["bad"]))
            bar.close()
            written = writer.close()
            for ds in (names_ds, truth_names_ds):
                ds.resize(written, axis=0)
            if written == 0 and n == 1:
                raise InputError(f"{raw_dir}: no good pairs: {describe_problems(skipped)}")
            write_attrs(f, pair_layout=layout, raw_tag=raw_tag, truth_tag=truth_tag,
                        source_raw_dir=str(Path(raw_dir).resolve()),
                        source_truth_dir=str(Path(truth_dir or raw_dir).resolve()),
                        pairs=written, skipped=len(skipped), shard_index=k, shard_count=n, total_pairs=total,
                        pair_start=start, pair_stop=stop, pair_list_sha256=pair_list_digest(pairs),
                        chunk_events=chunk_events)
        if skip_bad:
            with atomic_output(skip_path, overwrite) as tmp_list:
                lines = [f"# {len(skipped)} file(s) or pair(s) left out of {output.name} by Pix2Pix_data.py --skip-bad"]
                tmp_list.write_text("\n".join(lines + [f"{name}\t{reason}" for name, reason in skipped]) + "\n")
    if skipped:
        warn(f"left out {len(skipped)} bad pair(s) or file(s), listed in {skip_path}: {describe_problems(skipped)}")
    if counts["stray_hits"]:
        warn(f"{counts['stray_pairs']} pair(s) have truth hits that are not raw hits ({counts['stray_hits']} in all): "
             "are the raw and truth folders swapped?")
    seconds = time.perf_counter() - t0
    return {
        "output": str(output), "pairs": written, "skipped": len(skipped), "shard": f"{k}/{n}",
        "raw_hits_per_event": counts["raw_hits"] / max(written, 1),
        "truth_hits_per_event": counts["truth_hits"] / max(written, 1),
        "bytes": output.stat().st_size, "seconds": seconds, "pairs_per_second": len(mine) / seconds,
    }


def summary_line(s):
    """The one line a run ends with."""
    raw_bytes = 2 * s["pairs"] * int(np.prod(EVENT_SHAPE))
    ratio = f", {raw_bytes / s['bytes']:.0f}x smaller than raw" if s["pairs"] else ""
    shard = f" (shard {s['shard']})" if s["shard"] != "1/1" else ""
    skipped = f", {s['skipped']} skipped" if s["skipped"] else ""
    return (f"wrote {s['pairs']} pairs{shard}{skipped} to {s['output']} ({s['bytes'] / 1e6:.1f} MB{ratio}); "
            f"hits per event raw {s['raw_hits_per_event']:.1f} truth {s['truth_hits_per_event']:.1f}; "
            f"{s['seconds']:.1f} s, {s['pairs_per_second']:.0f} pairs/s")


# --- Merge the parts of a sharded conversion ------------------------------------------------------------
def read_part(path):
    """The facts of one part file needed to merge it, checking that it is one."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        missing = [key for key in ("raw", "truth", "names", "truth_names") if key not in f]
        missing += [key for key in (*PART_ATTRS, "layout", "pairs") if key not in f.attrs]
        if missing:
            raise InputError(f"{path}: not a part written by Pix2Pix_data.py (no {', '.join(missing)})")
        part = {key: f.attrs[key] for key in (*PART_ATTRS, "layout", "pairs", "skipped")}
        part.update(path=path, n=len(f["raw"]), attrs=dict(f.attrs))
        if part["layout"] != json.dumps(ei.LAYOUT):
            raise InputError(f"{path}: made with another 128x128 layout ({part['layout']})")
        if not len(f["truth"]) == len(f["names"]) == len(f["truth_names"]) == part["n"] == part["pairs"]:
            raise InputError(f"{path}: raw, truth and names disagree on the number of pairs")
    return part


def check_parts(parts):
    """The parts must come from one conversion and hold every shard exactly once."""
    first = parts[0]
    for part in parts[1:]:
        for key in ("shard_count", "total_pairs", "pair_list_sha256"):
            if part[key] != first[key]:
                raise InputError(f"{part['path']}: not a part of the same conversion as {first['path']} "
                                 f"({key} {part[key]} != {first[key]})")
    n = int(first["shard_count"])
    holders = {}
    for part in parts:
        holders.setdefault(int(part["shard_index"]), []).append(str(part["path"]))
    overlapping = {k: v for k, v in holders.items() if len(v) > 1}
    if overlapping:
        raise InputError("overlapping shards: " + "; ".join(f"{k}/{n} in {' and '.join(v)}"
                                                             for k, v in sorted(overlapping.items())))
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in holders]
    if missing:
        given = ", ".join(map(str, sorted(holders)))
        raise InputError(f"missing shard(s) {', '.join(missing)} (given: {given} of {n})")


def merge(part_paths, output, *, copy=False, overwrite=OVERWRITE, chunk_events=CHUNK_EVENTS,
          compression_level=COMPRESSION_LEVEL):
    """Join the parts of a sharded conversion into one file, virtual (default) or copied."""
    t0 = time.perf_counter()
    output = Path(output)
    check_output_path(output, overwrite)
    parts = sorted((read_part(p) for p in part_paths), key=lambda p: int(p["shard_index"]))
    if any(p["path"].resolve() == output.resolve() for p in parts):
        raise InputError(f"{output}: is one of the parts")
    check_parts(parts)
    total = sum(p["n"] for p in parts)
    with atomic_output(output, overwrite) as tmp:
        with h5py.File(tmp, "w", libver=("v110", "latest")) as f:
            if copy:
                writer = ChunkWriter(f, total, chunk_events, compression_level)
                with progress(total=total, unit="pair", desc=output.name) as bar:
                    for part in parts:
                        with h5py.File(part["path"], "r") as src:
                            for a in range(0, part["n"], chunk_events):
                                b = min(a + chunk_events, part["n"])
                                writer.add_events({key: src[key][a:b] for key in ("raw", "truth")})
                                bar.update(b - a)
                writer.close()
            else:
                for key in ("raw", "truth"):
                    layout = h5py.VirtualLayout(shape=(total, *EVENT_SHAPE), dtype=np.uint8)
                    at = 0
                    for part in parts:
                        source = os.path.relpath(part["path"].resolve(), output.resolve().parent)
                        layout[at:at + part["n"]] = h5py.VirtualSource(source, key, shape=(part["n"], *EVENT_SHAPE))
                        at += part["n"]
                    f.create_virtual_dataset(key, layout, fillvalue=0)
            for key in ("names", "truth_names"):
                ds = f.create_dataset(key, shape=(total,), dtype=h5py.string_dtype("utf-8"))
                at = 0
                for part in parts:
                    with h5py.File(part["path"], "r") as src:
                        for a in range(0, part["n"], NAMES_BLOCK):
                            block = src[key].asstr()[a:a + NAMES_BLOCK]
                            ds[at + a:at + a + len(block)] = block
                    at += part["n"]
            facts = {k: v for k, v in parts[0]["attrs"].items() if k not in ("layout", "created", "created_by")}
            facts.update(pairs=total, skipped=int(sum(p["skipped"] for p in parts)), shard_index=1, shard_count=1,
                         pair_start=0, pair_stop=int(parts[0]["total_pairs"]), storage="copy" if copy else "virtual",
                         merged_from=[p["path"].name for p in parts],
                         chunk_events=chunk_events if copy else int(parts[0]["attrs"]["chunk_events"]))
            write_attrs(f, **facts)
    seconds = time.perf_counter() - t0
    how = "copied into" if copy else "as virtual datasets (keep the parts beside it) in"
    return f"merged {len(parts)} parts, {total} pairs, {how} {output} ({output.stat().st_size / 1e6:.1f} MB); " \
           f"{seconds:.1f} s"


# --- Command line ---------------------------------------------------------------------------------------
class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are the project's one-line InputError."""

    def error(self, message):
        raise InputError(f"{self.prog}: {message}")


def parse_args(argv=None):
    """The settings above, overridable on the command line."""
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw-dir", default=RAW_DIR,
                   help="folder of the raw PNGs; with --layout tagged the one folder of both (default %(default)s)")
    p.add_argument("--truth-dir", default=None,
                   help=f"folder of the truth PNGs, same file names as the raw ones (default {TRUTH_DIR}; "
                        "not used with --layout tagged)")
    p.add_argument("--output", default=OUTPUT_H5, help="HDF5 file to write (default %(default)s)")
    p.add_argument("--layout", choices=("folders", "tagged"), default=PAIR_LAYOUT,
                   help="how pairs are stored: two folders of equal names, or one folder with tags in the names "
                        "(default %(default)s)")
    p.add_argument("--raw-tag", default=RAW_TAG, help="tagged layout: raw files' tag (default %(default)s)")
    p.add_argument("--truth-tag", default=TRUTH_TAG, help="tagged layout: truth files' tag (default %(default)s)")
    p.add_argument("--workers", type=int, default=WORKERS, help="decoding processes (default: the CPUs, %(default)s)")
    p.add_argument("--chunk-events", type=int, default=CHUNK_EVENTS,
                   help="events per HDF5 chunk (default %(default)s)")
    p.add_argument("--compression-level", type=int, default=COMPRESSION_LEVEL,
                   help="deflate level 0-3 (default %(default)s)")
    p.add_argument("--skip-bad", action="store_true", default=SKIP_BAD,
                   help=f"leave bad or unpaired files out with a warning, listed in OUTPUT{SKIPPED_SUFFIX}")
    p.add_argument("--overwrite", action="store_true", default=OVERWRITE, help="replace an existing output")
    p.add_argument("--shard", metavar="K/N", help="convert only the K-th of N slices of the sorted pairs (1 <= K <= N)")
    p.add_argument("--merge", nargs="+", metavar="PART", help="join the part files of --shard runs into --output")
    p.add_argument("--copy", action="store_true", help="with --merge: copy the data instead of a virtual dataset")
    args = p.parse_args(argv)
    if args.merge and (args.shard or args.skip_bad):
        raise InputError("--merge cannot be combined with --shard or --skip-bad")
    if args.copy and not args.merge:
        raise InputError("--copy only goes with --merge")
    return args


def stop_on_sigterm(signum, frame):
    """A batch system's SIGTERM stops the run like Ctrl-C: the temporary file is removed."""
    raise KeyboardInterrupt


def main(argv=None):
    """Convert (or merge) as the command line says and print the one-line summary."""
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    args = parse_args(argv)
    if args.merge:
        print(merge(args.merge, args.output, copy=args.copy, overwrite=args.overwrite, chunk_events=args.chunk_events,
                    compression_level=args.compression_level))
        return 0
    summary = convert(args.raw_dir, args.truth_dir, args.output, layout=args.layout, raw_tag=args.raw_tag,
                      truth_tag=args.truth_tag, workers=args.workers, shard=args.shard, skip_bad=args.skip_bad,
                      overwrite=args.overwrite, chunk_events=args.chunk_events,
                      compression_level=args.compression_level)
    print(summary_line(summary))
    return 0


if __name__ == "__main__":
    run_main(main)
