"""The HIPO route on real HIPO files the tests write: make_events --format hipo, Pix2Pix_data --hipo,
Pix2Pix_denoise --hipo (orders rewritten, --evaluate), each against the PNG route on the same events, and bad input."""

import json
import signal
import subprocess
import sys

import h5py
import hipopy
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, damage_record, run_script, wait_for
from test_clas12_hipo import event_bytes, make_event, rewrite_input
from test_pix2pix_denoise import save_model

import clas12_hipo as ch
import event_image as ei
import hipo_writer
import make_events as me
import pairs_h5
import Pix2Pix_denoise
import trained_model

N, SEED = 45, 4  # events of the synthetic set used here (odd: the last HIPO event has one sector)


def make_both(folder, n=N, seed=SEED, *args):
    """The same synthetic events as PNG pairs (folder/png) and as a HIPO file (folder/ev.hipo)."""
    for extra in (["--output", folder / "png"], ["--format", "hipo", "--output", folder / "ev.hipo"]):
        proc = run_script("make_events.py", *extra, "-n", n, "--seed", seed, "--workers", 1, *args)
        assert proc.returncode == 0, proc.stderr
    return folder / "png", folder / "ev.hipo"


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    return make_both(tmp_path_factory.mktemp("events"))


@pytest.fixture(scope="module")
def track_model(tmp_path_factory):
    """A fixed-weight generator keeping the hits with a hit in the layer above or below (test_pix2pix_denoise)."""
    return save_model(tmp_path_factory.mktemp("model") / "track.keras", "track")


# --- make_events: track ids and the HIPO file -----------------------------------------------------
def test_track_ids_number_the_truth_hits_and_change_nothing_else():
    raw, truth = me.generate_events(200, seed=8, luminosity=2, start=5)
    raw3, truth3, ids = me.generate_events(200, seed=8, luminosity=2, start=5, track_ids=True)
    np.testing.assert_array_equal(raw3, raw)
    np.testing.assert_array_equal(truth3, truth)
    assert ids.dtype == np.uint8 and ids.shape == (200, 36, 112)
    np.testing.assert_array_equal(ids > 0, ei.hit_mask(truth))
    for i in range(200):  # tracks numbered 1..k, each crossing (nearly) all 36 layers
        k = ids[i].max()
        assert set(np.unique(ids[i])) == set(range(k + 1)) and 1 <= k <= me.MAX_TRACKS
        for t in range(1, k + 1):
            assert (ids[i] == t).any(axis=1).sum() >= 25
    assert (ids.max(axis=(1, 2)) > 1).mean() > 0.3


def test_hipo_file_holds_the_png_events(both):
    png, hipo = both
    _, _, ids = me.generate_masks(N, SEED, track_ids=True)
    records = list(ch.read_sector_events(hipo))
    assert len(records) == N
    for i, r in enumerate(records):  # event i of the set: the (i % 2)-th sector of HIPO event i // 2
        assert (r.run, r.event) == (hipo_writer.HIPO_RUN, i // 2) and r.name == f"ev.hipo:{i // 2}:{r.sector}"
        assert r.sector == hipo_writer.hipo_sectors(SEED, i // 2, 2)[i % 2]
        np.testing.assert_array_equal(r.raw, ei.hit_mask(ei.read_event_png(png / f"raw/event_{i:06d}.png")))
        np.testing.assert_array_equal(r.truth, ei.hit_mask(ei.read_event_png(png / f"truth/event_{i:06d}.png")))
        np.testing.assert_array_equal(r.track_ids, ids[i])
    sectors = [hipo_writer.hipo_sectors(SEED, j, 2) for j in range(200)]
    assert all(len(set(s)) == 2 and 1 <= min(s) and max(s) <= 6 for s in sectors) and len(set(map(tuple, sectors))) > 8
    # orders: 0 on track hits, 10 on background hits (test_clas12_hipo checks the bank layout itself)
    for banks in hipopy.open(str(hipo)):
        order, sector = np.array(banks["DC::tdc_order"][0]), np.array(banks["DC::tdc_sector"][0])
        assert set(order) <= {0, 10} and (order == 0).any() and (order == 10).any() and len(set(sector)) <= 2


def test_make_events_hipo_sectors_and_bad_settings(tmp_path):
    out = tmp_path / "six.hipo"
    proc = run_script("make_events.py", "--format", "hipo", "--output", out, "-n", 13, "--sectors", 6, "--seed", 2)
    assert proc.returncode == 0 and "13 events" in proc.stdout and "3 HIPO events of 6 sectors" in proc.stdout
    last = hipo_writer.hipo_sectors(2, 2, 6)[0]
    assert [r.sector for r in ch.read_sector_events(out)] == [1, 2, 3, 4, 5, 6] * 2 + [last]
    assert_one_line_error(run_script("make_events.py", "--format", "hipo", "--output", out, "-n", 5), "already exists")
    for args, words in ((["--sectors", 7], "--sectors 7"), (["--layout", "tagged"], "--layout tagged"),
                        (["--output", tmp_path], "is a folder"), (["--output", tmp_path / "o.txt"], "named .hipo")):
        full = ["--format", "hipo", "--output", tmp_path / "x.hipo", "-n", 5, *args]
        assert_one_line_error(run_script("make_events.py", *full), words)
    assert_one_line_error(run_script("make_events.py", "--output", tmp_path / "png", "-n", 5, "--sectors", 3),
                          "--sectors 3: for --format hipo")  # not left unused without a word
    assert leftovers(tmp_path) == ["six.hipo"]


# --- Pix2Pix_data --hipo ------------------------------------------------------------------------------
def read_h5(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}, dict(f.attrs)


def test_hdf5_from_hipo_equals_hdf5_from_pngs(tmp_path, both):
    png, hipo = both
    proc = run_script("Pix2Pix_data.py", "--raw-dir", png / "raw", "--truth-dir", png / "truth",
                      "--output", tmp_path / "png.h5", "--chunk-events", 8)
    assert proc.returncode == 0, proc.stderr
    for workers in (1, 2):
        out = tmp_path / f"hipo{workers}.h5"
        proc = run_script("Pix2Pix_data.py", "--hipo", hipo, "--output", out, "--chunk-events", 8,
                          "--workers", workers)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert f"wrote {N} pairs" in proc.stdout and f"{(N + 1) // 2} HIPO events read" in proc.stdout
        from_png, _ = read_h5(tmp_path / "png.h5")
        from_hipo, attrs = read_h5(out)
        for key in ("raw", "truth"):
            assert from_hipo[key].shape == (N, 128, 128, 3) and from_hipo[key].dtype == np.uint8
            np.testing.assert_array_equal(from_hipo[key], from_png[key])
        sectors = [hipo_writer.hipo_sectors(SEED, i // 2, 2)[i % 2] for i in range(N)]
        assert [n.decode() for n in from_hipo["names"]] == [f"ev.hipo:{i // 2}:{s}" for i, s in enumerate(sectors)]
        np.testing.assert_array_equal(from_hipo["truth_names"], from_hipo["names"])
        np.testing.assert_array_equal(from_hipo["track_ids"], me.generate_masks(N, SEED, track_ids=True)[2])
        np.testing.assert_array_equal(from_hipo["track_ids"], from_png["track_ids"])  # make_events' tracks/ PNGs
        assert attrs["pair_layout"] == "hipo" and list(attrs["raw_orders"]) == [0, 10]
        assert (attrs["pairs"], attrs["total_pairs"], attrs["shard_count"]) == (N, N, 1)


def test_hipo_shards_merge_into_the_unsharded_file(tmp_path, both):
    _, hipo = both
    run = lambda *a: run_script("Pix2Pix_data.py", "--hipo", hipo, "--workers", 1, "--chunk-events", 4, *a)
    assert run("--output", tmp_path / "whole.h5").returncode == 0
    parts = [tmp_path / f"part{k}.h5" for k in (1, 2, 3)]
    for k in (3, 1, 2):
        proc = run("--shard", f"{k}/3", "--output", parts[k - 1])
        assert proc.returncode == 0 and f"wrote 15 pairs (shard {k}/3)" in proc.stdout, proc.stderr
    whole, attrs = read_h5(tmp_path / "whole.h5")
    for copy in ([], ["--copy"]):
        merged = tmp_path / f"merged{len(copy)}.h5"
        proc = run_script("Pix2Pix_data.py", "--merge", *parts, "--output", merged, *copy)
        assert proc.returncode == 0, proc.stderr
        data, merged_attrs = read_h5(merged)
        for key in ("raw", "truth", "names", "truth_names", "track_ids"):
            np.testing.assert_array_equal(data[key], whole[key])
        assert merged_attrs["pair_list_sha256"] == attrs["pair_list_sha256"]
    # Parts of another conversion (other raw orders: the same sector names) are refused.
    proc = run("--shard", "2/3", "--raw-orders", "0", "--output", tmp_path / "other2.h5")
    assert proc.returncode == 0, proc.stderr
    proc = run_script("Pix2Pix_data.py", "--merge", parts[0], tmp_path / "other2.h5", parts[2], "--output",
                      tmp_path / "bad.h5")
    assert_one_line_error(proc, "other2.h5", "not a part of the same conversion")
    assert pairs_h5.read_part(parts[0])["optional"] == {"track_ids"}


def odd_file(path):
    """Two events: sector 1 with a TBHits hit on no DC hit and one on an order-20 hit, sector 2 without
    TBHits hits, sector 3 with background (order 10) and track hits, sector 4 with a DC hit and a TBHits
    hit on another wire only; then an event with no DC rows."""
    dc = {"sector": [1, 1, 1, 2, 2, 3, 3, 3, 4], "layer": [1, 2, 3, 1, 2, 4, 5, 6, 10],
          "component": [10, 10, 10, 50, 51, 7, 8, 90, 30], "order": [0, 0, 20, 10, 0, 0, 1, 10, 0]}
    tb = {"sector": [1, 1, 1, 3, 3, 4], "superlayer": [1, 1, 2, 1, 1, 2], "layer": [1, 3, 1, 4, 5, 4],
          "wire": [10, 10, 60, 7, 8, 31], "trkID": [2, 2, 2, 1, 1, 3]}
    hipo_writer.write_banks(path, [ch.DC_TDC, ch.TBHITS, ch.RUN_CONFIG], [
        {"DC::tdc": dc, "TimeBasedTrkg::TBHits": tb, "RUN::config": {"run": [7], "event": [31]}},
        {"RUN::config": {"run": [7], "event": [32]}}])


def test_hipo_truth_is_cut_to_raw_hits_sectors_and_orders(tmp_path):
    odd_file(tmp_path / "odd.hipo")
    proc = run_script("Pix2Pix_data.py", "--hipo", tmp_path / "odd.hipo", "--output", tmp_path / "a.h5",
                      "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    assert "dropped 2 TBHits hit(s) in 1 sector(s)" in proc.stderr and proc.stderr.count("\n") == 1
    assert "1 without DC hits, 2 sectors without TBHits hits left out" in proc.stdout  # 2, and 4: none on a raw hit
    data, _ = read_h5(tmp_path / "a.h5")
    assert [n.decode() for n in data["names"]] == ["odd.hipo:31:1", "odd.hipo:31:3"]
    raw, truth = ei.hit_mask(ei.crop_event(data["raw"])), ei.hit_mask(ei.crop_event(data["truth"]))
    assert list(zip(*np.nonzero(raw[0]), strict=True)) == [(0, 9), (1, 9)]  # order 20 is not raw
    assert list(zip(*np.nonzero(truth[0]), strict=True)) == [(0, 9)]  # TBHits (2, 9) and (6, 59): no raw hit
    assert list(zip(*np.nonzero(truth[1]), strict=True)) == [(3, 6), (4, 7)] and raw[1].sum() == 3
    assert data["track_ids"][0, 0, 9] == 2 and data["track_ids"][1, 3, 6] == 1
    np.testing.assert_array_equal(data["track_ids"] > 0, truth)  # the dropped TBHits hits' trkID too
    proc = run_script("Pix2Pix_data.py", "--hipo", tmp_path / "odd.hipo", "--output", tmp_path / "b.h5",
                      "--keep-sectors-without-truth", "--raw-orders", "0", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    data, attrs = read_h5(tmp_path / "b.h5")
    assert [n.decode() for n in data["names"]] == [f"odd.hipo:31:{s}" for s in (1, 2, 3, 4)]
    raw, truth = ei.hit_mask(ei.crop_event(data["raw"])), ei.hit_mask(ei.crop_event(data["truth"]))
    assert list(zip(*np.nonzero(raw[1]), strict=True)) == [(1, 50)] and not truth[1].any()  # order 10 left out
    assert list(zip(*np.nonzero(raw[3]), strict=True)) == [(9, 29)] and not truth[3].any()
    assert list(zip(*np.nonzero(raw[2]), strict=True)) == [(3, 6), (4, 7)]  # order 1: tens digit 0
    assert list(attrs["raw_orders"]) == [0] and attrs["keep_sectors_without_truth"]


def test_pix2pix_data_hipo_bad_inputs(tmp_path, both):
    png, hipo = both
    good = tmp_path / "good.hipo"
    good.write_bytes(hipo.read_bytes())
    (tmp_path / "notes.hipo").write_text("run 4013\n" * 20)
    (tmp_path / "cut.hipo").write_bytes(good.read_bytes()[:-100])
    (tmp_path / "damaged.hipo").write_bytes(damage_record(good.read_bytes()))
    (tmp_path / "record.hipo").write_bytes(damage_record(good.read_bytes(), 0, 4))  # crashed hipopybind
    hipo_writer.write_banks(tmp_path / "nodc.hipo", [ch.TBHITS, ch.RUN_CONFIG],
                            [{"RUN::config": {"run": [1], "event": [2]}}])
    hipo_writer.write_events(tmp_path / "notruth.hipo", [make_event(np.random.default_rng(1), 3, 9, [2])], truth=False)
    rows = [{"DC::tdc": {"sector": [1], "layer": [5], "component": [9 if i < 3 else 113], "order": [0]},
             "TimeBasedTrkg::TBHits": {"sector": [1], "superlayer": [1], "layer": [5], "wire": [9]},
             "RUN::config": {"run": [1], "event": [100 + i]}} for i in range(4)]
    hipo_writer.write_banks(tmp_path / "rows.hipo", [ch.DC_TDC, ch.TBHITS, ch.RUN_CONFIG], rows)
    out = tmp_path / "out.h5"
    cases = [
        (["--hipo", tmp_path / "notes.hipo"], ["notes.hipo", "not a HIPO file"]),
        (["--hipo", good, tmp_path / "cut.hipo"], ["cut.hipo", "truncated"]),
        (["--hipo", good, tmp_path / "damaged.hipo"], ["damaged.hipo", "event", "its record is damaged"]),
        (["--hipo", good, tmp_path / "record.hipo"], ["record.hipo", "not all could be read"]),
        (["--hipo", tmp_path / "nodc.hipo"], ["nodc.hipo", "no DC::tdc or DC::tot"]),
        (["--hipo", tmp_path / "notruth.hipo"], ["notruth.hipo", "no TimeBasedTrkg::TBHits bank"]),
        (["--hipo", tmp_path / "rows.hipo"], ["rows.hipo", "event 103", "component 113 outside 1-112"]),
        (["--hipo", tmp_path / "missing.hipo"], ["missing.hipo", "no such file"]),
        (["--hipo", good, "--raw-dir", png / "raw"], ["--hipo", "--raw-dir"]),
        (["--hipo", good, "--merge", tmp_path / "x.h5"], ["--hipo", "--merge"]),
        (["--hipo", good, "--skip-bad"], ["--hipo", "--skip-bad"]),
        (["--hipo", good, "--raw-orders", "5"], ["--raw-orders 5", "tens digits"]),
        (["--hipo", good, "--raw-orders", "20", "90"], ["good.hipo", "none of the", "--raw-orders 20 90 keeps"]),
        (["--raw-orders", "0"], ["only go with --hipo"]),
    ]
    for args, words in cases:
        assert_one_line_error(run_script("Pix2Pix_data.py", *args, "--output", out, "--workers", 1), *words)
    proc = run_script("Pix2Pix_data.py", "--hipo", good, "--output", good, "--overwrite")
    assert_one_line_error(proc, "good.hipo", "output is one of the --hipo input files")
    assert leftovers(tmp_path) == sorted(["good.hipo", "notes.hipo", "cut.hipo", "damaged.hipo", "record.hipo",
                                          "nodc.hipo", "notruth.hipo", "rows.hipo"])
    assert good.read_bytes() == hipo.read_bytes()



def test_a_hipo_file_given_twice_is_refused_and_clashing_base_names_stay_apart(tmp_path):
    for folder in ("d1", "d2"):  # farm job outputs: one base name in two folders
        (tmp_path / folder).mkdir()
        odd_file(tmp_path / folder / "dst.hipo")
    one, other = tmp_path / "d1/dst.hipo", tmp_path / "d2/dst.hipo"
    (tmp_path / "link.hipo").symlink_to(one)
    out = tmp_path / "out.h5"
    for twice in ([one, one], [one, tmp_path / "link.hipo"], [tmp_path / "d2/../d1/dst.hipo", other, one]):
        proc = run_script("Pix2Pix_data.py", "--hipo", *twice, "--output", out, "--workers", 1)
        assert_one_line_error(proc, "given twice to --hipo", "same file")
    assert leftovers(tmp_path) == ["d1", "d2", "link.hipo"]
    run = lambda *a: run_script("Pix2Pix_data.py", "--hipo", one, other, "--workers", 1, "--chunk-events", 1, *a)
    assert run("--output", out).returncode == 0
    whole, _ = read_h5(out)
    assert [n.decode() for n in whole["names"]] == [f"{d}/dst.hipo:31:{s}" for d in ("d1", "d2") for s in (1, 3)]
    parts = [tmp_path / f"part{k}.h5" for k in (1, 2)]
    for k, part in enumerate(parts, 1):
        assert run("--shard", f"{k}/2", "--output", part).returncode == 0
    assert run_script("Pix2Pix_data.py", "--merge", *parts, "--output", tmp_path / "merged.h5").returncode == 0
    merged, _ = read_h5(tmp_path / "merged.h5")
    for key in ("raw", "truth", "names", "track_ids"):
        np.testing.assert_array_equal(merged[key], whole[key])

# --- Pix2Pix_denoise --hipo ---------------------------------------------------------------------------
def expected_events(path, written, kept_by_model):
    """The events of path as the denoised file must hold them: every byte equal but the order of the
    DC::tdc / DC::tot rows (orders 0x/1x) on a raw hit (DC::tot, orders 0x/1x) the model rejects."""
    out, marked = [], 0
    for (data, tag, positions), banks in zip(event_bytes(path), written, strict=True):
        expected = bytearray(data)
        image = np.zeros((6, 36, 112), bool)
        if "DC::tot" in banks:
            tot = {c: np.asarray(banks["DC::tot"][c]) for c in ch.DC_COLUMNS}
            raw = np.isin(tot["order"] // 10, [0, 1])
            image[tot["sector"][raw] - 1, tot["layer"][raw] - 1, tot["component"][raw] - 1] = True
        rejected = image & ~kept_by_model(image)
        for d in (ch.DC_TDC, ch.DC_TOT):
            if d.name not in banks:
                continue
            s, layer, wire, order = (np.asarray(banks[d.name][c]) for c in ch.DC_COLUMNS)
            for row in np.flatnonzero(rejected[s - 1, layer - 1, wire - 1] & np.isin(order // 10, [0, 1])):
                offset = positions[d.name] + 8 + hipo_writer.make_schema(d).getOffset("order", int(row), len(order))
                assert expected[offset] == order[row]
                expected[offset] = order[row] + (40 if order[row] < 10 else 60)
                marked += 1
        out.append((bytes(expected), tag))
    return out, marked


def test_denoised_hipo_changes_only_the_orders_of_rejected_hits(tmp_path, track_model, capsys):
    rng = np.random.default_rng(21)
    events = [make_event(rng, 5001, 10 + i, [1 + i % 6, 1 + (i + 3) % 6]) for i in range(30)]
    path, written = rewrite_input(tmp_path, events)
    model, _ = trained_model.load_model(track_model)

    def kept_by_model(image):
        return model.probabilities(image) > 0.5

    out = tmp_path / "out.hipo"
    assert Pix2Pix_denoise.main(["--model", str(track_model), "--hipo", str(path), "--output", str(out),
                                 "--batch-size", "5"]) == 0
    expected, marked = expected_events(path, written, kept_by_model)
    got = event_bytes(out)
    assert len(got) == len(expected) == 31  # every event, the one without DC hits too
    for (data, tag, _), (want, want_tag) in zip(got, expected, strict=True):
        assert data == want and tag == want_tag
    assert marked > 100 and f"{marked} DC rows marked" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.hipo", "out.hipo"]


def without_names(report):
    """A report without what names the files and events (paths, event names)."""
    out = {k: v for k, v in report.items() if k not in ("input", "output", "report_files")}
    for key in ("worst_events", "best_events"):
        out[key] = [{k: v for k, v in e.items() if k != "name"} for e in report[key]]
    return out


def test_evaluate_on_hipo_gives_the_scores_of_the_same_events_as_pngs(tmp_path, both, track_model):
    png, hipo = both
    assert Pix2Pix_denoise.main(["--model", str(track_model), "--input-dir", str(png / "raw"), "--output-dir",
                                 str(tmp_path / "den"), "--evaluate", "--truth-dir", str(png / "truth"),
                                 "--batch-size", "7"]) == 0
    out = tmp_path / "denoised.hipo"
    assert Pix2Pix_denoise.main(["--model", str(track_model), "--hipo", str(hipo), "--output", str(out),
                                 "--evaluate", "--batch-size", "4"]) == 0
    from_png = json.loads((tmp_path / "den.report.json").read_text())
    from_hipo = json.loads((tmp_path / "denoised.report.json").read_text())
    # Every number: hit-level and tracking scores (trkID in the HIPO file, the track-id PNGs beside the truth).
    assert without_names(from_hipo) == without_names(from_png)
    assert from_png["methods"]["model"]["scores"]["rejection"] > 0.3  # the model rejects something
    assert from_hipo["track_ids"] == {"with": N, "without": 0}
    sectors = [hipo_writer.hipo_sectors(SEED, i // 2, 2)[i % 2] for i in range(N)]
    for key in ("worst_events", "best_events"):  # the same events, by their names in each route
        for a, b in zip(from_png[key], from_hipo[key], strict=True):
            i = int(a["name"][6:12])
            assert b["name"] == f"ev.hipo:{i // 2}:{sectors[i]}"
    # The denoised file read back: raw hits = the hits the model kept, sector for sector (= the denoised PNGs).
    for i, record in enumerate(ch.read_sector_events(out)):
        np.testing.assert_array_equal(record.raw, ei.hit_mask(ei.read_event_png(tmp_path / f"den/event_{i:06d}.png")))


def test_evaluate_scores_the_sectors_with_tbhits_hits_only(tmp_path, track_model, capsys):
    odd_file(tmp_path / "odd.hipo")
    out = tmp_path / "odd_denoised.hipo"
    assert Pix2Pix_denoise.main(["--model", str(track_model), "--hipo", str(tmp_path / "odd.hipo"), "--output",
                                 str(out), "--evaluate", "--grid-events", "0"]) == 0
    stdout = capsys.readouterr().out
    assert "2 events (1 without DC hits), 4 sectors denoised" in stdout
    assert "2 sectors without TBHits hits not scored" in stdout  # 2, and 4: its TBHits hit is on no raw hit
    report = json.loads((tmp_path / "odd_denoised.report.json").read_text())
    counts = report["methods"]["keep-all"]["counts"]
    assert report["events"] == 2 and counts["track_hits"] == 3 and counts["noise_hits"] == 2  # sectors 1 and 3


def test_a_batch_system_sigterm_stops_denoising_and_leaves_nothing(tmp_path, track_model):
    hipo = tmp_path / "big.hipo"  # seconds of denoising: the signal lands before the end
    proc = run_script("make_events.py", "--format", "hipo", "--output", hipo, "-n", 12000, "--sectors", 6, "--seed", 3)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out.hipo"
    proc = subprocess.Popen([sys.executable, str(ROOT / "Pix2Pix_denoise.py"), "--model", str(track_model),
                             "--hipo", str(hipo), "--output", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(proc, lambda: any(n.startswith(".out.hipo.") for n in leftovers(tmp_path)), "its temporary output")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip() == "interrupted", (proc.returncode, err)
    assert leftovers(tmp_path) == ["big.hipo"]


def test_evaluate_on_a_file_without_tbhits_hits_is_refused_and_leaves_nothing(tmp_path, track_model):
    """A TBHits bank without a hit in it: --evaluate has nothing to score (no report of nan), one line before
    any work; without --evaluate the file is denoised as usual."""
    rng = np.random.default_rng(5)
    hipo = tmp_path / "no_hits.hipo"
    hipo_writer.write_events(hipo, [make_event(rng, 3, 9 + i, [2, 5], truth_sectors=[]) for i in range(3)])
    out = tmp_path / "out.hipo"
    assert_one_line_error(run_script("Pix2Pix_denoise.py", "--model", track_model, "--hipo", hipo, "--output", out,
                                     "--evaluate"),
                          "no_hits.hipo", "no sector with DC hits has TimeBasedTrkg::TBHits hits", "drop --evaluate")
    assert leftovers(tmp_path) == ["no_hits.hipo"]
    assert Pix2Pix_denoise.main(["--model", str(track_model), "--hipo", str(hipo), "--output", str(out)]) == 0
    assert leftovers(tmp_path) == ["no_hits.hipo", "out.hipo"]
    no_dc = tmp_path / "no_dc_hits.hipo"  # the DC bank in the file's dictionary, no hit in any event
    hipo_writer.write_banks(no_dc, [ch.DC_TDC, ch.TBHITS, ch.RUN_CONFIG],
                            [{"RUN::config": {"run": [1], "event": [2 + i]}} for i in range(3)])
    assert_one_line_error(run_script("Pix2Pix_denoise.py", "--model", track_model, "--hipo", no_dc, "--output",
                                     tmp_path / "o.hipo", "--evaluate"),
                          "no_dc_hits.hipo", "no sector has DC hits: nothing to score", "drop --evaluate")
    assert leftovers(tmp_path) == ["no_dc_hits.hipo", "no_hits.hipo", "out.hipo"]


def test_denoise_hipo_bad_inputs_name_the_file_and_leave_nothing(tmp_path, both, track_model):
    png, hipo = both
    good = tmp_path / "good.hipo"
    good.write_bytes(hipo.read_bytes())
    (tmp_path / "notes.hipo").write_text("run 4013\n" * 20)
    (tmp_path / "cut.hipo").write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    (tmp_path / "damaged.hipo").write_bytes(damage_record(good.read_bytes()))
    (tmp_path / "record.hipo").write_bytes(damage_record(good.read_bytes(), 0, 4))  # crashed hipopybind
    hipo_writer.write_banks(tmp_path / "nodc.hipo", [ch.TBHITS, ch.RUN_CONFIG],
                            [{"RUN::config": {"run": [1], "event": [2]}}])
    hipo_writer.write_events(tmp_path / "notruth.hipo", [make_event(np.random.default_rng(1), 3, 9, [2])], truth=False)
    rows = [{"DC::tdc": {"sector": [2], "layer": [5], "component": [9], "order": [0]},
             "RUN::config": {"run": [1], "event": [100 + i]}} for i in range(300)]
    rows[0]["DC::tdc"]["layer"] = [37]
    rows[-1]["DC::tdc"]["sector"] = [0]  # found only while denoising, after the model is loaded
    hipo_writer.write_banks(tmp_path / "rows.hipo", [ch.DC_TDC, ch.RUN_CONFIG], rows)
    hipo_writer.write_banks(tmp_path / "late.hipo", [ch.DC_TDC, ch.RUN_CONFIG], rows[1:])
    model = ["--model", track_model]
    out = tmp_path / "out.hipo"
    cases = [
        (["--hipo", tmp_path / "notes.hipo"], ["notes.hipo", "not a HIPO file"]),
        (["--hipo", tmp_path / "cut.hipo"], ["cut.hipo", "truncated"]),
        (["--hipo", tmp_path / "damaged.hipo"], ["damaged.hipo", "event", "its record is damaged"]),
        (["--hipo", tmp_path / "record.hipo"], ["record.hipo", "not all could be read"]),
        (["--hipo", tmp_path / "nodc.hipo"], ["nodc.hipo", "no DC::tdc or DC::tot"]),
        (["--hipo", tmp_path / "rows.hipo"], ["rows.hipo", "event 100", "layer 37 outside 1-36"]),
        (["--hipo", tmp_path / "late.hipo"], ["late.hipo", "event 399", "sector 0 outside 1-6"]),
        (["--hipo", tmp_path / "notruth.hipo", "--evaluate"], ["notruth.hipo", "no TimeBasedTrkg::TBHits bank"]),
        (["--hipo", good, "--data", tmp_path / "x.h5"], ["exactly one input"]),
        (["--hipo", good, "--input-dir", png / "raw"], ["exactly one input"]),
        (["--hipo", good, "--output-dir", tmp_path / "d"], ["--output-dir"]),
        (["--hipo", good, "--evaluate", "--truth-dir", png / "truth"], ["--truth-dir"]),
    ]
    for args, words in cases:
        assert_one_line_error(run_script("Pix2Pix_denoise.py", *model, *args, "--output", out), *words)
    assert_one_line_error(run_script("Pix2Pix_denoise.py", *model, "--hipo", good, "--output", good, "--overwrite"),
                          "good.hipo", "the output is the input file")
    assert_one_line_error(run_script("Pix2Pix_denoise.py", *model, "--hipo", good, "--output", tmp_path / "den.h5"),
                          "--output", "den.h5", "--hipo writes a HIPO file, named .hipo")
    (tmp_path / "mine.hipo").write_text("keep me")
    assert_one_line_error(run_script("Pix2Pix_denoise.py", *model, "--hipo", good, "--output", tmp_path / "mine.hipo"),
                          "mine.hipo", "already exists")
    assert (tmp_path / "mine.hipo").read_text() == "keep me" and good.read_bytes() == hipo.read_bytes()
    assert leftovers(tmp_path) == sorted(["good.hipo", "notes.hipo", "cut.hipo", "damaged.hipo", "record.hipo",
                                          "nodc.hipo", "notruth.hipo", "rows.hipo", "late.hipo", "mine.hipo"])
