"""clas12_hipo on real HIPO files the tests write: images, conventions, order rewriting, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import hipopy
import hipopybind as hb
import numpy as np
import pytest
from conftest import damage_record

import clas12_hipo as ch
import hipo_writer
from script_utils import InputError

ROOT_DIR = Path(__file__).resolve().parents[1]


def make_event(rng, run, number, sectors, truth_sectors=None):
    """A synthetic event: 1-2 straight-ish tracks (ids 1, 2) plus 2 % noise in each sector."""
    truth_sectors = sectors if truth_sectors is None else truth_sectors
    out = {}
    for s in sectors:
        raw = rng.random((36, 112)) < 0.02
        truth = np.zeros((36, 112), bool)
        ids = np.zeros((36, 112), np.int16)
        for track in range(1, rng.integers(1, 3) + 1) if s in truth_sectors else ():
            wires = np.clip(np.round(rng.integers(5, 107) + rng.uniform(-1.5, 1.5) * np.arange(36)), 0, 111)
            truth[np.arange(36), wires.astype(int)] = True
            ids[np.arange(36), wires.astype(int)] = track
        out[s] = (raw | truth, truth, ids)
    return {"run": run, "event": number, "sectors": out}


def event_bytes(path):
    """[(event bytes, tag, {bank name: position})] of every event of a file, in order (DC banks' positions)."""
    reader, dictionary, event = hb.Reader(), hb.Dictionary(), hb.Event()
    reader.open(str(path))
    reader.readDictionary(dictionary)
    out = []
    while reader.next():
        reader.read(event)
        data = bytes(ord(c) for c in event.getEventBuffer()[:event.getSize()])
        positions = {d.name: event.getStructurePosition(d.group, d.item)[0] for d in (ch.DC_TDC, ch.DC_TOT)}
        out.append((data, event.getTag(), positions))
    return out


EXTRA = ch.BankDef("REC::Extra", 300, 5, "pid/I,px/F,flag/B,code/S,big/L,val/D")


@pytest.fixture
def events():
    rng = np.random.default_rng(7)
    evs = [make_event(rng, 4013, 1000 + 3 * i, [1 + i % 6, 1 + (i + 2) % 6, 6]) for i in range(24)]
    evs[0]["sectors"][1][0][0, 111] = True  # corners: layer 1 wire 112, layer 36 wire 1
    evs[0]["sectors"][1][0][35, 0] = True
    return evs


def test_round_trip_pixel_for_pixel_with_names_and_orders(tmp_path, events, capfd):
    path = tmp_path / "sim.hipo"
    assert hipo_writer.write_events(path, events) == len(events)
    assert capfd.readouterr().out == ""  # hipopybind's writer lines kept off stdout
    stats = {}
    records = list(ch.read_sector_events([path], stats=stats))
    expected = [(e, s) for e in events for s in sorted(e["sectors"])]
    assert len(records) == len(expected) == stats["sectors"] and stats["events"] == len(events)
    for record, (e, s) in zip(records, expected, strict=True):
        raw, truth, ids = e["sectors"][s]
        assert record.name == f"sim.hipo:{e['event']}:{s}" and (record.run, record.sector) == (4013, s)
        assert record.raw.dtype == bool and record.raw.shape == (36, 112) and record.track_ids.dtype == np.int16
        np.testing.assert_array_equal(record.raw, raw)
        np.testing.assert_array_equal(record.truth, truth)
        np.testing.assert_array_equal(record.track_ids, ids)
    # An independent reader (hipopy): orders 0 for track hits, 10 for background; pixel (layer-1, wire-1).
    for e, banks in zip(events, hipopy.open(str(path)), strict=True):
        dc = {c: np.array(banks[f"DC::tdc_{c}"][0]) for c in ("sector", "layer", "component", "order")}
        assert banks["RUN::config_event"][0] == [e["event"]]
        for s, (raw, truth, _) in e["sectors"].items():
            rows = dc["sector"] == s
            layer, wire, order = dc["layer"][rows] - 1, dc["component"][rows] - 1, dc["order"][rows]
            assert sorted(zip(layer, wire, strict=True)) == sorted(zip(*np.nonzero(raw), strict=True))
            np.testing.assert_array_equal(order, np.where(truth[layer, wire], 0, 10))


def test_index_conventions(tmp_path):
    path = tmp_path / "conv.hipo"
    dc = {"sector": [2, 2, 5], "layer": [1, 36, 13], "component": [112, 1, 50], "order": [0, 10, 0], "TDC": [1, 2, 3]}
    tb = {"sector": [2, 2, 2, 5], "superlayer": [4, 6, 6, 1], "layer": [1, 6, 6, 1], "wire": [112, 1, 1, 7],
          "trkID": [3, 4, 2, 1]}  # tracks 4 and 2 on one wire: the larger id, whichever row comes last
    hipo_writer.write_banks(path, [ch.DC_TDC, ch.TBHITS], [{"DC::tdc": dc, "TimeBasedTrkg::TBHits": tb}])
    assert [r.sector for r in ch.read_sector_events(path)] == [2]  # 5's TBHits hit is on no raw hit: no pair
    records = {r.sector: r for r in ch.read_sector_events(path, keep_sectors_without_truth=True)}  # 5: none on raw
    assert set(records) == {2, 5}
    assert sorted(zip(*np.nonzero(records[2].raw), strict=True)) == [(0, 111), (35, 0)]  # layer 1 -> row 0
    assert sorted(zip(*np.nonzero(records[2].truth), strict=True)) == [(18, 111), (35, 0)]  # SL 4 L 1 -> row 18
    assert records[2].track_ids[18, 111] == 3 and records[2].track_ids[35, 0] == 4
    assert list(zip(*np.nonzero(records[5].raw), strict=True)) == [(12, 49)]
    assert list(zip(*np.nonzero(records[5].truth), strict=True)) == [(0, 6)]
    assert records[2].name == "conv.hipo:0:2" and records[2].run is None  # no RUN::config: index in file


def test_sectors_without_truth_skipped_by_default_kept_on_request(tmp_path):
    rng = np.random.default_rng(3)
    evs = [make_event(rng, 1, i, [1, 3, 4], truth_sectors=[3]) for i in range(5)]
    path = tmp_path / "partial.hipo"
    hipo_writer.write_events(path, evs)
    stats = {}
    assert [r.sector for r in ch.read_sector_events(path, stats=stats)] == [3] * 5
    assert stats["sectors_without_truth"] == 10
    kept = list(ch.read_sector_events(path, keep_sectors_without_truth=True))
    assert [r.sector for r in kept] == [1, 3, 4] * 5
    assert not kept[0].truth.any() and kept[0].raw.any() and not kept[0].track_ids.any()
    # No TBHits bank at all (data to denoise): every sector with raw hits, truth None.
    bare = tmp_path / "bare.hipo"
    hipo_writer.write_events(bare, evs, truth=False)
    records = list(ch.read_sector_events(bare))
    assert [r.sector for r in records] == [1, 3, 4] * 5 and records[0].truth is None
    np.testing.assert_array_equal(records[0].raw, evs[0]["sectors"][1][0])


def test_dc_tot_preferred_over_dc_tdc(tmp_path):
    path = tmp_path / "tot.hipo"
    tdc = {"sector": [1, 1], "layer": [1, 2], "component": [1, 2], "order": [0, 0]}
    tot = {"sector": [1], "layer": [3], "component": [3], "order": [0], "ToT": [99]}
    hipo_writer.write_banks(path, [ch.DC_TDC, ch.DC_TOT], [{"DC::tdc": tdc, "DC::tot": tot}, {"DC::tdc": tdc}])
    first, second = ch.read_sector_events(path, keep_sectors_without_truth=True)
    assert list(zip(*np.nonzero(first.raw), strict=True)) == [(2, 2)]  # DC::tot's hit only
    assert list(zip(*np.nonzero(second.raw), strict=True)) == [(0, 0), (1, 1)]  # no DC::tot in event 2
    both = tmp_path / "both.hipo"
    rng = np.random.default_rng(5)
    evs = [make_event(rng, 2, i, [2]) for i in range(3)]
    hipo_writer.write_events(both, evs, dc_banks=("DC::tdc", "DC::tot"))
    for record, e in zip(ch.read_sector_events(both), evs, strict=True):
        np.testing.assert_array_equal(record.raw, e["sectors"][2][0])


def test_raw_orders_honoured(tmp_path):
    path = tmp_path / "orders.hipo"
    orders = [0, 1, 10, 11, 20, 40, 41, 70, 90]
    dc = {"sector": [1] * 9, "layer": [1] * 9, "component": list(range(1, 10)), "order": orders}
    hipo_writer.write_banks(path, [ch.DC_TDC], [{"DC::tdc": dc}])

    def wires(**kw):
        (record,) = ch.read_sector_events(path, **kw)
        return list(np.flatnonzero(record.raw[0]) + 1)

    assert wires() == [1, 2, 3, 4]  # tens digit 0 or 10, units digit ignored
    assert wires(raw_orders=(40,)) == [6, 7]
    assert wires(raw_orders=(0, 70, 90)) == [1, 2, 8, 9]
    with pytest.raises(ValueError):
        list(ch.read_sector_events(path, raw_orders=(5,)))


def rewrite_input(tmp_path, events):
    """A file with DC::tdc, DC::tot (same hits, other orders), TBHits, RUN::config, an unrelated
    bank, odd orders and units digits, and an event without DC hits."""
    rng = np.random.default_rng(11)
    out = []
    for e in events:
        banks = hipo_writer.event_banks(e, ("DC::tdc", "DC::tot"), True)
        n = len(banks["DC::tdc"]["order"])
        banks["DC::tdc"]["order"] = rng.choice([0, 1, 10, 11, 20, 40, 70], n)
        banks["DC::tot"] = dict(banks["DC::tot"], order=rng.choice([0, 1, 10, 11, 50], n))
        banks["REC::Extra"] = {"pid": [11, -211], "px": [0.5, -1.25], "flag": [-3, 7], "code": [-300, 300],
                               "big": [2**40, -1], "val": [np.pi, 1e-300]}
        out.append(banks)
    out.insert(5, {"RUN::config": {"run": [9], "event": [7]}, "REC::Extra": out[0]["REC::Extra"]})
    path = tmp_path / "in.hipo"
    hipo_writer.write_banks(path, [ch.DC_TDC, ch.DC_TOT, ch.TBHITS, ch.RUN_CONFIG, EXTRA], out)
    return path, out


def keep_even(masks):
    """A decide() that keeps the hits on even wires."""
    assert masks.dtype == bool and masks.ndim == 3 and masks.shape[1:] == (36, 112)
    kept = masks.copy()
    kept[:, :, 1::2] = False
    return kept


@pytest.mark.parametrize("batch_events", [1, 4, 1000])
def test_rewrite_orders_changes_only_rejected_orders(tmp_path, events, capfd, batch_events):
    path, written = rewrite_input(tmp_path, events)
    out = tmp_path / "out.hipo"
    counts = ch.rewrite_orders(path, out, keep_even, batch_events=batch_events)
    assert capfd.readouterr().out == ""
    before, after = event_bytes(path), event_bytes(out)
    assert len(before) == len(after) == len(written) == counts["events"] and counts["events_without_dc_hits"] == 1
    dictionary, reader = hb.Dictionary(), hb.Reader()
    reader.open(str(out))
    reader.readDictionary(dictionary)
    for d in (ch.DC_TDC, ch.DC_TOT, ch.TBHITS, ch.RUN_CONFIG, EXTRA):
        assert dictionary.getSchema(d.name).getSchemaString() == hipo_writer.make_schema(d).getSchemaString()
    rewritten = hits = rejected = 0
    for (old, old_tag, positions), (new, new_tag, _), banks in zip(before, after, written, strict=True):
        expected = bytearray(old)
        image = np.zeros((6, 36, 112), bool)  # the raw hits decide saw: DC::tot rows of order 0x / 1x
        if "DC::tot" in banks:
            tot = {c: np.asarray(banks["DC::tot"][c]) for c in ch.DC_COLUMNS}
            raw = np.isin(tot["order"] // 10, [0, 1])
            image[tot["sector"][raw] - 1, tot["layer"][raw] - 1, tot["component"][raw] - 1] = True
        hits, rejected = hits + image.sum(), rejected + image[:, :, 1::2].sum()
        for d in (ch.DC_TDC, ch.DC_TOT):
            if d.name not in banks:
                continue
            s, layer, wire, order = (np.asarray(banks[d.name][c]) for c in ch.DC_COLUMNS)
            on_rejected = (wire % 2 == 0) & image[s - 1, layer - 1, wire - 1]
            for row in np.flatnonzero(on_rejected & np.isin(order // 10, [0, 1])):
                new_order = {0: 40, 1: 41, 10: 70, 11: 71}[order[row]]  # 0 -> 40, 10 -> 70, units digit kept
                offset = positions[d.name] + 8 + hipo_writer.make_schema(d).getOffset("order", int(row), len(order))
                assert expected[offset] == order[row]
                expected[offset] = new_order
                rewritten += 1
        assert bytes(expected) == new and old_tag == new_tag  # every other byte of the event unchanged
    assert counts == {"events": len(written), "hits": hits, "rejected": rejected, "rows_rewritten": rewritten,
                      "events_without_dc_hits": 1}
    assert rewritten > 100
    # Read back through the module: raw now = the kept hits; orders 40/70 are the rejected ones.
    for a, b in zip(ch.read_sector_events(path), ch.read_sector_events(out), strict=True):
        np.testing.assert_array_equal(b.raw, keep_even(a.raw[None])[0])


def test_rewrite_orders_keep_all_is_a_byte_identical_copy(tmp_path, events):
    path, _ = rewrite_input(tmp_path, events)
    counts = ch.rewrite_orders(path, tmp_path / "same.hipo", lambda masks: masks)
    assert counts["rejected"] == counts["rows_rewritten"] == 0 and counts["hits"] > 0
    assert event_bytes(path) == event_bytes(tmp_path / "same.hipo")


def test_rewrite_orders_keeps_every_tag_and_each_tags_order(tmp_path):
    # One record with events of three tags mixed (a writer that keeps file order; scaler events among physics
    # events): the copy has the same events with their tags, each tag's in its order, each tag's together
    # (HIPO's writer, as coatjava's, keeps each tag's events in records of their own).
    defs = [ch.DC_TDC, ch.RUN_CONFIG]
    schemas = {d.name: hipo_writer.make_schema(d) for d in defs}
    dictionary = hb.Dictionary()
    for schema in schemas.values():
        dictionary.addSchema(schema)
    path = tmp_path / "tags.hipo"
    with ch.open_writer(path, dictionary) as writer:
        builder, event = hb.RecordBuilder(), hb.Event()
        for i in range(12):
            event.reset()
            banks = {"DC::tdc": {"sector": [1], "layer": [1 + i], "component": [1 + i], "order": [0]},
                     "RUN::config": {"run": [1], "event": [i]}}
            for d in defs:
                event.addStructure(hipo_writer._make_bank(d, schemas[d.name], banks[d.name]))
            event.setTag(i % 3)
            builder.addEvent(event)
        writer.writeRecord(builder)
    before = event_bytes(path)
    assert [tag for _, tag, _ in before] == [i % 3 for i in range(12)]
    counts = ch.rewrite_orders(path, tmp_path / "out.hipo", lambda masks: masks)
    after = event_bytes(tmp_path / "out.hipo")
    assert counts["events"] == len(after) == 12
    for tag in range(3):
        assert [e for e in after if e[1] == tag] == [e for e in before if e[1] == tag]
    tags = [tag for _, tag, _ in after]
    assert sum(a != b for a, b in zip(tags[:-1], tags[1:], strict=True)) == 2, tags  # three runs of one tag each


def test_rewrite_orders_refusals_leave_nothing(tmp_path, events):
    path, _ = rewrite_input(tmp_path, events)
    with pytest.raises(InputError, match="output is the input"):
        ch.rewrite_orders(path, path, keep_even, overwrite=True)
    existing = tmp_path / "exists.hipo"
    existing.write_text("keep me")
    with pytest.raises(InputError, match="already exists"):
        ch.rewrite_orders(path, existing, keep_even)
    assert existing.read_text() == "keep me"
    with pytest.raises(ValueError, match="shape"):
        ch.rewrite_orders(path, tmp_path / "bad.hipo", lambda masks: masks[:1])
    with pytest.raises(ValueError):
        ch.rewrite_orders(path, tmp_path / "bad.hipo", keep_even, raw_orders=(0, 20))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.hipo", "in.hipo"]


def one_line_error(call, *words):
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert str(word) in message, (word, message)
    return message


APART = """
import json, sys
import clas12_hipo as ch
from script_utils import InputError
out = []
for path in sys.argv[1:]:
    try:
        out.append(["records", len(list(ch.read_sector_events(path)))])
    except InputError as exc:
        out.append(["error", str(exc)])
print(json.dumps(out))
"""


def read_apart(paths):
    """read_sector_events on each path in a separate process: hipopybind aborts the whole process
    on a file the checks let through, which must fail one test, not end the test run."""
    proc = subprocess.run([sys.executable, "-c", APART, *map(str, paths)], capture_output=True, text=True,
                          cwd=ROOT_DIR, timeout=300)
    assert proc.returncode == 0, f"reading aborted (exit {proc.returncode}): {proc.stderr[-1000:]}"
    return json.loads(proc.stdout)


def test_bad_files_are_one_line_errors(tmp_path, events):
    good = tmp_path / "good.hipo"
    hipo_writer.write_events(good, events[:3])
    data = good.read_bytes()
    bad = {"notes.hipo": b"run 4013, 3 events\n" * 10, "cut20.hipo": data[:20], "cut100.hipo": data[:100],
           "half.hipo": data[:len(data) // 2], "last.hipo": data[:-1], "zero.hipo": b"",
           "fake.hipo": b"HIPO" + bytes(60)}
    magic = data.find(b"\x00\x01\xda\xc0", data.find(b"\x00\x01\xda\xc0", 32) + 4)  # the event record's
    bad["corrupt.hipo"] = data[:magic] + bytes(4) + data[magic + 4:]
    bad["damaged.hipo"] = damage_record(data)  # hipopybind reads the last event as zero bytes
    bad["record.hipo"] = damage_record(data, 0, 4)  # hipopybind crashes the process reading the first event
    record = magic - 28  # word 3 of its header: the number of events in the record
    bad["count.hipo"] = data[:record + 12] + (4).to_bytes(4, "little") + data[record + 16:]
    noise = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    bad["dictionary.hipo"] = data[:200] + noise + data[264:]  # inside the dictionary: hipopybind aborted on it
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    no_dc = tmp_path / "nodc.hipo"
    hipo_writer.write_banks(no_dc, [ch.RUN_CONFIG, ch.TBHITS], [{"RUN::config": {"run": [1], "event": [2]}}])
    empty = tmp_path / "empty.hipo"
    hipo_writer.write_banks(empty, [ch.DC_TDC], [])
    expected = {"notes.hipo": "not a HIPO file", "cut20.hipo": "not a HIPO file", "cut100.hipo": "truncated",
                "half.hipo": "truncated", "last.hipo": "truncated", "zero.hipo": "not a HIPO file",
                "fake.hipo": "not a HIPO file",
                "corrupt.hipo": "corrupt", "dictionary.hipo": "its dictionary of banks cannot be read",
                "damaged.hipo": "event #2: corrupt HIPO file (the event cannot be read: its record is damaged)",
                "record.hipo": "corrupt HIPO file (its records hold 3 events and not all could be read",
                "count.hipo": "corrupt HIPO file (its records hold 4 events and 3 could be read: a record is damaged)",
                "nodc.hipo": "no DC::tdc or DC::tot", "empty.hipo": "no events",
                "missing.hipo": "no such file", "good.hipo": None}
    results = read_apart([tmp_path / name for name in expected])
    for (name, words), (kind, message) in zip(expected.items(), results, strict=True):
        if words is None:
            assert (kind, message) == ("records", 9)
            continue
        assert kind == "error" and "\n" not in message, (name, message)
        assert message.startswith(f"{tmp_path / name}: ") and words in message, (name, message)
    # Every file is checked before the first record: a bad second file stops the run at once.
    one_line_error(lambda: next(ch.read_sector_events([good, tmp_path / "notes.hipo"])), "notes.hipo")
    for name in ("half.hipo", "nodc.hipo", "damaged.hipo", "record.hipo"):
        one_line_error(lambda n=name: ch.rewrite_orders(tmp_path / n, tmp_path / "out.hipo", keep_even), name)
    assert not (tmp_path / "out.hipo").exists()


@pytest.mark.parametrize("bank, column, value, message", [
    ("DC::tdc", "layer", 37, "layer 37 outside 1-36"),
    ("DC::tdc", "component", 0, "component 0 outside 1-112"),
    ("DC::tdc", "sector", 7, "sector 7 outside 1-6"),
    ("TimeBasedTrkg::TBHits", "superlayer", 7, "superlayer 7 outside 1-6"),
    ("TimeBasedTrkg::TBHits", "wire", 113, "wire 113 outside 1-112"),
])
def test_rows_out_of_range_name_file_and_event(tmp_path, bank, column, value, message):
    dc = {"sector": [1, 1], "layer": [1, 2], "component": [1, 2], "order": [0, 0]}
    tb = {"sector": [1], "superlayer": [1], "layer": [2], "wire": [2]}
    banks = [{"DC::tdc": dc, "TimeBasedTrkg::TBHits": tb, "RUN::config": {"run": [5], "event": [40 + i]}}
             for i in range(3)]
    banks[2] = {b: dict(c) for b, c in banks[2].items()}
    banks[2][bank][column] = [*banks[2][bank][column][:-1], value]
    path = tmp_path / "rows.hipo"
    hipo_writer.write_banks(path, [ch.DC_TDC, ch.TBHITS, ch.RUN_CONFIG], banks)
    one_line_error(lambda: list(ch.read_sector_events(path)), path, "event 42", bank, message)
    if bank == "DC::tdc":
        one_line_error(lambda: ch.rewrite_orders(path, tmp_path / "o.hipo", keep_even), path, "event 42", message)
        assert not (tmp_path / "o.hipo").exists()


def test_every_truncation_is_an_error_not_a_crash(tmp_path, events):
    good = tmp_path / "good.hipo"
    hipo_writer.write_events(good, events[:6])
    data = good.read_bytes()
    cuts = [*range(0, 700, 7), *range(700, len(data), 97), len(data) - 1]
    for n in cuts:
        (tmp_path / f"cut{n:06d}.hipo").write_bytes(data[:n])
    results = read_apart([tmp_path / f"cut{n:06d}.hipo" for n in cuts] + [good])
    assert [kind for kind, _ in results] == ["error"] * len(cuts) + ["records"]
    assert results[-1][1] == sum(len(e["sectors"]) for e in events[:6])
