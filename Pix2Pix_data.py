"""Raw/truth event PNG pairs -> one HDF5 file of padded 128x128x3 images for Pix2Pix.

Pairs are found by name, never by sort order: two folders of equal file names (--layout
folders) or one folder whose names carry a raw and a truth tag (--layout tagged). Every image
is checked and padded in worker processes; the file (see pairs_h5) appears under its name only
when complete. --shard K/N converts the K-th of N slices of the sorted pairs into a part file,
--merge joins the parts into one file. --hipo converts CLAS12 HIPO files instead (hipo_pairs.py):
one pair per sector image, raw from DC::tot/DC::tdc, truth from TimeBasedTrkg::TBHits.

    python Pix2Pix_data.py                                    # data/raw + data/truth -> data/pairs.h5
    python Pix2Pix_data.py --raw-dir events/raw --truth-dir events/truth --output data/pairs.h5
    python Pix2Pix_data.py --layout tagged --raw-dir original_pngs --output data/pairs.h5
    python Pix2Pix_data.py --raw-dir events/raw --truth-dir events/truth --shard 3/8 --output parts/part3.h5
    python Pix2Pix_data.py --merge parts/part*.h5 --output data/pairs.h5
    python Pix2Pix_data.py --hipo sim1.hipo sim2.hipo --output data/pairs.h5
"""

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path

import h5py
import numpy as np

import clas12_hipo
import event_image as ei
import pairs_h5
from pairs_h5 import EVENT_SHAPE, ChunkWriter, compress_chunk, create_names, write_attrs
from png_pairs import describe_problems, find_pairs
from script_utils import (
    ArgumentParser,
    InputError,
    atomic_output,
    check_not_an_input,
    check_output_path,
    progress,
    run_main,
    warn,
)
from worker_pools import ordered_results, worker_pool

# --- Settings (each one has a command-line option) ---------------------------------------
RAW_DIR = "data/raw"  # raw PNGs (with --layout tagged: the one folder holding both kinds)
TRUTH_DIR = "data/truth"  # truth PNGs, same file names as in RAW_DIR
OUTPUT = "data/pairs.h5"
LAYOUT = "folders"  # "folders": RAW_DIR/NAME + TRUTH_DIR/NAME; "tagged": one folder, tags in names
RAW_TAG = ei.RAW_TAG  # tagged layout: a raw file's name carries this ...
TRUTH_TAG = ei.TRUTH_TAG  # ... and its truth file's name this instead
TRACKS_DIR = None  # track-id PNGs, same names as in RAW_DIR (None: a `tracks` folder beside TRUTH_DIR, if any)
TRACKS_TAG = ei.TRACKS_TAG  # tagged layout: a track-id file's name carries this instead of the raw tag
WORKERS = os.cpu_count() or 1  # decoding processes (1: no extra processes)
CHUNK_EVENTS = pairs_h5.CHUNK_EVENTS  # events per HDF5 chunk along axis 0
COMPRESSION_LEVEL = pairs_h5.COMPRESSION_LEVEL  # ISA-L deflate level 0-3
SKIP_BAD = False  # True: leave bad pairs out with a warning and list them in OUTPUT.skipped.txt
OVERWRITE = False
HIPO = None  # CLAS12 HIPO files to convert instead of PNG pairs (one pair per sector image)
RAW_ORDERS = clas12_hipo.RAW_ORDERS  # --hipo: DC::tdc/DC::tot order tens digits that are raw hits
KEEP_SECTORS_WITHOUT_TRUTH = False  # --hipo: also sectors with raw hits but no TBHits hits (empty truth)

# --- Fixed ---------------------------------------------------------------------------------
IN_FLIGHT_PER_WORKER = 4  # chunks queued or decoded per worker process: bounds the memory
SKIPPED_SUFFIX = ".skipped.txt"  # the list of skipped pairs, beside the output
HIT_COUNTS = ("raw_hits", "truth_hits", "stray_hits", "stray_pairs")  # summed over the chunks
ID_COUNTS = ("unlabelled_hits", "unlabelled_pairs")  # with track-id images: truth hits without a track id


# --- Sharding -------------------------------------------------------------------------------
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
_BUFFERS = {}  # per process: the chunk buffers decode_chunk reuses (no fresh megabytes per chunk)


def chunk_buffers(chunk_events):
    """Reused event and padded buffers of one chunk: raw, truth, padded raw, padded truth."""
    if chunk_events not in _BUFFERS:
        _BUFFERS.clear()
        events = np.zeros((2, chunk_events, ei.LAYERS, ei.WIRES, ei.CHANNELS), np.uint8)
        padded = np.zeros((2, chunk_events, *EVENT_SHAPE), np.uint8)  # the borders stay zero
        _BUFFERS[chunk_events] = (events[0], events[1], padded[0], padded[1])
    return _BUFFERS[chunk_events]


def padded_blobs(raw, truth, level):
    """One chunk's raw and truth images (chunk_events, 36, 112, 3), padded (event_image.pad_event's
    placement, into the reused buffers) and compressed: (raw blob, truth blob)."""
    _, _, raw_padded, truth_padded = chunk_buffers(len(raw))
    raw_padded[:, ei.LAYER_ROWS, ei.WIRE_COLUMNS] = raw
    truth_padded[:, ei.LAYER_ROWS, ei.WIRE_COLUMNS] = truth
    return compress_chunk(raw_padded, level), compress_chunk(truth_padded, level)


def decode_chunk(task):
    """Read, check, pad and compress one chunk of pairs (runs in a worker process).

    task: (chunk_events, level, [(raw_path, truth_path[, tracks_path]), ...]) with at most chunk_events
    pairs. The good pairs are packed at the front of one zero-filled (chunk_events, 128, 128, 3) chunk
    per dataset, compressed as a zlib stream (what the HDF5 gzip filter stores). With track-id
    paths, "track_ids" holds the good pairs' ids, uint8 (good, 36, 112), kept on truth hits only.
    """
    chunk_events, level, paths = task
    raw, truth, _, _ = chunk_buffers(chunk_events)
    ids = np.zeros((chunk_events, ei.LAYERS, ei.WIRES), np.uint8)
    good, bad = [], []
    for i, (raw_path, truth_path, *tracks_path) in enumerate(paths):
        errors = []
        reads = [(raw_path, raw, ei.read_event_png), (truth_path, truth, ei.read_event_png)]
        for path, images, read in reads + [(p, ids, ei.read_track_ids_png) for p in tracks_path]:
            try:
                images[len(good)] = read(path)
            except InputError as exc:
                errors.append(str(exc))
        if errors:
            bad.append((i, "; ".join(errors)))
        else:
            good.append(i)
    k = len(good)
    raw[k:], truth[k:] = 0, 0  # rows of an earlier chunk or of a bad pair
    raw_hits, truth_hits = ei.hit_mask(raw[:k]), ei.hit_mask(truth[:k])
    stray_pairs, stray_hits = ei.truth_outside_raw(raw_hits, truth_hits)  # swapped folders?
    raw_blob, truth_blob = padded_blobs(raw, truth, level)
    result = {
        "good": good,
        "bad": bad,
        "raw": raw_blob,
        "truth": truth_blob,
        "raw_hits": int(raw_hits.sum()),
        "truth_hits": int(truth_hits.sum()),
        "stray_hits": stray_hits,
        "stray_pairs": stray_pairs,
    }
    if paths and len(paths[0]) > 2:  # with track ids: each truth hit has its track's number (none: another set's?)
        unlabelled = truth_hits & (ids[:k] == 0)
        result.update(track_ids=np.where(truth_hits, ids[:k], 0).astype(np.uint8),
                      unlabelled_hits=int(unlabelled.sum()), unlabelled_pairs=int(unlabelled.any(axis=(1, 2)).sum()))
    return result


# --- Convert ----------------------------------------------------------------------------------------
def stale_temp_files(output):
    """Hidden temporary files that killed runs left beside output (a rerun ignores them)."""
    output = Path(output)
    return sorted(output.parent.glob(f".{output.name}.*.tmp"))


def skipped_list_path(output):
    """Where --skip-bad lists the pairs it left out: OUTPUT.skipped.txt."""
    return Path(f"{output}{SKIPPED_SUFFIX}")


def check_settings(workers, chunk_events, compression_level, shard):
    """Refuse impossible settings (InputError); return the shard as (K, N)."""
    if workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    if not 1 <= chunk_events <= 4096:
        raise InputError(f"--chunk-events {chunk_events}: must be between 1 and 4096")
    if compression_level not in (0, 1, 2, 3):
        raise InputError(f"--compression-level {compression_level}: must be 0, 1, 2 or 3")
    if shard is None:
        return 1, 1
    return parse_shard(shard if isinstance(shard, str) else "{}/{}".format(*shard))


def check_outputs(output, overwrite, skip_bad, inputs=()):
    """Refuse outputs we must not write (also one that is, is inside or holds one of the inputs, files or
    folders, --overwrite or not), mention stale temporary files; return the skipped list's path."""
    check_not_an_input(output, inputs)
    check_output_path(output, overwrite)
    skip_path = skipped_list_path(output)
    if skip_bad:
        check_not_an_input(skip_path, inputs)
        check_output_path(skip_path, overwrite)
    stale = stale_temp_files(output)
    if stale:
        warn(f"{stale[0]}: {len(stale)} temporary file(s) like this one were left by interrupted runs; ignored "
             f"(delete them when no run is writing {output.name})")
    return skip_path


def good_pairs(result, pairs, skipped, skip_bad):
    """The good pairs of one decoded chunk; a bad one is added to skipped (skip_bad) or an InputError."""
    for i, reason in result["bad"]:
        if not skip_bad:
            raise InputError(f"{reason} (--skip-bad leaves bad pairs out)")
        skipped.append((pairs[i].raw_name, reason))
    return [pairs[i] for i in result["good"]]


def write_pairs(f, pairs, skipped, *, workers, skip_bad, chunk_events, level, desc, track_ids=False):
    """Decode the pairs chunk by chunk (on workers) and write the good ones in order into the open file f.

    Bad pairs are added to skipped (skip_bad) or stop the run. Returns (pairs written, hit counts).
    track_ids: write the `track_ids` dataset (every pair has a tracks_path; even an empty shard has it).
    """
    writer = ChunkWriter(f, len(pairs), chunk_events, level)
    names = create_names(f, len(pairs))
    if track_ids:
        names.append(pairs_h5.create_track_ids(f, len(pairs), chunk_events, level))
    counts = dict.fromkeys(HIT_COUNTS + ID_COUNTS, 0)
    starts = range(0, len(pairs), chunk_events)
    tasks = ((chunk_events, level, [(p.raw_path, p.truth_path, *([p.tracks_path] if p.tracks_path else []))
                                    for p in pairs[i:i + chunk_events]]) for i in starts)
    with worker_pool(workers) as pool, progress(total=len(pairs), unit="pair", desc=desc) as bar, \
            contextlib.closing(ordered_results(pool, decode_chunk, tasks, workers * IN_FLIGHT_PER_WORKER)) as results:
        for start, result in zip(starts, results, strict=True):
            good = good_pairs(result, pairs[start:start + chunk_events], skipped, skip_bad)
            for ds, key in zip(names, ("raw_name", "truth_name"), strict=False):
                ds[writer.count:writer.count + len(good)] = [getattr(p, key) for p in good]
            if "track_ids" in result:
                names[2][writer.count:writer.count + len(good)] = result["track_ids"]
            writer.add_chunk(result, len(good), packed=not result["bad"])
            for key in counts:
                counts[key] += result.get(key, 0)  # ID_COUNTS: with track ids only
            bar.update(len(result["good"]) + len(result["bad"]))
    written = writer.close()
    for ds in names:
        ds.resize(written, axis=0)
    return written, counts


def write_skipped_list(path, skipped, output, overwrite):
    """OUTPUT.skipped.txt: a comment line, then one 'file<TAB>reason' line per pair left out."""
    with atomic_output(path, overwrite) as tmp:
        lines = [f"# {len(skipped)} file(s) or pair(s) left out of {Path(output).name} by Pix2Pix_data.py --skip-bad"]
        tmp.write_text("\n".join(lines + [f"{name}\t{reason}" for name, reason in skipped]) + "\n")


def warn_at_end(skipped, skip_path, counts, written, truth_source):
    """The warnings a finished run ends with: pairs left out, truth hits that are not raw hits, no truth hits at
    all (truth_source, e.g. "the images in --truth-dir DIR", names where the truth images came from)."""
    if skipped:
        warn(f"left out {len(skipped)} bad pair(s) or file(s), listed in {skip_path}: {describe_problems(skipped)}")
    if counts["stray_hits"]:
        warn(f"{counts['stray_pairs']} pair(s) have truth hits that are not raw hits ({counts['stray_hits']} in all): "
             "are the raw and truth folders swapped?")
    if counts["unlabelled_hits"]:
        warn(f"{counts['unlabelled_pairs']} pair(s) have truth hits without a track id in their track-id image "
             f"({counts['unlabelled_hits']} of {counts['truth_hits']} truth hits): are the track ids of these events?")
    if written and not counts["truth_hits"]:
        warn(f"no truth hits in any of the {written} pairs (no truth pixel above {ei.PNG_HIT_THRESHOLD}): are "
             f"{truth_source} truth images (not track ids, as in a `tracks` folder) with hits at 255 (not 0/1 masks)?")


def convert(raw_dir, truth_dir, output, *, layout=LAYOUT, raw_tag=RAW_TAG, truth_tag=TRUTH_TAG,
            workers=WORKERS, shard=None, skip_bad=SKIP_BAD, overwrite=OVERWRITE, chunk_events=CHUNK_EVENTS,
            compression_level=COMPRESSION_LEVEL, tracks_dir=TRACKS_DIR, tracks_tag=TRACKS_TAG):
    """Convert the PNG pairs of raw_dir/truth_dir (or one tagged folder) into one HDF5 file.

    truth_dir is None for layout="tagged". shard: None, "K/N" or (K, N). Track-id PNGs (tracks_dir,
    or tracks_tag in a tagged folder), when there are any, go into the `track_ids` dataset. Raises
    InputError on any bad input (nothing is written then). Returns a summary dict (see summary_line).
    """
    t0 = time.perf_counter()
    if not str(output).strip():
        raise InputError("an output path is empty")
    output = Path(output)
    k, n = check_settings(workers, chunk_events, compression_level, shard)
    if layout == "folders" and truth_dir is None:
        truth_dir = TRUTH_DIR
    default_tracks = ei.default_tracks_dir(truth_dir) if layout == "folders" and tracks_dir is None else None
    skip_path = check_outputs(output, overwrite, skip_bad, (raw_dir, truth_dir, tracks_dir, default_tracks))
    pairs, problems = find_pairs(raw_dir, truth_dir, layout, raw_tag, truth_tag, tracks_dir, tracks_tag)
    if problems and not skip_bad:
        raise InputError(f"unpaired or unusable files: {describe_problems(problems)} (--skip-bad leaves them out)")
    if not pairs:
        raise InputError(f"{raw_dir}: no pairs found ({describe_problems(problems)})")
    start, stop = shard_range(k, n, len(pairs))
    if start == stop:
        warn(f"shard {k}/{n} of {len(pairs)} pairs is empty")
    skipped = [(str(path), reason) for path, reason in problems] if k == 1 else []  # part 1 reports them
    mine = pairs[start:stop]
    with atomic_output(output, overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            written, counts = write_pairs(f, mine, skipped, workers=min(workers, -(-len(mine) // chunk_events)),
                                          skip_bad=skip_bad, chunk_events=chunk_events, level=compression_level,
                                          desc=output.name, track_ids=bool(pairs[0].tracks_path))
            if written == 0 and n == 1:
                raise InputError(f"{raw_dir}: no good pairs: {describe_problems(skipped)}")
            write_attrs(f, pair_layout=layout, raw_tag=raw_tag, truth_tag=truth_tag,
                        source_raw_dir=str(Path(raw_dir).resolve()),
                        source_truth_dir=str(Path(truth_dir or raw_dir).resolve()),
                        pairs=written, skipped=len(skipped), shard_index=k, shard_count=n, total_pairs=len(pairs),
                        pair_start=start, pair_stop=stop, pair_list_sha256=pair_list_digest(pairs),
                        chunk_events=chunk_events, track_ids=bool(pairs[0].tracks_path),
                        source_tracks=str(Path(pairs[0].tracks_path).parent.resolve()) if pairs[0].tracks_path else "")
        if skip_bad:
            write_skipped_list(skip_path, skipped, output, overwrite)
        elif skip_path.exists():  # an earlier --skip-bad run's list, of the output replaced or gone
            if overwrite:
                skip_path.unlink()
            else:
                warn(f"{skip_path}: left by an earlier run with --skip-bad, not this one's list (delete it)")
    truth_source = (f"the images in --truth-dir {truth_dir}" if layout == "folders"
                    else f"the {truth_tag} files in {raw_dir}")
    warn_at_end(skipped, skip_path, counts, written, truth_source)
    return run_summary(output, written, len(skipped), f"{k}/{n}", counts, t0, read=len(mine))


def run_summary(output, written, skipped, shard, counts, t0, read, note=""):
    """What a run did (summary_line's facts): pairs written and skipped, hits per event, size, time since t0
    and pairs read per second (bad ones too)."""
    seconds = time.perf_counter() - t0
    return {"output": str(output), "pairs": written, "skipped": skipped, "shard": shard,
            "raw_hits_per_event": counts["raw_hits"] / max(written, 1),
            "truth_hits_per_event": counts["truth_hits"] / max(written, 1),
            "bytes": output.stat().st_size, "seconds": seconds, "pairs_per_second": read / seconds, "note": note}


def summary_line(s):
    """The one line a run ends with."""
    raw_bytes = 2 * s["pairs"] * int(np.prod(EVENT_SHAPE))
    ratio = f", {raw_bytes / s['bytes']:.0f}x smaller than raw" if s["pairs"] else ""
    shard = f" (shard {s['shard']})" if s["shard"] != "1/1" else ""
    skipped = f", {s['skipped']} skipped" if s["skipped"] else ""
    return (f"wrote {s['pairs']} pairs{shard}{skipped} to {s['output']} ({s['bytes'] / 1e6:.1f} MB{ratio}); "
            f"hits per event raw {s['raw_hits_per_event']:.1f} truth {s['truth_hits_per_event']:.1f}; "
            f"{s['seconds']:.1f} s, {s['pairs_per_second']:.0f} pairs/s{s['note']}")


# --- Command line ---------------------------------------------------------------------------------------
def build_parser():
    """The command line: every setting above, and the shard and merge options."""
    p = ArgumentParser(description=__doc__)
    p.add_argument("--raw-dir", default=RAW_DIR,
                   help="folder of the raw PNGs; with --layout tagged the one folder of both (default %(default)s)")
    p.add_argument("--truth-dir", default=TRUTH_DIR,
                   help="folder of the truth PNGs, same file names as the raw ones (default %(default)s; "
                        "not used with --layout tagged)")
    p.add_argument("--output", default=OUTPUT, help="HDF5 file to write (default %(default)s)")
    p.add_argument("--layout", choices=ei.PAIR_LAYOUTS, default=LAYOUT,
                   help="how pairs are stored: two folders of equal names, or one folder with tags in the names "
                        "(default %(default)s)")
    p.add_argument("--raw-tag", default=RAW_TAG, help="tagged layout: raw files' tag (default %(default)s)")
    p.add_argument("--truth-tag", default=TRUTH_TAG, help="tagged layout: truth files' tag (default %(default)s)")
    p.add_argument("--tracks-dir", default=TRACKS_DIR,
                   help="folder of track-id PNGs (each truth hit's track number), same file names as the raw ones; "
                        "default: a `tracks` folder beside --truth-dir when there is one (folders layout)")
    p.add_argument("--tracks-tag", default=TRACKS_TAG,
                   help="tagged layout: track-id files' tag; such files are optional (default %(default)s)")
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
    h = p.add_argument_group("CLAS12 HIPO files (instead of PNG pairs)")
    h.add_argument("--hipo", nargs="+", default=HIPO, metavar="FILE.hipo",
                   help="convert these HIPO files, in this order: one pair per sector image, named FILE:EVENT:SECTOR")
    h.add_argument("--raw-orders", nargs="+", type=int, default=RAW_ORDERS, metavar="ORDER",
                   help="DC order tens digits that are raw hits (default: %(default)s, nominal and background)")
    h.add_argument("--keep-sectors-without-truth", action="store_true", default=KEEP_SECTORS_WITHOUT_TRUTH,
                   help="also write sectors with raw hits but no TBHits hits (empty truth); by default only sectors "
                        "with TBHits hits on raw hits, as the CLAS12 AI group does")
    return p


def parse_args(argv=None):
    """The command line, with the combinations that make no sense refused."""
    args = build_parser().parse_args(argv)
    if not args.output.strip():
        raise InputError("--output: the output path is empty")
    if args.merge and (args.shard or args.skip_bad):
        raise InputError("--merge cannot be combined with --shard or --skip-bad")
    if args.copy and not args.merge:
        raise InputError("--copy only goes with --merge")
    if args.merge and not args.copy and args.chunk_events != CHUNK_EVENTS:
        raise InputError(f"--chunk-events {args.chunk_events}: for --merge --copy (a virtual merge keeps the parts' "
                         "chunks)")
    given_tags = [f"--{name}-tag" for name, default in (("raw", RAW_TAG), ("truth", TRUTH_TAG), ("tracks", TRACKS_TAG))
                  if getattr(args, f"{name}_tag") != default]
    if args.layout == "folders" and given_tags and not (args.merge or args.hipo):
        raise InputError(f"{', '.join(given_tags)}: for --layout tagged (the folders layout pairs by file name)")
    import hipo_pairs  # it imports this module's helpers: not at the top

    hipo_pairs.check_args(args)
    if args.layout == "tagged" and args.truth_dir == TRUTH_DIR:
        args.truth_dir = None  # the default truth folder is not one the user gave
    return args


def main(argv=None):
    """Convert (or merge) as the command line says and print the one-line summary."""
    args = parse_args(argv)
    if args.merge:
        print(pairs_h5.merge(args.merge, args.output, copy=args.copy, overwrite=args.overwrite,
                             chunk_events=args.chunk_events, compression_level=args.compression_level))
        return 0
    if args.hipo:
        import hipo_pairs

        summary = hipo_pairs.convert_hipo(
            args.hipo, args.output, raw_orders=tuple(args.raw_orders),
            keep_sectors_without_truth=args.keep_sectors_without_truth, workers=args.workers, shard=args.shard,
            overwrite=args.overwrite, chunk_events=args.chunk_events, compression_level=args.compression_level)
        print(summary_line(summary))
        return 0
    summary = convert(args.raw_dir, args.truth_dir, args.output, layout=args.layout, raw_tag=args.raw_tag,
                      truth_tag=args.truth_tag, workers=args.workers, shard=args.shard, skip_bad=args.skip_bad,
                      overwrite=args.overwrite, chunk_events=args.chunk_events,
                      compression_level=args.compression_level, tracks_dir=args.tracks_dir, tracks_tag=args.tracks_tag)
    print(summary_line(summary))
    return 0


if __name__ == "__main__":
    run_main(main)
