"""The HDF5 file of event pairs that Pix2Pix_data.py writes: its datasets, attributes and parts.

    raw, truth    uint8 (N, 128, 128, 3), chunked along axis 0, gzip (written as ISA-L deflate)
    names         the raw file names
    truth_names   the truth file names
    track_ids     (optional) uint8 (N, 36, 112): the track number of each truth hit (tracks images or HIPO's trkID)
    attrs         layout (event_image.LAYOUT as JSON), created, created_by and the writer's facts

- ChunkWriter appends events to `raw` and `truth` one whole compressed chunk at a time;
  create_names and write_attrs make the rest of a file.
- check_virtual_sources and read_track_ids read a file back: a merged file's parts, the track ids.
- iterate_uint8 reads pairs back in batches, a whole HDF5 chunk at a time, in file order or shuffled by
  windows of chunks (data_management's pipelines, the denoiser's test split).
- merge joins the part files of a sharded conversion (Pix2Pix_data.py --shard K/N) into one
  file, as virtual datasets over the parts or as a copy.

    import pairs_h5
    print(pairs_h5.merge(["parts/part1.h5", "parts/part2.h5"], "data/pairs.h5"))
"""

import contextlib
import datetime
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

import event_image as ei
from script_utils import InputError, atomic_output, check_not_an_input, check_output_path, progress

CHUNK_EVENTS = 32  # events per HDF5 chunk along axis 0 (a batch of data_management's pipelines)
COMPRESSION_LEVEL = 1  # ISA-L deflate level 0-3
EVENT_SHAPE = (ei.PADDED_SIZE, ei.PADDED_SIZE, ei.CHANNELS)
EVENT_KEYS = ("raw", "truth")
NAME_KEYS = ("names", "truth_names")
OPTIONAL_KEYS = {"track_ids": (ei.LAYERS, ei.WIRES)}  # uint8 per-event datasets merged when every part has them
NAMES_BLOCK = 65536  # names copied at once when merging
PER_PART_ATTRS = {"shard_index", "pair_start", "pair_stop", "pairs", "skipped", "chunk_events", "created",
                  "created_by", "layout"}  # a part's own attributes (the layout is checked apart)
PART_ATTRS = ("shard_index", "shard_count", "total_pairs", "pair_start", "pair_stop", "pair_list_sha256")


# --- Chunks --------------------------------------------------------------------------------------
def compress_chunk(events, level=COMPRESSION_LEVEL):
    """One whole chunk of uint8 events as the zlib stream the HDF5 gzip filter stores."""
    from isal import isal_zlib  # not in requirements-inference.txt: only the writers need it

    return isal_zlib.compress(np.ascontiguousarray(events).data, level)


def unpack_chunk(blob, chunk_events):
    """The (chunk_events, 128, 128, 3) uint8 events of one compressed chunk."""
    from isal import isal_zlib

    return np.frombuffer(isal_zlib.decompress(blob), np.uint8).reshape(chunk_events, *EVENT_SHAPE)


class ChunkWriter:
    """Append events to the raw and truth datasets of an open file, one whole chunk at a time.

    A chunk compressed elsewhere (a worker process) goes in as it is (write_direct_chunk) when it
    starts on a chunk boundary; otherwise (after a skipped pair, or when merging) events gather
    in a one-chunk buffer that is compressed here. Memory: one chunk per dataset.
    """

    def __init__(self, f, capacity, chunk_events=CHUNK_EVENTS, level=COMPRESSION_LEVEL):
        self.chunk_events, self.level = chunk_events, level
        self.datasets = {
            key: f.create_dataset(key, shape=(capacity, *EVENT_SHAPE), maxshape=(None, *EVENT_SHAPE), dtype=np.uint8,
                                  chunks=(chunk_events, *EVENT_SHAPE), compression="gzip", compression_opts=level)
            for key in EVENT_KEYS
        }
        self.buffer = {key: np.zeros((chunk_events, *EVENT_SHAPE), np.uint8) for key in self.datasets}
        self.filled = 0  # events in the buffer
        self.written = 0  # events in the file

    @property
    def count(self):
        """Events added so far (written or buffered)."""
        return self.written + self.filled

    def _grow(self, n):
        """Make room for n events (the capacity is only a first guess when merging)."""
        for ds in self.datasets.values():
            if ds.shape[0] < n:
                ds.resize(n, axis=0)

    def add_chunk(self, blobs, count, packed=True):
        """Append the first count events of one chunk compressed elsewhere ({"raw": blob, "truth": blob}).

        packed: nothing was left out of the chunk, so it may go in as it is when it starts on a
        chunk boundary; otherwise it is unpacked and buffered.
        """
        if not packed or self.filled or self.written % self.chunk_events:
            self.add_events({key: unpack_chunk(blobs[key], self.chunk_events)[:count] for key in self.datasets})
            return
        self._grow(self.written + count)
        for key, ds in self.datasets.items():
            ds.id.write_direct_chunk((self.written, 0, 0, 0), blobs[key])
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
            ds.id.write_direct_chunk((self.written, 0, 0, 0), compress_chunk(self.buffer[key], self.level))
        self.written += self.filled
        self.filled = 0

    def close(self):
        """Write what is buffered and cut the datasets to the events written; return their number."""
        self.flush()
        for ds in self.datasets.values():
            ds.resize(self.written, axis=0)
        return self.written


def create_names(f, capacity):
    """The names and truth_names datasets (UTF-8 strings), to be cut to size at the end."""
    return [f.create_dataset(key, shape=(capacity,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"),
                             chunks=(min(max(capacity, 1), 4096),)) for key in NAME_KEYS]


def create_track_ids(f, capacity, chunk_events=CHUNK_EVENTS, level=COMPRESSION_LEVEL):
    """The optional track_ids dataset, uint8 (N, 36, 112), to be cut to size at the end."""
    shape = OPTIONAL_KEYS["track_ids"]
    return f.create_dataset("track_ids", shape=(capacity, *shape), maxshape=(None, *shape), dtype=np.uint8,
                            chunks=(chunk_events, *shape), compression="gzip", compression_opts=level)


def write_attrs(f, created_by="Pix2Pix_data.py", **attrs):
    """Record the 128x128 layout, the creation time, the writer and the given facts as file attributes."""
    f.attrs["layout"] = json.dumps(ei.LAYOUT)
    f.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    f.attrs["created_by"] = created_by
    for key, value in attrs.items():
        f.attrs[key] = value


# --- Reading -------------------------------------------------------------------------------------
@contextlib.contextmanager
def reading(path):
    """h5py.File(path, "r"), whose read errors inside the block (a damaged file: a chunk that does not decompress)
    are a one-line InputError naming the file, not h5py's OSError traceback."""
    try:
        with h5py.File(path, "r") as f:
            yield f
    except OSError as exc:
        raise InputError(f"{path}: damaged HDF5 file ({str(exc).splitlines()[0]})") from None


def mapped_pairs(source):
    """How many pairs a merged dataset maps from one of its virtual sources (a whole part, as merge_parts maps it)."""
    lo, hi = source.vspace.get_select_bounds()
    return hi[0] - lo[0] + 1


def check_virtual_sources(path, key, ds):
    """A merged (virtual) dataset reads zeros where a part file is missing: refuse that instead.

    Each source file must exist (relative names are found beside path, as HDF5 does) and hold
    the source dataset with the pair shape and as many pairs as the merged file maps from it (a part
    rewritten since the merge would give other events under the merged names, or a read error).
    """
    if not ds.is_virtual:
        return
    for source in ds.virtual_sources():
        if source.file_name == ".":
            continue  # a source inside this file
        name = Path(source.file_name)
        part = name if name.is_absolute() else path.parent / name
        problem = None
        try:
            with h5py.File(part, "r") as f:
                if source.dset_name not in f:
                    problem = f"has no {source.dset_name}"
                elif f[source.dset_name].shape[1:] != EVENT_SHAPE:
                    problem = f"holds {source.dset_name} of shape {f[source.dset_name].shape}"
                elif f[source.dset_name].shape[0] != mapped_pairs(source):
                    problem = (f"holds {f[source.dset_name].shape[0]} pairs where the merged file maps "
                               f"{mapped_pairs(source)} (rewritten since the merge? merge again)")
        except OSError:
            problem = "is missing or unreadable"
        if problem:
            raise InputError(f"{path}: '{key}' is merged from part files and {part} {problem} (a merged file "
                             "needs its parts beside it; Pix2Pix_data.py --merge --copy makes a self-contained one)")


def read_track_ids(h5_path, indices):
    """Track ids uint8 (n, 36, 112) of the given sorted pair indices, or None when the file has none.

    The optional `track_ids` dataset (Pix2Pix_data.py from track-id PNGs, or HIPO's TBHits trkID):
    each truth hit's track number, 0 elsewhere. Each group of 1024 indices is read as one
    contiguous block, from its first to its last index.
    """
    indices = np.asarray(indices, np.int64)
    with reading(h5_path) as f:
        if "track_ids" not in f:
            return None
        out = np.empty((len(indices), ei.LAYERS, ei.WIRES), np.uint8)
        for lo in range(0, len(indices), 1024):
            group = indices[lo:lo + 1024]
            out[lo:lo + len(group)] = f["track_ids"][int(group[0]):int(group[-1]) + 1][group - group[0]]
    return out


# --- Reading batches (data_management's pipelines, the denoiser's test split) ----------------------
def _chunk_len(ds):
    """Pairs per HDF5 chunk along axis 0 (64 for an unchunked dataset, a reasonable read size)."""
    return ds.chunks[0] if ds.chunks else 64


def _chunk_groups(indices, chunk_len):
    """Split sorted indices into the groups that share an HDF5 chunk (a list of arrays)."""
    chunk = indices // chunk_len
    cuts = np.flatnonzero(np.diff(chunk)) + 1
    return np.split(indices, cuts)


def epoch_windows(indices, chunk_len, rng, window):
    """The order of one pass, as a list of windows (index arrays) to read and yield in turn.

    Without rng: file order, windows of whole chunks. With rng: the chunk groups in random
    order, gathered into windows of about `window` pairs, each window permuted.
    """
    groups = _chunk_groups(np.asarray(indices, np.int64), chunk_len)
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    windows, current, size = [], [], 0
    for group in groups:
        current.append(group)
        size += len(group)
        if size >= window:
            windows.append(np.concatenate(current))
            current, size = [], 0
    if current:
        windows.append(np.concatenate(current))
    if rng is not None:
        windows = [rng.permutation(w) for w in windows]
    return windows


def _read_pairs(f, indices, chunk_len):
    """raw, truth uint8 arrays of the given pairs, in the given order.

    The indices are visited in file order, one slice read per HDF5 chunk touched (a chunk is
    decompressed once), and each row is copied straight to its place in the output.
    """
    order = np.argsort(indices, kind="stable")
    in_file_order = indices[order]
    raw = np.empty((len(indices),) + EVENT_SHAPE, np.uint8)
    truth = np.empty_like(raw)
    datasets = ((f["raw"], raw), (f["truth"], truth))
    start = 0
    for group in _chunk_groups(in_file_order, chunk_len):
        lo, hi = int(group[0]), int(group[-1]) + 1
        stop = start + len(group)
        dest = order[start:stop]
        for ds, out in datasets:
            block = ds[lo:hi]
            out[dest] = block if len(group) == hi - lo else block[group - lo]
        start = stop
    return raw, truth


def _batches(parts, batch_size, drop_remainder):
    """Cut consecutive (raw, truth) parts into batches; only a batch that spans two parts is copied."""
    carry = None  # the start of a batch left over from the previous part
    for raw, truth in parts:
        s = 0
        if carry is not None:
            s = min(batch_size - len(carry[0]), len(raw))
            carry = (np.concatenate([carry[0], raw[:s]]), np.concatenate([carry[1], truth[:s]]))
            if len(carry[0]) < batch_size:
                continue
            yield carry
            carry = None
        full = s + (len(raw) - s) // batch_size * batch_size
        for b in range(s, full, batch_size):
            yield raw[b:b + batch_size], truth[b:b + batch_size]
        if full < len(raw):
            carry = (raw[full:], truth[full:])
    if carry is not None and not drop_remainder:
        yield carry


def iterate_uint8(h5_path, indices, batch_size, window, shuffle=False, seed=None, epoch=0, drop_remainder=False,
                  memory=None):
    """One pass over the given pairs as uint8 (raw, truth) numpy batches, in data_management.make_dataset's order
    (window: data_management's SHUFFLE_WINDOW).

    memory: None to stream from the file, or a dict that is filled with the pairs on the first
    call and read from on later ones (the in-memory mode of make_dataset).
    """
    indices = np.sort(np.asarray(indices, np.int64))
    rng = np.random.default_rng([seed, epoch]) if shuffle else None
    with reading(h5_path) as f:
        if f["raw"].shape[0] <= (indices[-1] if len(indices) else -1):
            raise RuntimeError(f"{h5_path}: the file changed; it has fewer pairs than the split needs")
        chunk_len = _chunk_len(f["raw"])
        windows = epoch_windows(indices, chunk_len, rng, window)
        if memory is None:
            yield from _batches((_read_pairs(f, w, chunk_len) for w in windows), batch_size, drop_remainder)
            return
        if "raw" not in memory:
            memory["raw"], memory["truth"] = _read_pairs(f, indices, chunk_len)
    pos = np.searchsorted(indices, np.concatenate(windows) if windows else indices)
    stop = len(pos) - len(pos) % batch_size if drop_remainder else len(pos)
    for s in range(0, stop, batch_size):
        yield memory["raw"][pos[s:s + batch_size]], memory["truth"][pos[s:s + batch_size]]


# --- Merging the parts of a sharded conversion -----------------------------------------------------
def read_part(path):
    """The facts of one part file needed to merge it, checking that it is one."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0]})") from None
    with f:
        missing = [key for key in (*EVENT_KEYS, *NAME_KEYS) if key not in f]
        missing += [key for key in (*PART_ATTRS, "layout", "pairs") if key not in f.attrs]
        if missing:
            raise InputError(f"{path}: not a part written by Pix2Pix_data.py (no {', '.join(missing)})")
        part = {key: f.attrs[key] for key in (*PART_ATTRS, "layout", "pairs", "skipped")}
        part.update(path=path, n=len(f["raw"]), attrs=dict(f.attrs))
        part["optional"] = {key for key in OPTIONAL_KEYS if key in f and len(f[key]) == part["n"]}
        if part["layout"] != json.dumps(ei.LAYOUT):
            raise InputError(f"{path}: made with another 128x128 layout ({part['layout']})")
        if not len(f["truth"]) == len(f["names"]) == len(f["truth_names"]) == part["n"] == part["pairs"]:
            raise InputError(f"{path}: raw, truth and names disagree on the number of pairs")
    return part


def check_parts(parts):
    """The parts must come from one conversion and hold every shard exactly once.

    One conversion: the same pair list (its sha256 covers the names only, which every make_events set
    shares) and the same sources and options, every attribute but a part's own (PER_PART_ATTRS): the
    merged file keeps the first part's as its own."""
    first = parts[0]
    for part in parts[1:]:
        shared = sorted((set(first["attrs"]) | set(part["attrs"])) - PER_PART_ATTRS,
                        key=lambda k: (k not in PART_ATTRS, k))  # the pair list first, then sources and options
        for key in shared:
            mine, theirs = part["attrs"].get(key), first["attrs"].get(key)
            if not np.array_equal(np.asarray(mine), np.asarray(theirs)):
                raise InputError(f"{part['path']}: not a part of the same conversion as {first['path']} "
                                 f"({key} {mine} != {theirs})")
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


def part_blocks(part, keys, size, text=False):
    """(start, {key: rows}) of a part file's datasets, size rows at a time (text: as str); a damaged part is an
    InputError (reading's), and only its reads are judged so: the caller writes between the blocks."""
    with reading(part["path"]) as src:
        for a in range(0, part["n"], size):
            yield a, {key: (src[key].asstr() if text else src[key])[a:a + size] for key in keys}


def copy_events(f, parts, total, chunk_events, level, desc):
    """The raw and truth events of the parts, copied into f in order."""
    writer = ChunkWriter(f, total, chunk_events, level)
    with progress(total=total, unit="pair", desc=desc) as bar:
        for part in parts:
            for _, events in part_blocks(part, EVENT_KEYS, chunk_events):
                writer.add_events(events)
                bar.update(len(events["raw"]))
    writer.close()


def link_events(f, parts, total, output, keys=EVENT_KEYS):
    """raw and truth (or the optional keys) as virtual datasets over the parts, found relative to output's folder."""
    for key in keys:
        shape = OPTIONAL_KEYS.get(key, EVENT_SHAPE)
        layout = h5py.VirtualLayout(shape=(total, *shape), dtype=np.uint8)
        at = 0
        for part in parts:
            source = os.path.relpath(part["path"].resolve(), Path(output).resolve().parent)
            layout[at:at + part["n"]] = h5py.VirtualSource(source, key, shape=(part["n"], *shape))
            at += part["n"]
        f.create_virtual_dataset(key, layout, fillvalue=0)


def copy_optional(f, parts, total, keys, chunk_events, level):
    """The optional per-event datasets of the parts, copied into f in order, a block at a time."""
    for key in keys:
        shape = OPTIONAL_KEYS[key]
        ds = f.create_dataset(key, shape=(total, *shape), dtype=np.uint8, chunks=(chunk_events, *shape),
                              compression="gzip", compression_opts=level)
        at = 0
        for part in parts:
            for a, block in part_blocks(part, (key,), NAMES_BLOCK):
                ds[at + a:at + a + len(block[key])] = block[key]
            at += part["n"]


def copy_names(f, parts, total):
    """names and truth_names of the parts, copied into f in order, a block at a time."""
    for key in NAME_KEYS:
        ds = f.create_dataset(key, shape=(total,), dtype=h5py.string_dtype("utf-8"))
        at = 0
        for part in parts:
            for a, block in part_blocks(part, (key,), NAMES_BLOCK, text=True):
                ds[at + a:at + a + len(block[key])] = block[key]
            at += part["n"]


def merged_attrs(parts, total, copy, chunk_events):
    """The attributes of the merged file: the first part's, as if one unsharded run wrote it."""
    facts = {k: v for k, v in parts[0]["attrs"].items() if k not in ("layout", "created", "created_by")}
    facts.update(pairs=total, skipped=int(sum(p["skipped"] for p in parts)), shard_index=1, shard_count=1,
                 pair_start=0, pair_stop=int(parts[0]["total_pairs"]), storage="copy" if copy else "virtual",
                 merged_from=[p["path"].name for p in parts],
                 chunk_events=chunk_events if copy else int(parts[0]["attrs"]["chunk_events"]))
    return facts


def merge(part_paths, output, *, copy=False, overwrite=False, chunk_events=CHUNK_EVENTS,
          compression_level=COMPRESSION_LEVEL):
    """Join the parts of a sharded conversion into one file, virtual (default) or copied; return a summary line."""
    t0 = time.perf_counter()
    output = Path(output)
    check_not_an_input(output, part_paths)
    check_output_path(output, overwrite)
    parts = sorted((read_part(p) for p in part_paths), key=lambda p: int(p["shard_index"]))
    check_parts(parts)
    total = sum(p["n"] for p in parts)
    with atomic_output(output, overwrite) as tmp:
        with h5py.File(tmp, "w", libver=("v110", "latest")) as f:
            optional = sorted(set.intersection(*(p["optional"] for p in parts)))
            if copy:
                copy_events(f, parts, total, chunk_events, compression_level, output.name)
                copy_optional(f, parts, total, optional, chunk_events, compression_level)
            else:
                link_events(f, parts, total, output, (*EVENT_KEYS, *optional))
            copy_names(f, parts, total)
            write_attrs(f, **merged_attrs(parts, total, copy, chunk_events))
    how = "copied into" if copy else "as virtual datasets (keep the parts beside it) in"
    return (f"merged {len(parts)} parts, {total} pairs, {how} {output} ({output.stat().st_size / 1e6:.1f} MB); "
            f"{time.perf_counter() - t0:.1f} s")
