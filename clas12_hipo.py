"""CLAS12 HIPO files in and out: drift-chamber hits <-> the project's sector images.

HIPO reading and the denoiser's order rewriting live here, as the image layout lives in
event_image.py (the synthetic-file writers are in hipo_writer.py). Conventions (coatjava's
bank definitions and its DC denoising engine):

- DC::tdc (group 20600, item 12) and DC::tot (item 15, preferred when an event has it): one row
  per wire hit; pixel (layer-1, component-1) of the sector's 36x112 image.
- order, tens digit: 0 nominal, 10 merged background; a denoiser rejects a hit by rewriting
  0 -> 40 and 10 -> 70, keeping the row and the units digit.
- TimeBasedTrkg::TBHits (item 31): the hits tracking kept, pixel (6*(superlayer-1)+layer-1,
  wire-1), with trkID; the truth of a training pair. RUN::config: run and event numbers.

hipopybind aborts the whole process on a file it cannot parse (not HIPO, truncated, no events),
so every file is checked here first (check_hipo_file). Its writer prints progress lines on
stdout: they are kept off the user's output (_quiet_stdout).
"""

import contextlib
import ctypes
import functools
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import hipopybind as hb
import numpy as np

from script_utils import InputError, atomic_output

N_SECTORS, N_LAYERS, N_WIRES = 6, 36, 112
LAYERS_PER_SUPERLAYER = 6
RAW_ORDERS = (0, 10)  # tens digits of the orders a denoiser reads
REJECTED_ORDER = {0: 40, 10: 70}  # tens digit of a rejected hit; the units digit is kept


@dataclass(frozen=True)
class BankDef:
    """A bank's name, group, item and columns ("name/TYPE,...", HIPO types B S I F D L)."""

    name: str
    group: int
    item: int
    columns: str

    @functools.cached_property
    def entries(self):
        """[(column, type letter)] in bank order."""
        return [tuple(entry.split("/")) for entry in self.columns.split(",")]


DC_TDC = BankDef("DC::tdc", 20600, 12, "sector/B,layer/B,component/S,order/B,TDC/I")
DC_TOT = BankDef("DC::tot", 20600, 15, "sector/B,layer/B,component/S,order/B,TDC/I,ToT/S")
TBHITS = BankDef(
    "TimeBasedTrkg::TBHits", 20600, 31,
    "id/S,status/S,sector/B,superlayer/B,layer/B,wire/S,TDC/I,doca/F,time/F,clusterID/S,trkID/B",
)
RUN_CONFIG = BankDef(
    "RUN::config", 10000, 11,
    "run/I,event/I,unixtime/I,trigger/L,timestamp/L,type/B,mode/B,torus/F,solenoid/F",
)
DC_BANKS = (DC_TOT, DC_TDC)  # in order of preference

# The columns read, with their types; real files have more, which are left alone.
DC_COLUMNS = {"sector": "B", "layer": "B", "component": "S", "order": "B"}
TBHITS_COLUMNS = {"sector": "B", "superlayer": "B", "layer": "B", "wire": "S", "trkID": "B"}
DC_RANGES = {"sector": (1, N_SECTORS), "layer": (1, N_LAYERS), "component": (1, N_WIRES)}
TBHITS_RANGES = {"sector": (1, N_SECTORS), "superlayer": (1, N_LAYERS // LAYERS_PER_SUPERLAYER),
                 "layer": (1, LAYERS_PER_SUPERLAYER), "wire": (1, N_WIRES)}
RUN_COLUMNS = {"run": "I", "event": "I"}
TYPE_CODES = {"B": 1, "S": 2, "I": 3, "F": 4, "D": 5, "L": 8}
GETTERS = dict(B=hb.getBytes, S=hb.getShorts, I=hb.getInts, F=hb.getFloats, D=hb.getDoubles, L=hb.getLongs)
PUTTERS = dict(B=hb.putBytes, S=hb.putShorts, I=hb.putInts, F=hb.putFloats, D=hb.putDoubles, L=hb.putLongs)

FILE_MAGIC, WORD_MAGIC, HEADER_BYTES = b"HIPO", 0xC0DA0100, 56
EVENT_MAGIC = "EVNT"  # the first 4 bytes of every event in a record
HIPO_VERSION = 6  # the HIPO 4 format


@dataclass
class SectorImage:
    """One sector of one event: name "FILE:EVENT:SECTOR", raw hits, truth hits and track ids.

    raw, truth: (36, 112) bool; track_ids: (36, 112) int16 (TBHits trkID, 0 = none). truth and
    track_ids are None for a file without TBHits. run is None without RUN::config, and event is
    then the event's index in the file."""

    name: str
    file: str
    run: int | None
    event: int
    sector: int
    raw: np.ndarray
    truth: np.ndarray | None
    track_ids: np.ndarray | None

    def paired_truth(self):
        """The truth a pair holds: the TBHits hits that are raw hits (a TBHits hit without one is dropped)."""
        return self.truth & self.raw

    def paired_track_ids(self):
        """paired_truth's track ids, 0 elsewhere, as a pairs file stores them (uint8: ids above 255 clipped)."""
        return np.clip(np.where(self.paired_truth(), self.track_ids, 0), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def _quiet_stdout():
    """Send file descriptor 1 to /dev/null (hipopybind's writer prints from C++ with printf)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        libc.fflush(None)  # C stdio buffers a pipe: flush while it still points at /dev/null
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def open_writer(tmp, dictionary):
    """A hipopybind Writer on tmp with dictionary, closed (file index written) at the end, quietly."""
    writer = hb.Writer()
    writer.addDictionary(dictionary)
    with _quiet_stdout():
        writer.open(str(tmp))
    try:
        yield writer
    finally:
        with _quiet_stdout():
            writer.close()


def _record_header(f, pos, size, path):
    """(length in bytes, events) of the HIPO record at byte pos; InputError when cut or corrupt."""
    f.seek(pos)
    words = f.read(HEADER_BYTES)
    if len(words) < HEADER_BYTES:
        raise InputError(f"{path}: truncated HIPO file (a record header at byte {pos} is cut at byte {size})")
    length, _, _, n_events, _, _, _, magic = struct.unpack_from("<8I", words)
    if magic != WORD_MAGIC or length * 4 < HEADER_BYTES:
        raise InputError(f"{path}: corrupt HIPO file (no valid record at byte {pos})")
    if pos + length * 4 > size:
        raise InputError(f"{path}: truncated HIPO file (the record at byte {pos} needs "
                         f"{pos + length * 4} bytes, the file has {size})")
    return length * 4, n_events


def check_hipo_file(path):
    """Check that path is a complete HIPO 4 file with events and return its number of events (once per state of
    the file: a route reads a file several times, and the check reads every event)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    st = path.stat()
    return _checked_hipo_file(path, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _checked_hipo_file(path, inode, size, mtime_ns):
    """check_hipo_file's check of the file as it is (inode, size and time stamp; an error is not kept).

    hipopybind aborts the process (not an exception) on a text file, a truncated file, one without events
    or one whose dictionary or a compressed record is damaged: this walks the file and record headers
    first, then reads the dictionary and every event in a child process (FILE_PROBE, microseconds an
    event) and compares their number with the record headers'; each problem is a one-line InputError.
    """
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES or head[:4] != FILE_MAGIC:
            raise InputError(f"{path}: not a HIPO file")
        _, _, header_words, _, _, bit_info, user_bytes, magic = struct.unpack_from("<4s7I", head)
        if magic == int.from_bytes(WORD_MAGIC.to_bytes(4, "little"), "big"):
            raise InputError(f"{path}: big-endian HIPO files are not supported")
        if magic != WORD_MAGIC:
            raise InputError(f"{path}: not a HIPO file")
        if bit_info & 0xFF != HIPO_VERSION:
            raise InputError(f"{path}: HIPO version {bit_info & 0xFF} is not supported (HIPO 4 needed)")
        (trailer,) = struct.unpack_from("<Q", head, 40)
        pos = header_words * 4 + user_bytes + (-user_bytes) % 4
        if trailer == 0:
            raise InputError(f"{path}: incomplete HIPO file (no file index: its writer was never closed)")
        if pos > size or trailer > size:
            raise InputError(f"{path}: truncated HIPO file (ends at byte {size})")
        n_events = 0
        while pos < trailer:
            length, events = _record_header(f, pos, size, path)
            pos, n_events = pos + length, n_events + events
        if pos != trailer:
            raise InputError(f"{path}: corrupt HIPO file (records overrun the file index at byte {trailer})")
        _record_header(f, trailer, size, path)
    if n_events == 0:
        raise InputError(f"{path}: HIPO file holds no events")
    probe = subprocess.run([sys.executable, "-c", FILE_PROBE, str(path)], capture_output=True, text=True,
                           errors="replace")
    if "dictionary read" not in probe.stdout:  # hipopybind aborted (a C++ assertion) on the damaged dictionary
        raise InputError(f"{path}: corrupt HIPO file (its dictionary of banks cannot be read)")
    read = probe.stdout.split("events read ")[-1].strip()
    if read != str(n_events):  # aborted, a C++ exception, or another number of events than the headers
        raise InputError(f"{path}: corrupt HIPO file (its records hold {n_events} events and "
                         f"{'not all' if probe.returncode else read} could be read: a record is damaged)")
    return n_events


# check_hipo_file's child: the lines 'dictionary read' and 'events read N', or less where hipopybind aborts
FILE_PROBE = """import os, sys, hipopybind as hb
r = hb.Reader()
r.open(sys.argv[1])
r.readDictionary(hb.Dictionary())
os.write(1, b"\\ndictionary read\\n")
event, n = hb.Event(), 0
while r.next():
    r.read(event)
    n += 1
os.write(1, f"events read {n}\\n".encode())
"""


def _check_schema(path, dictionary, bank_def, columns):
    """A Bank for bank_def's bank if the file's dictionary has it (with columns), else None."""
    if not dictionary.hasSchema(bank_def.name):
        return None
    schema = dictionary.getSchema(bank_def.name)
    for column, kind in columns.items():
        if not schema.exists(column) or schema.getEntryType(column) != TYPE_CODES[kind]:
            raise InputError(f"{path}: bank {bank_def.name} has no column {column} of type {kind}")
    return hb.Bank(schema)


def _read_columns(event, bank, columns, ranges, where):
    """The bank's columns in event as int32 arrays (None when it has no rows), checked against ranges.

    A value outside its range is an InputError naming the file, the event, the bank and the row."""
    event.getStructure(bank)
    if not bank.getRows():
        return None
    out = []
    for column, kind in columns.items():
        values = np.asarray(GETTERS[kind](bank, column), dtype=np.int32)
        low, high = ranges.get(column, (-np.inf, np.inf))
        if values.min() < low or values.max() > high:
            row = int(np.flatnonzero((values < low) | (values > high))[0])
            name = bank.getSchema().getName()
            raise InputError(f"{where}: {name} row {row}: {column} {int(values[row])} outside {low}-{high}")
        out.append(values)
    return out


def check_event_header(event, where):
    """InputError unless the event starts with HIPO's event magic.

    A compressed (LZ4) record damaged inside is read without an error: hipopybind hands its events
    on from the damage to the record's end as zero bytes, which would read as events without
    banks. Only called for events without DC rows (reading the header copies the event's buffer)."""
    if "".join(event.getEventBuffer()[:4]) != EVENT_MAGIC:
        raise InputError(f"{where}: corrupt HIPO file (the event cannot be read: its record is damaged)")


class _HipoInput:
    """A checked HIPO file open for reading: its reader, dictionary and the banks read here."""

    def __init__(self, path):
        self.path = Path(path)
        check_hipo_file(self.path)
        self.reader = hb.Reader()
        self.reader.open(str(self.path))
        self.dictionary = hb.Dictionary()
        self.reader.readDictionary(self.dictionary)
        self.dc = [(d, bank) for d in DC_BANKS
                   if (bank := _check_schema(self.path, self.dictionary, d, DC_COLUMNS)) is not None]
        if not self.dc:
            raise InputError(f"{self.path}: no DC::tdc or DC::tot bank in the file's dictionary")
        self.tbhits = _check_schema(self.path, self.dictionary, TBHITS, TBHITS_COLUMNS)
        self.run_config = _check_schema(self.path, self.dictionary, RUN_CONFIG, RUN_COLUMNS)
        self.index = -1

    def next_event(self, event):
        """Read the next event into event (a hipopybind Event); False at the end of the file."""
        if not self.reader.next():
            return False
        self.reader.read(event)
        self.index += 1
        return True

    def run_event(self, event):
        """(run, event number, where): RUN::config's numbers, else (None, index in the file)."""
        if self.run_config is not None:
            event.getStructure(self.run_config)
            if self.run_config.getRows():
                run, number = (int(GETTERS["I"](self.run_config, c)[0]) for c in ("run", "event"))
                return run, number, f"{self.path}: event {number} (#{self.index} in the file)"
        return None, self.index, f"{self.path}: event #{self.index}"

    def dc_rows(self, event, where):
        """{bank name: (sector, layer, component, order)} for the event's non-empty DC banks.

        An event without DC rows is checked for its header (check_event_header)."""
        rows = {}
        for bank_def, bank in self.dc:
            if (columns := _read_columns(event, bank, DC_COLUMNS, DC_RANGES, where)) is not None:
                rows[bank_def.name] = tuple(columns)
        if not rows:
            check_event_header(event, where)
        return rows

    def truth(self, event, where):
        """((6, 36, 112) bool, (6, 36, 112) int16 trkID) from TBHits, or None without TBHits."""
        if self.tbhits is None:
            return None
        mask = np.zeros((N_SECTORS, N_LAYERS, N_WIRES), bool)
        ids = np.zeros(mask.shape, np.int16)
        columns = _read_columns(event, self.tbhits, TBHITS_COLUMNS, TBHITS_RANGES, where)
        if columns is not None:
            s, sl, layer, wire, trk = columns
            index = (s - 1, LAYERS_PER_SUPERLAYER * (sl - 1) + layer - 1, wire - 1)
            mask[index] = True
            np.maximum.at(ids, index, trk.astype(np.int16))  # two tracks on one wire: the larger id
        return mask, ids


def _check_orders(raw_orders):
    """The raw orders as a tuple of tens digits (0, 10, ..., 90); ValueError otherwise."""
    orders = tuple(int(o) for o in raw_orders)
    if not orders or any(o % 10 or not 0 <= o <= 90 for o in orders):
        raise ValueError(f"raw_orders must be tens digits 0, 10, ..., 90, not {raw_orders!r}")
    return orders


@functools.lru_cache
def _raw_table(raw_orders):
    """For each byte value -128..127 (index + 128): whether an order of that value is raw."""
    return np.isin(np.arange(-128, 128) // 10 * 10, raw_orders)


def _raw_rows(order, raw_orders):
    """Which rows have an order whose tens digit is a raw one (a table lookup, cheaper than isin)."""
    return _raw_table(raw_orders)[order + 128]


def _raw_image(dc_rows, raw_orders):
    """(6, 36, 112) bool: the raw-order hits of the preferred DC bank (DC::tot, else DC::tdc)."""
    image = np.zeros((N_SECTORS, N_LAYERS, N_WIRES), bool)
    for bank_def in DC_BANKS:
        if bank_def.name in dc_rows:
            s, layer, wire, order = dc_rows[bank_def.name]
            keep = _raw_rows(order, raw_orders)
            image[s[keep] - 1, layer[keep] - 1, wire[keep] - 1] = True
            break
    return image


def read_sector_events(paths, raw_orders=RAW_ORDERS, keep_sectors_without_truth=False, stats=None, labels=None):
    """Yield a SectorImage for every sector image of the files' events, streamed event by event.

    raw: the rows of DC::tot (if the event has it) or DC::tdc whose order's tens digit is in
    raw_orders. By default only sectors with TBHits hits on raw hits are yielded (the CLAS12 AI
    group's rule; a TBHits hit without a raw hit is not truth a pair can have); keep_sectors_without_truth
    adds the other sectors with raw hits. A file
    without TBHits yields every sector with raw hits, truth None. Every file is checked before
    the first record. stats, a dict if given, receives counts: files, events,
    events_without_dc_hits, sectors, sectors_without_truth (left out). labels: each file's FILE in the
    records' names FILE:EVENT:SECTOR (default: its base name)."""
    paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    raw_orders = _check_orders(raw_orders)
    for path in paths:
        check_hipo_file(path)
    stats = {} if stats is None else stats
    for key in ("files", "events", "events_without_dc_hits", "sectors", "sectors_without_truth"):
        stats.setdefault(key, 0)
    labels = [Path(p).name for p in paths] if labels is None else labels
    for path, label in zip(paths, labels, strict=True):
        stats["files"] += 1
        yield from _file_sector_events(_HipoInput(path), label, raw_orders, keep_sectors_without_truth, stats)


def _file_sector_events(source, file_name, raw_orders, keep_without_truth, stats):
    """read_sector_events for one open file, its records named file_name:EVENT:SECTOR."""
    event = hb.Event()
    while source.next_event(event):
        stats["events"] += 1
        run, number, where = source.run_event(event)
        raw = _raw_image(source.dc_rows(event, where), raw_orders)
        if not raw.any():
            stats["events_without_dc_hits"] += 1
            continue
        truth = source.truth(event, where)
        for s in range(N_SECTORS):
            record = SectorImage(f"{file_name}:{number}:{s + 1}", file_name, run, number, s + 1, raw[s],
                                 None if truth is None else truth[0][s], None if truth is None else truth[1][s])
            has_raw = bool(raw[s].any())
            if truth is None:
                wanted = has_raw
            elif record.paired_truth().any():
                wanted = True
            else:
                wanted = keep_without_truth and has_raw
                stats["sectors_without_truth"] += has_raw and not wanted
            if wanted:
                stats["sectors"] += 1
                yield record


def rewrite_orders(in_path, out_path, decide, raw_orders=RAW_ORDERS, batch_events=64, overwrite=False):
    """Copy a HIPO file event for event, marking the hits decide rejects as coatjava's DCDenoiseEngine does.

    decide(masks) gets the (B, 36, 112) bool images (raw-order hits of DC::tot, else DC::tdc) of
    the sectors with hits in up to batch_events events and returns the kept (B, 36, 112) bool.
    Every raw-order row of DC::tdc and DC::tot on a hit that is not kept gets its order rewritten
    (0 -> 40, 10 -> 70, units digit kept); nothing else changes: the same events with their tags,
    every other bank and row byte for byte, each tag's events in their order (HIPO's writer, as
    coatjava's, keeps each tag's events in records of their own). Written atomically. Returns counts: events,
    hits (raw pixels), rejected (pixels), rows_rewritten, events_without_dc_hits."""
    raw_orders = _check_orders(raw_orders)
    if not set(raw_orders) <= set(REJECTED_ORDER):
        raise ValueError(f"rewrite_orders marks orders {sorted(REJECTED_ORDER)} only, not {raw_orders!r}")
    if batch_events < 1:
        raise ValueError(f"batch_events must be at least 1, not {batch_events}")
    source, out = _HipoInput(in_path), Path(out_path)
    if (out.exists() and os.path.samefile(in_path, out)) or source.path.resolve() == out.resolve():
        raise InputError(f"{out_path}: the output is the input file")
    counts = dict.fromkeys(("events", "hits", "rejected", "rows_rewritten", "events_without_dc_hits"), 0)
    pool = [hb.Event() for _ in range(batch_events)]
    with atomic_output(out_path, overwrite, suffix=".hipo") as tmp, \
            open_writer(tmp, source.dictionary) as writer:
        while batch := _read_batch(source, pool, raw_orders, counts):
            rejected = _decide_batch(batch, decide, counts)
            for (event, dc_rows, _), event_rejected in zip(batch, rejected, strict=True):
                counts["rows_rewritten"] += _mark_rejected(source, event, dc_rows, event_rejected, raw_orders)
                writer.addEvent(event)
    return counts


def _read_batch(source, pool, raw_orders, counts):
    """Read up to len(pool) events into pool: [(event, DC rows, (6, 36, 112) raw image)]."""
    batch = []
    for event in pool:
        if not source.next_event(event):
            break
        _, _, where = source.run_event(event)
        dc_rows = source.dc_rows(event, where)
        image = _raw_image(dc_rows, raw_orders)
        counts["events"] += 1
        counts["events_without_dc_hits"] += not image.any()
        batch.append((event, dc_rows, image))
    return batch


def _decide_batch(batch, decide, counts):
    """Run decide on the batch's sector images with hits; return each event's rejected (6, 36, 112)."""
    images = np.stack([image for _, _, image in batch])  # (events, 6, 36, 112)
    has_hits = images.any(axis=(2, 3))
    masks = images[has_hits]
    rejected = np.zeros_like(images)
    if len(masks):
        kept = np.asarray(decide(masks))
        if kept.shape != masks.shape:
            raise ValueError(f"decide returned shape {kept.shape} for masks of shape {masks.shape}")
        rejected[has_hits] = masks & ~kept.astype(bool)
    counts["hits"] += int(masks.sum())
    counts["rejected"] += int(rejected.sum())
    return rejected


def _mark_rejected(source, event, dc_rows, rejected, raw_orders):
    """Rewrite in event the order of every raw-order DC row on a rejected pixel; return the rows changed."""
    changed = 0
    if not rejected.any():
        return changed
    for bank_def, bank in source.dc:
        if bank_def.name not in dc_rows:
            continue
        s, layer, wire, order = dc_rows[bank_def.name]
        rows = _raw_rows(order, raw_orders) & rejected[s - 1, layer - 1, wire - 1]
        if not rows.any():
            continue
        tens = order // 10 * 10
        new_order = order.copy()
        for old, new in REJECTED_ORDER.items():
            new_order[rows & (tens == old)] += new - old
        event.getStructure(bank)
        PUTTERS["B"](bank, "order", new_order.tolist())
        event.replace(bank)  # same size: the bank is overwritten in place
        changed += int(rows.sum())
    return changed
