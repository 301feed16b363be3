"""Pix2Pix_data.py: PNG pairs -> HDF5, checked against the source PNGs pixel for pixel.

Test PNGs are made here with numpy + event_image.write_event_png, with random colours, so
that any mix-up of pairs, rows or channels shows.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
from conftest import ROOT, assert_one_line_error, own_tmpdir, run_script
from PIL import Image

import event_image as ei
import pairs_h5
import Pix2Pix_data as p2d
import worker_pools
from script_utils import InputError


# --- Making test data -------------------------------------------------------------------
def random_event(rng, occupancy=0.03):
    """A sparse (36, 112, 3) uint8 event with random colours (not only 0/255)."""
    img = np.zeros((ei.LAYERS, ei.WIRES, ei.CHANNELS), np.uint8)
    lit = rng.random((ei.LAYERS, ei.WIRES)) < occupancy
    img[lit] = rng.integers(1, 256, size=(lit.sum(), 3), dtype=np.uint8)
    return img


def random_event_pair(rng):
    """A raw event and its truth: about a third of the raw hits."""
    raw = random_event(rng)
    return raw, raw * (rng.random(raw.shape[:2]) < 0.3)[..., None].astype(np.uint8)


def write_folders(root, names, seed=0):
    """root/raw/NAME and root/truth/NAME for each name; returns {name: (raw, truth)}."""
    rng = np.random.default_rng(seed)
    (root / "raw").mkdir(parents=True, exist_ok=True)
    (root / "truth").mkdir(parents=True, exist_ok=True)
    events = {}
    for name in names:
        raw, truth = random_event_pair(rng)
        ei.write_event_png(root / "raw" / name, raw)
        ei.write_event_png(root / "truth" / name, truth)
        events[name] = raw, truth
    return events


def write_tagged(folder, pair_names, seed=0):
    """One folder holding (raw_name, truth_name) pairs; returns {raw_name: (truth_name, raw, truth)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    events = {}
    for raw_name, truth_name in pair_names:
        raw, truth = random_event_pair(rng)
        ei.write_event_png(folder / raw_name, raw)
        ei.write_event_png(folder / truth_name, truth)
        events[raw_name] = truth_name, raw, truth
    return events


def event_names(n):
    return [f"event_{i:04d}.png" for i in range(n)]


def convert_cli(raw, truth, output, *args):
    return run_script("Pix2Pix_data.py", "--raw-dir", raw, "--truth-dir", truth, "--output", output, *args)


def leftovers(folder):
    """Every file in folder whose name starts with '.' (temporary files)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


def assert_matches(h5_path, expected):
    """The file holds exactly the expected {name: (raw, truth)} pairs, in sorted name order."""
    with h5py.File(h5_path, "r") as f:
        names = list(f["names"].asstr()[:])
        assert names == sorted(expected)
        raw, truth = f["raw"][:], f["truth"][:]
    assert raw.dtype == np.uint8 and raw.shape == (len(expected), 128, 128, 3) == truth.shape
    np.testing.assert_array_equal(raw, ei.pad_event(np.stack([expected[n][0] for n in names])))
    np.testing.assert_array_equal(truth, ei.pad_event(np.stack([expected[n][1] for n in names])))


# --- Good inputs --------------------------------------------------------------------------
def test_folders_pixel_for_pixel_with_workers(tmp_path):
    names = event_names(70)  # 2 full chunks of 32 and a partial one
    rng = np.random.default_rng(5)
    expected = write_folders(tmp_path / "ev", list(rng.permutation(names)))  # written in shuffled order
    out = tmp_path / "pairs.h5"
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", out, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote 70 pairs to {out}") and "pairs/s" in lines[0]
    raw_hits = np.mean([ei.hit_mask(r).sum() for r, _ in expected.values()])
    assert f"hits per event raw {raw_hits:.1f}" in lines[0]
    assert_matches(out, expected)
    with h5py.File(out, "r") as f:
        for key in ("raw", "truth"):
            assert f[key].chunks == (32, 128, 128, 3) and f[key].compression == "gzip"
        assert json.loads(f.attrs["layout"]) == json.loads(json.dumps(ei.LAYOUT))
        assert f.attrs["source_raw_dir"] == str((tmp_path / "ev/raw").resolve())
        assert f.attrs["source_truth_dir"] == str((tmp_path / "ev/truth").resolve())
        assert f.attrs["pair_layout"] == "folders" and f.attrs["pairs"] == 70
        assert abs(time.time() - np.datetime64(f.attrs["created"][:19]).astype("datetime64[s]").astype(float)) < 600
        assert list(f["truth_names"].asstr()[:]) == sorted(names)
        # Compressed: these images are nearly empty.
        assert f["raw"].id.get_storage_size() < f["raw"].size / 10
        np.testing.assert_array_equal(ei.crop_event(f["raw"][3]), expected[sorted(names)[3]][0])
    assert leftovers(tmp_path) == []


def test_tagged_pairs_by_name_not_by_sort_order(tmp_path):
    # Sorted raw names: m_all_1, m_b_all_2; sorted truth names: m_b_truth_2, m_truth_1.
    # Pairing by sort order would mix these two up.
    pair_names = [("m_all_1.png", "m_truth_1.png"), ("m_b_all_2.png", "m_b_truth_2.png")]
    pair_names += [(f"dc_all_{i}.png", f"dc_truth_{i}.png") for i in range(5)]
    expected = write_tagged(tmp_path / "orig", pair_names)
    out = tmp_path / "tagged.h5"
    proc = run_script("Pix2Pix_data.py", "--layout", "tagged", "--raw-dir", tmp_path / "orig", "--output", out,
                      "--workers", "2", "--chunk-events", "2")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as f:
        names, truth_names = list(f["names"].asstr()[:]), list(f["truth_names"].asstr()[:])
        assert names == sorted(expected)
        assert truth_names == [expected[n][0] for n in names]
        np.testing.assert_array_equal(f["raw"][:], ei.pad_event(np.stack([expected[n][1] for n in names])))
        np.testing.assert_array_equal(f["truth"][:], ei.pad_event(np.stack([expected[n][2] for n in names])))
        assert f.attrs["pair_layout"] == "tagged" and f.attrs["raw_tag"] == "_all_"


def test_convert_function_and_accepted_image_kinds(tmp_path):
    """convert() as the demo imports it; grayscale, palette and opaque RGBA become RGB."""
    expected = write_folders(tmp_path / "ev", event_names(3))
    img = np.zeros((36, 112, 3), np.uint8)
    img[[0, 17, 35], [0, 50, 111]] = 255
    Image.fromarray(img[..., 0], "L").save(tmp_path / "ev/raw/gray.png")
    Image.fromarray(img).convert("P").save(tmp_path / "ev/truth/gray.png")
    Image.fromarray(np.dstack([img, np.full((36, 112), 255, np.uint8)]), "RGBA").save(tmp_path / "ev/raw/rgba.png")
    Image.fromarray(img[..., 0], "L").save(tmp_path / "ev/truth/rgba.png")
    expected["gray.png"] = expected["rgba.png"] = (img, img)
    summary = p2d.convert(tmp_path / "ev/raw", tmp_path / "ev/truth", tmp_path / "out.h5", workers=1)
    assert summary["pairs"] == 5 and summary["skipped"] == 0
    assert_matches(tmp_path / "out.h5", expected)


def test_names_differing_only_in_case_pair_exactly(tmp_path):
    expected = write_folders(tmp_path / "ev", ["a.png", "A.png", "Event.PNG", "b.png"])
    p2d.convert(tmp_path / "ev/raw", tmp_path / "ev/truth", tmp_path / "out.h5", workers=1, chunk_events=2)
    assert_matches(tmp_path / "out.h5", expected)  # a.png and A.png keep their own truth


# --- Bad inputs -----------------------------------------------------------------------------
def spoil(kind, ev):
    """Make one kind of bad input in the folders ev/raw, ev/truth; return (cli args, words)."""
    raw, truth = ev / "raw", ev / "truth"
    bad = raw / "event_0001.png"
    if kind == "wrong size":
        Image.fromarray(np.zeros((36, 100, 3), np.uint8)).save(bad)
        return [], [str(bad), "100x36"]
    if kind == "rotated":
        Image.fromarray(np.zeros((112, 36, 3), np.uint8)).save(bad)
        return [], [str(bad), "36x112"]
    if kind == "not a png":
        bad.write_text("hello")
        return [], [str(bad), "not a readable png"]
    if kind == "jpeg":
        Image.fromarray(np.zeros((36, 112, 3), np.uint8)).save(bad, format="JPEG")
        return [], [str(bad), "not a png"]
    if kind == "truncated":
        bad.write_bytes(bad.read_bytes()[:60])
        return [], [str(bad)]
    if kind == "transparent":
        rgba = np.zeros((36, 112, 4), np.uint8)
        rgba[..., 3] = 255
        rgba[3, 3, 3] = 0
        Image.fromarray(rgba, "RGBA").save(truth / "event_0002.png")
        return [], [str(truth / "event_0002.png"), "transparent"]
    if kind == "16 bit":
        Image.fromarray(np.zeros((36, 112), np.uint16)).save(bad)
        return [], [str(bad), "8 bits"]
    if kind == "unpaired raw":
        ei.write_event_png(raw / "extra.png", np.zeros((36, 112, 3), np.uint8))
        return [], [str(raw / "extra.png"), "no truth file"]
    if kind == "unpaired truth":
        (raw / "event_0002.png").unlink()
        return [], [str(truth / "event_0002.png"), "no raw file"]
    if kind == "case only":
        (truth / "event_0002.png").rename(truth / "EVENT_0002.png")
        return [], [str(raw / "event_0002.png"), "EVENT_0002.png differs only in case"]
    if kind == "empty folder":
        for p in truth.iterdir():
            p.unlink()
        return [], [str(truth), "no .png files"]
    if kind == "missing folder":
        return ["--truth-dir", ev / "nowhere"], [str(ev / "nowhere"), "does not exist"]
    if kind == "same folder":
        return ["--truth-dir", raw], [str(raw), "same"]
    if kind == "untagged names":
        return ["--layout", "tagged", "--truth-dir", raw], [str(raw / "event_0000.png"), "neither tag", "and 37 more"]
    if kind == "tagged with truth dir":
        return ["--layout", "tagged"], [str(truth), "do not give --truth-dir"]
    if kind == "bad shard":
        return ["--shard", "5/4"], ["--shard 5/4"]
    if kind == "bad workers":
        return ["--workers", "0"], ["--workers"]
    if kind == "unknown option":
        return ["--frobnicate"], ["--frobnicate"]
    raise AssertionError(kind)


BAD_KINDS = ["wrong size", "rotated", "not a png", "jpeg", "truncated", "transparent", "16 bit", "unpaired raw",
             "unpaired truth", "case only", "empty folder", "missing folder", "same folder", "untagged names",
             "tagged with truth dir",
             "bad shard", "bad workers", "unknown option"]


def test_options_of_another_layout_or_of_a_copied_merge_are_refused():
    with pytest.raises(InputError, match=r"^--raw-tag, --tracks-tag: for --layout tagged"):
        p2d.parse_args(["--raw-tag", "all", "--tracks-tag", "ids"])
    assert p2d.parse_args(["--layout", "tagged", "--raw-tag", "all"]).raw_tag == "all"
    with pytest.raises(InputError, match=r"^--chunk-events 16: for --merge --copy"):
        p2d.parse_args(["--merge", "a.h5", "b.h5", "--chunk-events", "16"])
    assert p2d.parse_args(["--merge", "a.h5", "b.h5", "--copy", "--chunk-events", "16"]).chunk_events == 16


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_is_one_line_error_and_no_output(tmp_path, kind):
    write_folders(tmp_path / "ev", event_names(40))  # the bad pair sits in the first of 2 chunks
    args, words = spoil(kind, tmp_path / "ev")
    out = tmp_path / "out" / "pairs.h5"
    out.parent.mkdir()
    base = ["--raw-dir", tmp_path / "ev/raw", "--truth-dir", tmp_path / "ev/truth", "--output", out, "--workers", "2"]
    if "--truth-dir" in args:  # replaces the default one
        i = base.index("--truth-dir")
        del base[i:i + 2]
    proc = run_script("Pix2Pix_data.py", *base, *args)
    assert_one_line_error(proc, *words)
    assert list(out.parent.iterdir()) == [], "no output file, no temporary file"


def test_unpaired_tagged_file_and_case_hint(tmp_path):
    write_tagged(tmp_path / "orig", [("x_all_1.png", "x_truth_1.png"), ("x_all_2.png", "X_truth_2.png")])
    ei.write_event_png(tmp_path / "orig/notes_1.png", np.zeros((36, 112, 3), np.uint8))
    proc = run_script("Pix2Pix_data.py", "--layout", "tagged", "--raw-dir", tmp_path / "orig",
                      "--output", tmp_path / "o.h5")
    assert_one_line_error(proc, "notes_1.png: name carries neither tag", "x_all_2.png", "X_truth_2.png differs only "
                          "in case")
    assert not (tmp_path / "o.h5").exists()


def test_tags_written_unlike_are_named_and_tags_written_alike_pair_the_track_ids(tmp_path):
    """--raw-tag all with the default --tracks-tag _tracks_ finds no dc__tracks__N.png: one line that says so."""
    proc = run_script("make_events.py", "-n", 4, "--layout", "tagged", "--output", tmp_path / "ev")
    assert proc.returncode == 0, proc.stderr
    tags = ["--layout", "tagged", "--raw-dir", tmp_path / "ev", "--raw-tag", "all", "--truth-tag", "truth"]
    proc = run_script("Pix2Pix_data.py", *tags, "--output", tmp_path / "o.h5")
    assert_one_line_error(proc, "none of its 4 track-id files", "dc__tracks__000000.png", "--tracks-tag")
    assert not (tmp_path / "o.h5").exists()
    proc = run_script("Pix2Pix_data.py", *tags, "--tracks-tag", "tracks", "--output", tmp_path / "o.h5")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(tmp_path / "o.h5", "r") as f:
        np.testing.assert_array_equal(f["track_ids"][3], ei.read_track_ids_png(tmp_path / "ev/dc_tracks_000003.png"))


def test_existing_output_is_kept_without_overwrite_and_replaced_with_it(tmp_path):
    expected = write_folders(tmp_path / "ev", event_names(5))
    out = tmp_path / "pairs.h5"
    out.write_bytes(b"precious")
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", out)
    assert_one_line_error(proc, str(out), "already exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert_matches(out, expected)
    assert leftovers(tmp_path) == []


def test_a_bad_image_with_overwrite_keeps_the_old_output(tmp_path):
    write_folders(tmp_path / "ev", event_names(5))
    out = tmp_path / "pairs.h5"
    out.write_bytes(b"precious")
    (tmp_path / "ev/raw/event_0003.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match="event_0003.png"):
        p2d.convert(tmp_path / "ev/raw", tmp_path / "ev/truth", out, overwrite=True, workers=1)
    assert out.read_bytes() == b"precious" and leftovers(tmp_path) == []


def test_skip_bad_leaves_bad_pairs_out_and_lists_them(tmp_path):
    names = event_names(13)
    expected = write_folders(tmp_path / "ev", names)
    (tmp_path / "ev/raw/event_0005.png").write_text("not an image")  # mid-chunk: later chunks shift
    Image.fromarray(np.zeros((36, 100, 3), np.uint8)).save(tmp_path / "ev/truth/event_0011.png")
    ei.write_event_png(tmp_path / "ev/truth/lonely.png", np.zeros((36, 112, 3), np.uint8))
    for name in ("event_0005.png", "event_0011.png"):
        del expected[name]
    out = tmp_path / "pairs.h5"
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", out, "--skip-bad", "--chunk-events", "4",
                       "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "warning: left out 3" in proc.stderr and "wrote 11 pairs" in proc.stdout and "3 skipped" in proc.stdout
    assert_matches(out, expected)
    listed = (tmp_path / "pairs.h5.skipped.txt").read_text().splitlines()
    assert listed[0].startswith("# 3 ")
    assert [line.split("\t")[0] for line in listed[1:]] == [str(tmp_path / "ev/truth/lonely.png"), "event_0005.png",
                                                            "event_0011.png"]
    assert "not a readable PNG" in listed[2] and "100x36" in listed[3]
    with h5py.File(out, "r") as f:
        assert f.attrs["skipped"] == 3 and f["raw"].chunks == (4, 128, 128, 3)
    # A second run refuses to replace the list as well as the file without --overwrite.
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", tmp_path / "other.h5", "--skip-bad")
    assert proc.returncode == 0
    (tmp_path / "other.h5").unlink()
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", tmp_path / "other.h5", "--skip-bad")
    assert_one_line_error(proc, "other.h5.skipped.txt", "already exists")
    # The bad files taken out, the pairs made again without --skip-bad: with --overwrite the old list goes with
    # the old output; without it (other.h5 was deleted, its list not) the list stays, and a warning says so.
    for name in ("raw/event_0005.png", "truth/event_0005.png", "raw/event_0011.png", "truth/event_0011.png",
                 "truth/lonely.png"):
        (tmp_path / "ev" / name).unlink()
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", out, "--overwrite")
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    assert not (tmp_path / "pairs.h5.skipped.txt").exists()
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", tmp_path / "other.h5")
    assert proc.returncode == 0 and "other.h5.skipped.txt: left by an earlier run with --skip-bad" in proc.stderr
    assert (tmp_path / "other.h5.skipped.txt").exists()


def test_skip_bad_with_nothing_good_is_an_error(tmp_path):
    write_folders(tmp_path / "ev", event_names(2))
    for p in (tmp_path / "ev/raw").iterdir():
        p.write_text("x")
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", tmp_path / "o.h5", "--skip-bad")
    assert_one_line_error(proc, "no good pairs")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.h5").exists()
    assert not (tmp_path / "o.h5.skipped.txt").exists()


def test_swapped_folders_are_warned_about(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "raw").mkdir()
    (tmp_path / "truth").mkdir()
    raw = random_event(rng)
    truth = raw.copy()
    truth[:, 50:] = 0  # truth is a subset of raw
    ei.write_event_png(tmp_path / "raw/a.png", truth)  # ... but the folders are swapped
    ei.write_event_png(tmp_path / "truth/a.png", raw)
    proc = convert_cli(tmp_path / "raw", tmp_path / "truth", tmp_path / "o.h5")
    assert proc.returncode == 0 and "swapped" in proc.stderr



def test_track_ids_of_other_events_are_warned_about(tmp_path):
    """A `tracks` folder left from another make_events run beside new raw and truth folders: warned, one line."""
    for out, seed in (("ev", 1), ("old", 2)):
        assert run_script("make_events.py", "--output", tmp_path / out, "-n", 4, "--seed", seed).returncode == 0
    shutil.rmtree(tmp_path / "ev/tracks")
    shutil.copytree(tmp_path / "old/tracks", tmp_path / "ev/tracks")
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", tmp_path / "q.h5", "--workers", 1)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("warning: 4 pair(s) have truth hits without a track id"), lines[0]
    assert "are the track ids of these events?" in lines[0]


def test_no_truth_hits_at_all_is_warned_about(tmp_path):
    proc = run_script("make_events.py", "--output", tmp_path / "ev", "-n", 4, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/tracks", tmp_path / "q.h5", "--workers", 1)  # track ids
    assert proc.returncode == 0 and "truth 0.0" in proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: no truth hits in any of the 4 pairs"), proc.stderr
    assert "ev/tracks" in lines[0] and "0/1 masks" in lines[0] and (tmp_path / "q.h5").exists()
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", tmp_path / "good.h5", "--workers", 1)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr

# --- Shards and merging ---------------------------------------------------------------------------
def test_shards_merge_into_the_unsharded_file(tmp_path):
    names = event_names(45)
    write_folders(tmp_path / "ev", names)
    raw, truth = tmp_path / "ev/raw", tmp_path / "ev/truth"
    p2d.convert(raw, truth, tmp_path / "whole.h5", workers=1, chunk_events=8)
    parts = []
    for k in (3, 1, 2):  # farm jobs finish in any order
        part = tmp_path / "parts" / f"part{k}.h5"
        part.parent.mkdir(exist_ok=True)
        p2d.convert(raw, truth, part, workers=1, chunk_events=8, shard=f"{k}/3")
        parts.append(part)
    with h5py.File(parts[1], "r") as f:  # shard 1/3 of 45 pairs: pairs 0..14
        assert (f.attrs["shard_index"], f.attrs["shard_count"], f.attrs["total_pairs"]) == (1, 3, 45)
        assert list(f["names"].asstr()[:]) == names[:15]
    merged_virtual, merged_copy = tmp_path / "virtual.h5", tmp_path / "copy.h5"
    proc = run_script("Pix2Pix_data.py", "--merge", *parts, "--output", merged_virtual)
    assert proc.returncode == 0 and "merged 3 parts, 45 pairs" in proc.stdout, proc.stderr
    proc = run_script("Pix2Pix_data.py", "--merge", *parts, "--output", merged_copy, "--copy")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(tmp_path / "whole.h5", "r") as f:
        whole = {key: f[key][:] for key in ("raw", "truth", "names", "truth_names")}
    for merged, virtual in ((merged_virtual, True), (merged_copy, False)):
        # Read from another working directory: the virtual file finds its parts beside it.
        code = (f"import h5py, numpy as np; f = h5py.File({str(merged)!r}, 'r'); "
                f"np.savez({str(tmp_path / 'read.npz')!r}, **{{k: f[k][:] for k in ('raw', 'truth')}}); "
                "print(f['raw'].is_virtual, f.attrs['shard_count'], f.attrs['pairs'])")
        proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
        assert proc.stdout.split() == [str(virtual), "1", "45"], proc.stderr
        read = np.load(tmp_path / "read.npz")
        for key in ("raw", "truth"):
            np.testing.assert_array_equal(read[key], whole[key])
        with h5py.File(merged, "r") as f:
            np.testing.assert_array_equal(f["names"][:], whole["names"])
            np.testing.assert_array_equal(f["truth_names"][:], whole["truth_names"])
            assert f.attrs["layout"] == json.dumps(ei.LAYOUT)


def test_missing_overlapping_and_foreign_shards_are_named(tmp_path):
    write_folders(tmp_path / "ev", event_names(12))
    raw, truth = tmp_path / "ev/raw", tmp_path / "ev/truth"
    parts = {k: tmp_path / f"p{k}.h5" for k in (1, 2, 3)}
    for k, part in parts.items():
        p2d.convert(raw, truth, part, workers=1, shard=(k, 3))
    out = tmp_path / "m.h5"
    proc = run_script("Pix2Pix_data.py", "--merge", parts[1], parts[3], "--output", out)
    assert_one_line_error(proc, "missing shard", "2/3")
    p2d.convert(raw, truth, tmp_path / "again2.h5", workers=1, shard="2/3")
    proc = run_script("Pix2Pix_data.py", "--merge", *parts.values(), tmp_path / "again2.h5", "--output", out)
    assert_one_line_error(proc, "overlapping", str(parts[2]), str(tmp_path / "again2.h5"))
    write_folders(tmp_path / "other", event_names(11))
    p2d.convert(tmp_path / "other/raw", tmp_path / "other/truth", tmp_path / "foreign.h5", workers=1, shard="2/3")
    proc = run_script("Pix2Pix_data.py", "--merge", parts[1], tmp_path / "foreign.h5", parts[3], "--output", out)
    assert_one_line_error(proc, "foreign.h5", "not a part of the same conversion")
    write_folders(tmp_path / "ev2", event_names(12), seed=1)  # another set under the same names (as make_events')
    p2d.convert(tmp_path / "ev2/raw", tmp_path / "ev2/truth", tmp_path / "same_names.h5", workers=1, shard="2/3")
    proc = run_script("Pix2Pix_data.py", "--merge", parts[1], tmp_path / "same_names.h5", parts[3], "--output", out)
    assert_one_line_error(proc, "same_names.h5", "not a part of the same conversion", "source_raw_dir",
                          str(tmp_path / "ev2/raw"))
    (tmp_path / "junk.h5").write_text("junk")
    proc = run_script("Pix2Pix_data.py", "--merge", parts[1], tmp_path / "junk.h5", "--output", out)
    assert_one_line_error(proc, "junk.h5", "not a readable HDF5")
    proc = run_script("Pix2Pix_data.py", "--merge", parts[1], tmp_path / "ev", "--output", out)  # (h5py's is two lines)
    assert_one_line_error(proc, "ev", "not a readable HDF5")
    assert not out.exists() and [n for n in leftovers(tmp_path) if n.startswith(".m.h5")] == []


def test_more_shards_than_pairs_gives_empty_parts_that_still_merge(tmp_path):
    expected = write_folders(tmp_path / "ev", event_names(2))
    parts = [tmp_path / f"p{k}.h5" for k in (1, 2, 3)]
    for k, part in enumerate(parts, 1):
        p2d.convert(tmp_path / "ev/raw", tmp_path / "ev/truth", part, workers=1, shard=(k, 3))
    assert pairs_h5.read_part(parts[0])["n"] == 0
    pairs_h5.merge(parts, tmp_path / "m.h5", copy=True)
    assert_matches(tmp_path / "m.h5", expected)


# --- Killed at a random moment ------------------------------------------------------------------------
def file_digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_moment(tmp_path, seed):
    """SIGKILL to the main process only: no half file under the target name, the old output
    intact, its workers gone, and a rerun succeeds (leftover temp files: hidden, ignored)."""
    expected = write_folders(tmp_path / "ev", event_names(600), seed=seed)
    out = tmp_path / "pairs.h5"
    previous = seed % 2 == 0
    if previous:
        p2d.convert(tmp_path / "ev/raw", tmp_path / "ev/truth", out, workers=1, chunk_events=4)
        old = file_digest(out)
    cmd = [sys.executable, str(ROOT / "Pix2Pix_data.py"), "--raw-dir", tmp_path / "ev/raw", "--truth-dir",
           tmp_path / "ev/truth", "--output", out, "--workers", "2", "--overwrite", "--chunk-events", "8"]
    rng = np.random.default_rng(seed)
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=own_tmpdir(tmp_path))  # the workers' results folder, which a SIGKILL leaves
    main = psutil.Process(proc.pid)
    if seed == 3:  # early: while the script starts (seed 3 draws 0.09 s)
        time.sleep(rng.uniform(0.0, 1.0))
    else:  # while writing: once the temporary file is there
        deadline = time.time() + 30
        while not any(n.endswith(".tmp") for n in leftovers(tmp_path)) and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.2))
    children = main.children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "workers must exit when the main process is killed"
    if out.exists():  # the old file, or a finished new one: never half of one
        if not previous or file_digest(out) != old:
            assert_matches(out, expected)
    else:
        assert not previous
    stale = leftovers(tmp_path)
    print(f"killed {'over an old file' if previous else ''}: target {'there' if out.exists() else 'absent'}, "
          f"temporary files left {stale}")
    temporaries = [n for n in stale if not n.startswith(".write-test.")]  # that one: the folder check's, empty
    assert all(n.startswith(".pairs.h5.") and n.endswith(".tmp") for n in temporaries), stale
    rerun = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", out, "--overwrite", "--workers", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert_matches(out, expected)
    assert leftovers(tmp_path) == stale  # ignored, not reused
    if temporaries:
        assert "left by interrupted runs; ignored" in rerun.stderr


def test_sigterm_stops_cleanly(tmp_path):
    """A batch system's SIGTERM: exit 130, no output, no temporary file, no worker left."""
    write_folders(tmp_path / "ev", event_names(2400))  # seconds of writing: the signal lands before the end
    out = tmp_path / "pairs.h5"
    cmd = [sys.executable, str(ROOT / "Pix2Pix_data.py"), "--raw-dir", tmp_path / "ev/raw", "--truth-dir",
           tmp_path / "ev/truth", "--output", out, "--workers", "2", "--chunk-events", "8"]
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not any(n.endswith(".tmp") for n in leftovers(tmp_path)) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.005)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0, "the run finished before SIGTERM arrived: give it more events"
    assert proc.returncode == 130 and stderr.strip() == "interrupted", stderr
    assert not out.exists() and leftovers(tmp_path) == []
    assert psutil.wait_procs(children, timeout=10)[1] == []


WRITE_SYSCALL = {"x86_64": "1", "aarch64": "64"}  # write(2)'s number, as /proc/PID/task/TID/syscall shows it


def big_result_then_killed(task):
    """A pool task returning 64 MB whose process is SIGKILLed while its main thread waits inside a write of 1 MB or
    more: a result on its way to the main process through a pipe that is full (what a SIGTERM to the whole process
    group can do). A write that does not wait (to a file) is not seen, and the process lives on."""
    import platform
    import threading

    def writing_the_result():
        call = Path(f"/proc/self/task/{os.getpid()}/syscall").read_text().split()
        return call[0] == WRITE_SYSCALL[platform.machine()] and int(call[3], 16) >= 2**20

    def kill_once_writing():
        while not writing_the_result():
            time.sleep(0.0002)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=kill_once_writing, daemon=True).start()
    return np.ones(2**26, np.uint8)


DEATH_WHILE_HANDING_OVER = """
import sys
sys.path[:0] = sys.argv[1:3]
import test_pix2pix_data
import worker_pools
from script_utils import InputError

try:
    with worker_pools.worker_pool(2) as pool:
        results = list(worker_pools.ordered_results(pool, test_pix2pix_data.big_result_then_killed, [0], 1))
    print("got", results[0].sum())
except InputError as e:
    print(e)
"""


def test_a_worker_that_dies_while_handing_over_its_result_stops_the_run_in_one_line(tmp_path):
    """A result sent through the pool's pipe and cut short by the worker's death hung the pool's reader for good
    (Pix2Pix_data hung in 2 of 8 SIGTERMs to the whole process group; here it always does): results come in files,
    and the run ends, with its result or with the death in one line."""
    proc = subprocess.run([sys.executable, "-c", DEATH_WHILE_HANDING_OVER, str(ROOT), str(ROOT / "tests")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.stdout.strip() in (f"got {2**26}", worker_pools.WORKER_DIED), (proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]


# --- Outputs that alias inputs, folders where files go, empty paths, two runs at once (issue 15) -------------
def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["a raw PNG", "a truth PNG", "inside the raw folder", "a link to a raw PNG",
                                   "the raw folder", "a folder above the inputs", "skipped list is the raw folder"])
def test_an_output_that_is_or_is_inside_an_input_is_refused_with_overwrite(tmp_path, where):
    """The reported case: --output one of its own input PNGs, with --overwrite, destroyed that PNG (exit 0)."""
    write_folders(tmp_path / "ev", event_names(4))
    (tmp_path / "link.h5").symlink_to(tmp_path / "ev/raw/event_0001.png")
    output, words = {
        "a raw PNG": (tmp_path / "ev/raw/event_0001.png", ["event_0001.png", "inside the input"]),
        "a truth PNG": (tmp_path / "ev/truth/event_0002.png", ["event_0002.png", "input"]),
        "inside the raw folder": (tmp_path / "ev/raw/pairs.h5", ["pairs.h5", "inside the input"]),
        "a link to a raw PNG": (tmp_path / "link.h5", ["link.h5", "input"]),
        "the raw folder": (tmp_path / "ev/raw", ["raw", "input"]),
        "a folder above the inputs": (tmp_path / "ev", ["holds the input"]),
        "skipped list is the raw folder": (tmp_path / "ev/p.h5", ["p.h5.skipped.txt", "is the input folder"]),
    }[where]
    raw = tmp_path / "ev/raw"
    if where == "skipped list is the raw folder":  # OUTPUT itself is fine, OUTPUT.skipped.txt is not
        raw = raw.rename(tmp_path / "ev/p.h5.skipped.txt")
    before = tree_bytes(tmp_path)
    extra = ["--skip-bad"] if "skipped" in where else []
    proc = convert_cli(raw, tmp_path / "ev/truth", output, "--overwrite", *extra)
    assert_one_line_error(proc, *words)
    assert tree_bytes(tmp_path) == before, "an input was changed"


@pytest.mark.parametrize("which", ["output", "skipped list"])
def test_overwrite_onto_a_folder_is_one_line_and_writes_nothing(tmp_path, which):
    write_folders(tmp_path / "ev", event_names(3))
    out = tmp_path / "pairs.h5"
    (tmp_path / ("pairs.h5" if which == "output" else "pairs.h5.skipped.txt")).mkdir()
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", out, "--overwrite", "--skip-bad")
    assert_one_line_error(proc, "is a folder")
    assert leftovers(tmp_path) == [] and (which == "output" or not out.exists())


def test_an_empty_output_path_is_one_line(tmp_path):
    write_folders(tmp_path / "ev", event_names(2))
    assert_one_line_error(convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", "", "--overwrite"), "empty")
    assert_one_line_error(run_script("Pix2Pix_data.py", "--merge", tmp_path / "a.h5", "--output", " "), "empty")
    with pytest.raises(InputError, match="empty"):
        p2d.convert(tmp_path / "ev/raw", tmp_path / "ev/truth", "", overwrite=True, workers=1)


def test_broken_symlinks_among_the_pngs_are_named_in_a_warning(tmp_path):
    expected = write_folders(tmp_path / "ev", event_names(3))
    (tmp_path / "ev/raw/gone.png").symlink_to(tmp_path / "nowhere.png")
    proc = convert_cli(tmp_path / "ev/raw", tmp_path / "ev/truth", tmp_path / "p.h5")
    assert proc.returncode == 0, proc.stderr
    assert "broken symbolic link" in proc.stderr and "gone.png" in proc.stderr
    assert_matches(tmp_path / "p.h5", expected)


def wait_for(condition, proc, what, timeout=120):
    """Poll until condition() (a file appeared); fail if proc ended first or time ran out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.002)


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_runs_writing_the_same_output_at_once(tmp_path, overwrite):
    """Run A starts writing, is held (SIGSTOP) while run B writes the same output and finishes, then goes on.

    Without --overwrite A must not replace B's finished file: one line, exit 2, B's file intact, A's temporary
    removed. With --overwrite both were told to replace it: A's file wins, complete."""
    expected = write_folders(tmp_path / "ev", event_names(1200))  # A writes for a second or more before it is held
    out = tmp_path / "pairs.h5"
    args = ["--raw-dir", tmp_path / "ev/raw", "--truth-dir", tmp_path / "ev/truth", "--output", out,
            "--workers", "1", "--chunk-events", "1", *(["--overwrite"] if overwrite else [])]
    a = subprocess.Popen([sys.executable, str(ROOT / "Pix2Pix_data.py"), *map(str, args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(n.endswith(".tmp") for n in leftovers(tmp_path)), a, "A's temporary file")
        a.send_signal(signal.SIGSTOP)
        assert not out.exists(), "A finished before it was held: give it more events"
        b = run_script("Pix2Pix_data.py", *args)
        assert b.returncode == 0, b.stderr
        b_file = file_digest(out)
    finally:
        a.send_signal(signal.SIGCONT)
    _, a_err = a.communicate(timeout=300)
    if overwrite:
        assert a.returncode == 0, a_err
        assert_matches(out, expected)
    else:
        lines = [line for line in a_err.splitlines() if line.strip()]
        assert a.returncode == 2 and len(lines) == 1 and "Traceback" not in a_err, a_err
        assert "pairs.h5" in lines[0] and "another run" in lines[0], lines
        assert file_digest(out) == b_file
        assert_matches(out, expected)
    assert leftovers(tmp_path) == []
