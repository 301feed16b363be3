"""The synthetic event generator: its statistics, determinism, luminosity scaling and its CLI."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error
from PIL import Image

import event_image as ei
import make_events as me
from script_utils import InputError

N = 300  # events for the statistical tests (a fraction of a second)


@pytest.fixture(scope="module")
def events():
    """Hit masks (raw, truth) of N events of seed 11 at luminosity 1."""
    raw, truth = me.generate_events(N, seed=11)
    return ei.hit_mask(raw), ei.hit_mask(truth)


def draws(n, seed):
    """The named uniform draws of events 0..n-1, as generate_events makes them."""
    u = np.stack([np.random.default_rng([seed, i]).random(me.N_DRAWS, dtype=np.float32) for i in range(n)])
    return me.split_draws(u)


def test_event_format():
    raw, truth = me.generate_event(np.random.default_rng(5))
    for img in (raw, truth):
        assert img.shape == (36, 112, 3) and img.dtype == np.uint8
        assert set(np.unique(img)) <= {0, ei.HIT_VALUE}
        assert (img == img[..., :1]).all()  # every channel the same
    assert ei.hit_mask(truth).sum() > 20 and ei.hit_mask(raw).sum() > ei.hit_mask(truth).sum()


def test_truth_is_exactly_the_track_hits_in_raw(events):
    raw, truth = events
    assert not (truth & ~raw).any()
    # At luminosity 0 there is no background: raw is truth.
    raw0, truth0 = me.generate_events(50, seed=11, luminosity=0)
    np.testing.assert_array_equal(raw0, truth0)
    np.testing.assert_array_equal(truth0, me.generate_events(50, seed=11)[1])


def test_tracks_cross_all_superlayers_in_images(events):
    _, truth = events
    per_superlayer = truth.reshape(N, 6, 6, 112).any(axis=(2, 3))
    assert per_superlayer.all()  # every event has track hits in all 6 superlayers
    assert truth.any(axis=2).sum(axis=1).min() >= 30  # and in nearly all 36 layers


def test_track_geometry():
    d = draws(N, seed=3)
    wire, fired, second, second_fired = me.track_paths(d)
    active = fired.any(axis=-1)  # (E, T)
    n_tracks = active.sum(axis=1)
    assert set(n_tracks) == {1, 2, 3}
    assert 0.4 < (n_tracks == 1).mean() < 0.6 and 0.08 < (n_tracks == 3).mean() < 0.22
    w = wire[active]  # (tracks, 36)
    assert w.min() >= 0 and w.max() <= 111
    # Every track fires in every superlayer, with a few percent inefficiency per layer.
    f = fired[active]
    assert f.reshape(-1, 6, 6).any(axis=2).all()
    assert 0.01 < 1 - f.mean() < 0.06
    # Within a superlayer the staggered wire steps by 0 or 1 (zig-zag); the stereo jump between
    # the two superlayers of a region is small.
    steps = np.diff(w.reshape(-1, 6, 6), axis=2)
    assert np.abs(steps).max() <= 1 and (steps == 0).any() and (np.abs(steps) == 1).any()
    jumps = np.abs(w[:, 6::12] - w[:, 5::12])
    assert jumps.max() <= 4 and (jumps > 1).any()
    # A smooth curve: the mean slope changes little between the regions (small curvature),
    # and some tracks bend visibly.
    slope = np.stack([(w[:, 12 * r + 11] - w[:, 12 * r]) / 11 for r in range(3)], axis=1)
    assert np.abs(slope).max() < 0.7 and np.abs(np.diff(slope, axis=1)).max() < 0.6
    assert (np.abs(slope[:, 2] - slope[:, 0]) > 0.2).any()
    # Sometimes the adjacent wire fires too.
    double = second_fired[active].sum() / f.sum()
    assert 0.03 < double < 0.1
    assert (np.abs(second - wire)[second_fired] == 1).all()


def test_background_occupancy_highest_in_region_one(events):
    raw, truth = events
    background = raw & ~truth
    occupancy = background.mean()
    assert 0.005 < occupancy < 0.04
    by_region = [background[:, 12 * r:12 * r + 12].mean() for r in range(3)]
    assert by_region[0] > by_region[1] > by_region[2] > 0.005
    assert by_region[0] > 2 * by_region[2]  # region 1, nearest the target, is the noisiest
    assert by_region[0] < 0.04


def test_background_segments_and_crosstalk_shapes():
    d = draws(N, seed=4)
    layer, wire, lit = me.background_segments(d, 1.0)
    segments = lit.any(axis=-1)
    assert 0.8 < segments.sum() / N < 2.2  # about 1.5 per event
    sl = np.where(lit, layer // 6, -1)
    for s, w, ll in zip(sl[segments], wire[segments], lit[segments], strict=True):
        assert len(set(s[ll])) == 1  # one superlayer
        assert 1 <= ll.sum() <= 6 and w[ll].min() >= 0 and w[ll].max() <= 111
    assert max(ll.sum() for ll in lit[segments]) >= 3

    layer, wire, lit = me.crosstalk_runs(d, 1.0)
    runs = lit.any(axis=-1)
    assert 1.4 < runs.sum() / N < 2.6  # about 2 per event
    lengths = lit[runs].sum(axis=-1)
    assert set(lengths) == {2, 3, 4}
    for w, ll, lay in zip(wire[runs], lit[runs], layer[runs], strict=True):
        assert (np.diff(w[ll]) == 1).all() and len(set(lay[ll])) == 1  # adjacent wires, one layer


def test_deterministic_and_sliceable(monkeypatch):
    whole = me.generate_events(40, seed=7)
    again = me.generate_events(40, seed=7)
    for a, b in zip(whole, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = me.generate_events(40, seed=8)
    assert not np.array_equal(whole[0], other[0])
    part = me.generate_events(10, seed=7, start=25)
    for a, b in zip(whole, part, strict=True):
        np.testing.assert_array_equal(a[25:35], b)
    one = me.generate_event(np.random.default_rng([7, 31]))
    for a, b in zip(whole, one, strict=True):
        np.testing.assert_array_equal(a[31], b)
    # Chunk boundaries inside generate_events change nothing.
    monkeypatch.setattr(me, "CHUNK_EVENTS", 7)
    for a, b in zip(whole, me.generate_events(40, seed=7), strict=True):
        np.testing.assert_array_equal(a, b)


def test_track_ids_number_the_truth_hits_and_change_nothing_else():
    raw, truth = me.generate_events(200, seed=4, luminosity=2)
    raw_i, truth_i, ids = me.generate_events(200, seed=4, luminosity=2, track_ids=True)
    np.testing.assert_array_equal(raw, raw_i)  # the default path is bit-identical
    np.testing.assert_array_equal(truth, truth_i)
    assert ids.dtype == np.uint8 and ids.shape == (200, 36, 112)
    np.testing.assert_array_equal(ids > 0, ei.hit_mask(truth))  # every truth hit has a track, nothing else
    n_tracks = ids.max(axis=(1, 2))
    assert set(n_tracks) == {1, 2, 3}
    for i in range(200):  # numbered 1..k, each track seen in most layers (a shared wire shows the higher number)
        assert set(np.unique(ids[i])) == set(range(n_tracks[i] + 1))
        for k in range(1, n_tracks[i] + 1):
            assert (ids[i] == k).any(axis=1).sum() >= 20


def test_luminosity_scales_the_background_only():
    n = 200
    raw1, truth1 = (ei.hit_mask(a) for a in me.generate_events(n, seed=2, luminosity=1))
    raw2, truth2 = (ei.hit_mask(a) for a in me.generate_events(n, seed=2, luminosity=2))
    raw4, _ = (ei.hit_mask(a) for a in me.generate_events(n, seed=2, luminosity=4))
    np.testing.assert_array_equal(truth1, truth2)  # the same tracks
    bg1, bg2 = raw1 & ~truth1, raw2 & ~truth2
    assert not (bg1 & ~raw2).any()  # the lower luminosity's background is part of the higher's
    assert 1.8 < bg2.sum() / bg1.sum() < 2.2
    assert 3.4 < (raw4 & ~truth1).sum() / bg1.sum() < 4.4
    with pytest.raises(InputError):
        me.generate_event(np.random.default_rng(0), luminosity=-1)
    with pytest.raises(InputError):
        me.generate_events(3, luminosity=me.MAX_LUMINOSITY + 1)


def test_event_names():
    assert me.event_name(123) == "event_000123.png"
    assert me.event_name(1234567) == "event_1234567.png"
    assert me.tagged_names(42) == ("dc_all_000042.png", "dc_truth_000042.png")


def test_cli_folders_layout_with_preview(script, tmp_path):
    out = tmp_path / "synth"
    proc = script("make_events.py", "--out", out, "-n", 13, "--seed", 5, "--workers", 2, "--preview")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "13 pairs" in lines[0] and "occupancy" in lines[0]
    names = sorted(p.name for p in (out / "raw").iterdir())
    assert names == [me.event_name(i) for i in range(13)]
    assert sorted(p.name for p in (out / "truth").iterdir()) == names
    assert sorted(p.name for p in (out / "tracks").iterdir()) == names
    raw, truth, ids = me.generate_events(13, seed=5, track_ids=True)
    for i in (0, 7, 12):
        np.testing.assert_array_equal(ei.read_event_png(out / "raw" / me.event_name(i)), raw[i])
        np.testing.assert_array_equal(ei.read_event_png(out / "truth" / me.event_name(i)), truth[i])
        np.testing.assert_array_equal(ei.read_track_ids_png(out / "tracks" / me.event_name(i)), ids[i])
    with Image.open(out / "preview.png") as im:
        assert im.format == "PNG" and im.size[0] >= 4 * 112 and im.size[1] >= 6 * 36 * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no temporary folder left


def test_cli_tagged_layout_and_overwrite(script, tmp_path):
    out = tmp_path / "tagged"
    out.mkdir()
    (out / "old.txt").write_text("the user's file")
    proc = script("make_events.py", "--out", out, "-n", 4, "--layout", "tagged", "--workers", 1,
                  "--luminosity", 2)
    assert_one_line_error(proc, str(out), "not empty")
    assert (out / "old.txt").exists() and len(list(out.iterdir())) == 1

    preview = tmp_path / "look.png"
    proc = script("make_events.py", "--out", out, "-n", 4, "--layout", "tagged", "--workers", 1,
                  "--luminosity", 2, "--overwrite", "--preview", preview)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(sum(([*me.tagged_names(i), f"dc_tracks_{i:06d}.png"] for i in range(4)), []))
    raw, truth, ids = me.generate_events(4, seed=0, luminosity=2, track_ids=True)
    np.testing.assert_array_equal(ei.read_event_png(out / "dc_all_000003.png"), raw[3])
    np.testing.assert_array_equal(ei.read_event_png(out / "dc_truth_000003.png"), truth[3])
    np.testing.assert_array_equal(ei.read_track_ids_png(out / "dc_tracks_000003.png"), ids[3])
    assert preview.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["look.png", "tagged"]


@pytest.mark.parametrize("args, words", [
    (["-n", "0"], ["-n 0", "at least one"]),
    (["--luminosity", "-1"], ["luminosity", "negative"]),
    (["--seed", "-3"], ["seed", "negative"]),
    (["--workers", "0"], ["workers"]),
    (["--preview", "look.jpg"], ["look.jpg", ".png"]),
])
def test_cli_bad_settings(script, tmp_path, args, words):
    args = [str(tmp_path / a) if a.endswith(".jpg") else a for a in args]
    proc = script("make_events.py", "--out", tmp_path / "x", *args)
    assert_one_line_error(proc, *words)
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_output_places(script, tmp_path):
    proc = script("make_events.py", "--out", tmp_path / "missing" / "x", "-n", 2)
    assert_one_line_error(proc, "missing", "does not exist")
    (tmp_path / "file").write_text("")
    proc = script("make_events.py", "--out", tmp_path / "file", "-n", 2, "--overwrite")
    assert_one_line_error(proc, "file", "not a folder")
    (tmp_path / "look.png").write_text("mine")
    proc = script("make_events.py", "--out", tmp_path / "x", "-n", 2, "--preview", tmp_path / "look.png")
    assert_one_line_error(proc, "look.png", "already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "look.png"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "batch-system-sigterm"])
def test_cli_interrupted_run_leaves_nothing(tmp_path, stop):
    out = tmp_path / "big"
    proc = subprocess.Popen([sys.executable, str(ROOT / "make_events.py"), "--out", str(out), "-n", "200000",
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".big.") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(1.0)  # let it write some files
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted", err  # one line, no traceback
    assert list(tmp_path.iterdir()) == []  # no DIR, no half-filled temporary folder


def test_tagged_layout_keeps_its_default_preview_out_of_the_event_folder(script, tmp_path):
    out = tmp_path / "tagged"
    proc = script("make_events.py", "--out", out, "-n", 4, "--layout", "tagged", "--preview")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tagged_preview.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"dc_{tag}_{i:06d}.png" for i in range(4) for tag in ("all", "truth", "tracks")])
    proc = script("Pix2Pix_data.py", "--layout", "tagged", "--raw-dir", out, "--output", tmp_path / "t.h5",
                  "--workers", 1)
    assert proc.returncode == 0, proc.stderr
