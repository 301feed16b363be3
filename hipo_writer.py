"""Synthetic CLAS12 HIPO files: the writers make_events.py and the tests use.

write_events writes sector images as the banks CLAS12 simulation has (DC::tdc and/or DC::tot,
TimeBasedTrkg::TBHits, RUN::config); write_banks writes any banks given column by column. The
bank definitions, the reader and the denoiser's order rewriting are in clas12_hipo.py.

    import hipo_writer
    hipo_writer.write_events("data/synth.hipo", [{"run": 1, "event": 0, "sectors": {1: (raw, truth, None)}}])
"""

import hipopybind as hb
import numpy as np

from clas12_hipo import DC_BANKS, DC_TDC, DC_TOT, N_LAYERS, N_SECTORS, N_WIRES, PUTTERS, RUN_CONFIG, TBHITS, open_writer
from script_utils import atomic_output

HIPO_RUN = 1  # RUN::config run number of make_events.py's --format hipo files
SECTOR_STREAM = 0x5EC7  # seeds the sector draw of HIPO event j: default_rng([SECTOR_STREAM, seed, j])
INT_LIMITS = {k: (int(np.iinfo(t).min), int(np.iinfo(t).max))  # putBytes & co refuse values outside
              for k, t in {"B": np.int8, "S": np.int16, "I": np.int32, "L": np.int64}.items()}


def make_schema(bank_def):
    """A hipopybind Schema for bank_def."""
    schema = hb.Schema(bank_def.name, bank_def.group, bank_def.item)
    schema.parse(bank_def.columns)
    return schema


def _make_bank(bank_def, schema, columns):
    """A filled hipopybind Bank: columns {name: values}; a column left out is zeros."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"{bank_def.name}: columns of different lengths {sorted(lengths)}")
    unknown = set(columns) - {name for name, _ in bank_def.entries}
    if unknown:
        raise ValueError(f"{bank_def.name}: no column {sorted(unknown)}")
    n_rows = lengths.pop() if lengths else 0
    bank = hb.Bank(schema, n_rows)
    for name, kind in bank_def.entries:
        values = np.asarray(columns.get(name, np.zeros(n_rows)))
        if kind in INT_LIMITS:
            low, high = INT_LIMITS[kind]
            if n_rows and (values.min() < low or values.max() > high):
                raise ValueError(f"{bank_def.name}.{name}: values outside {low}..{high} (type {kind})")
            values = values.astype(np.int64)
        PUTTERS[kind](bank, name, values.tolist())
    return bank


def write_banks(path, bank_defs, events, overwrite=False):
    """Write a HIPO file of events given as {bank name: {column: values}}; return the event count.

    bank_defs: the BankDefs of the file's dictionary. The low-level writer behind write_events,
    also used by the tests to write files with unusual banks. Written atomically."""
    bank_defs = {d.name: d for d in bank_defs}
    schemas = {name: make_schema(d) for name, d in bank_defs.items()}
    dictionary = hb.Dictionary()
    for schema in schemas.values():
        dictionary.addSchema(schema)
    n_events = 0
    with atomic_output(path, overwrite, suffix=".hipo") as tmp, open_writer(tmp, dictionary) as writer:
        event = hb.Event()
        for banks in events:
            event.reset()
            for name, columns in banks.items():
                event.addStructure(_make_bank(bank_defs[name], schemas[name], columns))
            writer.addEvent(event)
            n_events += 1
    return n_events


def _stack(parts, n):
    """n columns concatenated from a list of n-tuples of arrays (empty columns for an empty list)."""
    return [np.concatenate(c) for c in zip(*parts, strict=True)] if parts else [np.zeros(0, int)] * n


def event_banks(record, dc_names=(DC_TDC.name,), with_truth=True):
    """The banks of one synthetic event (see write_events) as {bank name: {column: values}}."""
    run, number = int(record["run"]), int(record["event"])
    rng = np.random.default_rng([run & 0xFFFFFFFF, number & 0xFFFFFFFF])
    dc, tb = [], []
    for sector in sorted(record["sectors"]):
        raw, truth, ids = record["sectors"][sector]
        raw, truth = np.asarray(raw, bool), np.asarray(truth, bool)
        ids = np.ones(truth.shape, np.int16) if ids is None else np.asarray(ids)
        if raw.shape != (N_LAYERS, N_WIRES) or truth.shape != raw.shape or ids.shape != raw.shape:
            raise ValueError(f"event {number} sector {sector}: images must be ({N_LAYERS}, {N_WIRES})")
        if not 1 <= sector <= N_SECTORS or (truth & ~raw).any():
            raise ValueError(f"event {number} sector {sector}: bad sector or truth hits outside the raw hits")
        layer, wire = np.nonzero(raw)
        dc.append((np.full(layer.size, sector), layer + 1, wire + 1, np.where(truth[layer, wire], 0, 10)))
        layer, wire = np.nonzero(truth)
        tb.append((np.full(layer.size, sector), layer // 6 + 1, layer % 6 + 1, wire + 1, ids[layer, wire]))
    s, layer, wire, order = _stack(dc, 4)
    tdc = rng.integers(0, 1500, s.size)
    banks = {}
    for name in dc_names if s.size else ():
        banks[name] = {"sector": s, "layer": layer, "component": wire, "order": order, "TDC": tdc}
        if name == DC_TOT.name:
            banks[name]["ToT"] = rng.integers(50, 400, s.size)
    s, sl, layer, wire, trk = _stack(tb, 5)
    if with_truth and s.size:
        banks[TBHITS.name] = {"id": np.arange(1, s.size + 1), "sector": s, "superlayer": sl, "layer": layer,
                              "wire": wire, "trkID": trk, "time": rng.uniform(0, 500, s.size)}
    banks[RUN_CONFIG.name] = {"run": [run], "event": [number]}
    return banks


def write_events(path, events, overwrite=False, dc_banks=(DC_TDC.name,), truth=True):
    """Write synthetic events as a HIPO file, the form CLAS12 simulation has; return the event count.

    events: an iterable of {"run": int, "event": int, "sectors": {sector: (raw, truth, track_ids)}}
    ((36, 112) masks; track_ids (36, 112) trkIDs or None for 1). Each raw hit is a DC row (order 0
    for a truth hit, 10 for background, random TDC) in each bank of dc_banks (DC::tdc and/or
    DC::tot); each truth hit a TBHits row (unless truth=False); RUN::config holds run and event."""
    unknown = set(dc_banks) - {d.name for d in DC_BANKS}
    if unknown or not dc_banks:
        raise ValueError(f"dc_banks must be DC::tdc and/or DC::tot, not {dc_banks!r}")
    defs = [d for d in DC_BANKS if d.name in dc_banks] + ([TBHITS] if truth else []) + [RUN_CONFIG]
    return write_banks(path, defs, (event_banks(e, dc_banks, truth) for e in events), overwrite)


def hipo_sectors(seed, j, sectors):
    """The sectors (1-6, increasing) that HIPO event j of the set `seed` fills, drawn without repeats."""
    rng = np.random.default_rng([SECTOR_STREAM, seed, j])
    return np.sort(rng.choice(np.arange(1, N_SECTORS + 1), sectors, replace=False)).tolist()


def hipo_events(chunks, seed, sectors):
    """make_events.py's set as HIPO events for write_events, from its (start, raw, truth, track ids) chunks of
    whole HIPO events.

    Event i of the set (the PNG route's event_00000i) is the k-th smallest of the sectors of
    HIPO event j = i // sectors (k = i % sectors; RUN::config event j): read in file order, the
    sector images come back in the set's order. Track hits get order 0 and TBHits rows with their
    track number as trkID, background hits order 10 (event_banks)."""
    for at, raw, truth, ids in chunks:
        for first in range(0, len(raw), sectors):
            j = (at + first) // sectors
            members = range(first, min(first + sectors, len(raw)))
            yield {"run": HIPO_RUN, "event": j, "sectors": {s: (raw[k], truth[k], ids[k])
                                                            for s, k in zip(hipo_sectors(seed, j, sectors), members,
                                                                            strict=False)}}
