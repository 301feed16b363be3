"""The synthetic event generator: its statistics, determinism, luminosity scaling and its CLI."""

import hashlib
import itertools
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, kill_a_pool_worker, wait_for
from PIL import Image

import event_image as ei
import hipo_writer
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
    slope = np.stack([(w[:, 12 * r + 10] - w[:, 12 * r]) / 10 for r in range(3)], axis=1)  # rows staggered alike
    assert np.abs(slope).max() < 0.9 and np.abs(np.diff(slope, axis=1)).max() < 0.6  # 0.45 a layer, the stereo jump
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
        me.generate_events(3, luminosity=ew.MAX_LUMINOSITY + 1)


def test_event_names():
    assert me.event_name(123) == "event_000123.png"
    assert me.event_name(1234567) == "event_1234567.png"
    assert me.tagged_names(42) == ("dc_all_000042.png", "dc_truth_000042.png")


def test_cli_folders_layout_with_preview(script, tmp_path):
    out = tmp_path / "synth"
    proc = script("make_events.py", "--output", out, "-n", 13, "--seed", 5, "--workers", 2, "--preview")
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
    proc = script("make_events.py", "--output", out, "-n", 4, "--layout", "tagged", "--workers", 1,
                  "--luminosity", 2)
    assert_one_line_error(proc, str(out), "not empty")
    assert (out / "old.txt").exists() and len(list(out.iterdir())) == 1

    preview = tmp_path / "look.png"
    proc = script("make_events.py", "--output", out, "-n", 4, "--layout", "tagged", "--workers", 1,
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


def test_options_with_nothing_to_act_on_are_warned_about(capsys):
    me.parse_args(["--output", "x.hipo", "--format", "hipo", "--workers", str(me.WORKERS + 1)])
    me.parse_args(["--output", "x", "--preview-events", "3"])
    assert capsys.readouterr().err.splitlines() == [
        "warning: --workers has nothing to act on here (one process writes HIPO)",
        "warning: --preview-events has nothing to act on here (no --preview)"]
    me.parse_args(["--output", "x", "--workers", str(me.WORKERS + 1), "--preview", "--preview-events", "3"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args, words", [
    (["-n", "0"], ["-n 0", "at least one"]),
    (["--luminosity", "-1"], ["luminosity", "negative"]),
    (["--seed", "-3"], ["seed", "negative"]),
    (["--seed", "4294967296"], ["seed", "0..4294967295"]),  # numpy: words [0, 1], another set's stream
    (["--workers", "0"], ["workers"]),
    (["--preview", "look.jpg"], ["look.jpg", ".png"]),
    (["--layout", "tagged", "--preview", "x/look.png"], ["look.png", "only event PNGs"]),  # Pix2Pix_data refuses it
    (["--layout", "tagged", "--preview", "x/dc_all_000001.png"], ["dc_all_000001.png", "only event PNGs"]),
    (["--preview", "x/raw/event_000001.png"], ["event_000001.png", "only event PNGs"]),  # an event replaced
    (["--output", "x.png", "--preview", "x.png"], ["x.png", "is the output itself"]),  # refused after the events
])
def test_cli_bad_settings(script, tmp_path, args, words):
    args = [str(tmp_path / a) if a.endswith((".jpg", ".png")) else a for a in args]
    proc = script("make_events.py", "--output", tmp_path / "x", *args)
    assert_one_line_error(proc, *words)
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_output_places(script, tmp_path):
    proc = script("make_events.py", "--output", tmp_path / "missing" / "x", "-n", 2)
    assert_one_line_error(proc, "missing", "does not exist")
    (tmp_path / "file").write_text("")
    proc = script("make_events.py", "--output", tmp_path / "file", "-n", 2, "--overwrite")
    assert_one_line_error(proc, "file", "not a folder")
    (tmp_path / "look.png").write_text("mine")
    proc = script("make_events.py", "--output", tmp_path / "x", "-n", 2, "--preview", tmp_path / "look.png")
    assert_one_line_error(proc, "look.png", "already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "look.png"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "batch-system-sigterm"])
def test_cli_interrupted_run_leaves_nothing(tmp_path, stop):
    out = tmp_path / "big"
    proc = subprocess.Popen([sys.executable, str(ROOT / "make_events.py"), "--output", str(out), "-n", "200000",
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def some_events_written():  # event-driven: its temporary folder holds 10 event pictures
        temporary = [p for p in tmp_path.iterdir() if p.name.startswith(".big.") and p.is_dir()]
        return any(len(list(itertools.islice(p.rglob("*.png"), 10))) == 10 for p in temporary)

    wait_for(proc, some_events_written, "10 events in its temporary folder", timeout=120)
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted", err  # one line, no traceback
    assert list(tmp_path.iterdir()) == []  # no DIR, no half-filled temporary folder


def test_tagged_layout_keeps_its_default_preview_out_of_the_event_folder(script, tmp_path):
    out = tmp_path / "tagged"
    proc = script("make_events.py", "--output", out, "-n", 4, "--layout", "tagged", "--preview")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tagged_preview.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"dc_{tag}_{i:06d}.png" for i in range(4) for tag in ("all", "truth", "tracks")])
    proc = script("Pix2Pix_data.py", "--layout", "tagged", "--raw-dir", out, "--output", tmp_path / "t.h5",
                  "--workers", 1)
    assert proc.returncode == 0, proc.stderr


# --- Presets and the world options (event_worlds) -------------------------------------------------
import event_worlds as ew  # noqa: E402

QUIET = {"occupancy_scale": (0.0, 0.0), "segment_rate": 0.0, "crosstalk_rate": 0.0}  # tracks only


def world(**changes):
    return {**ew.WORLDS["hard"], **changes}


def test_default_preset_is_todays_events_bit_for_bit():
    import hashlib
    h = hashlib.sha256()  # computed with make_events.py before the presets existed, again with coatjava's stagger
    for a in me.generate_events(200, seed=5, luminosity=1.5, start=17, track_ids=True, preset="default"):
        h.update(a.tobytes())
    assert h.hexdigest() == "733c0be71b305cbfce38e821bedd64bb95d103ec4b69504164fa4e7927077bc1"
    args = me.parse_args(["--output", "x"])
    assert args.world == "default"  # no world option: today's generator
    assert me.parse_args(["--output", "x", "--inefficiency", "0.03"]).world["inefficiency"] == 0.03


def test_hard_events_truth_inside_raw_deterministic_and_sliceable():
    raw, truth, ids = me.generate_events(60, seed=7, track_ids=True, preset="hard")
    assert not (ei.hit_mask(truth) & ~ei.hit_mask(raw)).any()
    np.testing.assert_array_equal(ids > 0, ei.hit_mask(truth))
    again = me.generate_events(60, seed=7, track_ids=True, preset="hard")
    part = me.generate_events(10, seed=7, start=45, track_ids=True, preset="hard")
    for a, b, c in zip((raw, truth, ids), again, part, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a[45:55], c)
    assert not np.array_equal(raw, me.generate_events(60, seed=8, preset="hard")[0])
    higher = me.generate_events(60, seed=7, luminosity=2, preset="hard")
    np.testing.assert_array_equal(truth, higher[1])  # the same tracks at another luminosity
    assert ei.hit_mask(higher[0]).sum() > 1.5 * ei.hit_mask(raw).sum() - ei.hit_mask(truth).sum()


def test_hard_tracks_per_event_span_and_bend_in_range():
    rng = np.random.default_rng(0)
    w = world()
    paths = [ew.wanted_track(rng, w) for _ in range(2000)]
    spans = np.array([abs(p[1][-1] - p[1][0]) for p in paths])
    assert spans.max() <= 45 + ew.STEREO_MAX + 1 and spans.max() > 35 and spans.min() < 2  # 0 to 45 wires
    bends = np.array([p[2][-1] - p[2][0] for p in paths])  # slope change, all of it in region 2
    assert bends.min() < -0.4 and bends.max() > 0.4 and np.abs(bends).max() <= 0.6 + 1e-9
    assert all(np.ptp(p[2][:12]) < 1e-9 for p in paths)  # straight in region 1
    for _, pos, _ in paths:  # inside the chamber
        assert pos.min() >= -0.5 and pos.max() <= ew.ei.WIRES - 0.5
    _, _, ids = me.generate_events(500, seed=3, track_ids=True, preset=world(unwanted_fraction=0.0))
    counts = np.bincount(ids.max(axis=(1, 2)), minlength=6)
    assert counts[0] == 0 and counts[6:].sum() == 0 and counts[1:6].min() > 60  # 1..5 tracks, about uniform


def test_steep_tracks_light_the_run_of_wires_they_cross():
    mask = np.zeros((36, 112), bool)
    ew.light_runs(mask, np.array([3, 4]), np.array([10.0, 12.6]), np.array([2.6, 2.6]))
    assert mask[3].nonzero()[0].tolist() == [9, 10, 11] and mask[4].nonzero()[0].tolist() == [11, 12, 13, 14]
    rng = np.random.default_rng(1)  # within a superlayer a steep track's hits leave no gap between layers
    w = world(inefficiency=0.0, track_span=45.0)
    for _ in range(200):
        hits = ew.render_track(rng, w, *ew.wanted_track(rng, w))
        for layer in range(35):
            if (layer + 1) % 6 and hits[layer].any() and hits[layer + 1].any():
                a, b = hits[layer].nonzero()[0], hits[layer + 1].nonzero()[0]
                assert np.abs(a[:, None] - b[None]).min() <= 1, (layer, a, b)


def test_hard_per_layer_inefficiency_up_to_five_percent():
    rng = np.random.default_rng(2)
    w = world(inefficiency=0.05)
    layers, pos, slope = np.arange(36), np.full(36, 50.0), np.zeros(36)
    missed = np.array([~ew.render_track(rng, w, layers, pos, slope)[:, 49:52].any(axis=1) for _ in range(4000)])
    per_layer = missed.mean(axis=0)
    assert 0.02 < per_layer.mean() < 0.03  # uniform in 0..5 %: 2.5 % on average
    assert per_layer.max() < 0.05 + 0.015  # no layer above 5 % (+ the counting error)


def test_hard_occupancy_per_region_one_to_three_times_todays():
    raw, truth = (ei.hit_mask(a) for a in me.generate_events(
        400, seed=4, preset=world(unwanted_fraction=0.0, segment_rate=0.0, crosstalk_rate=0.0)))
    per_event = (raw & ~truth).reshape(400, 3, 12, 112).mean(axis=(2, 3)) / ew.NOISE_OCCUPANCY
    # each region of each event: 1-3x today's occupancy, 2x on average (counted in one event: Poisson noise)
    assert 1.8 < per_event.mean() < 2.2 and all(1.7 < m < 2.3 for m in per_event.mean(axis=0))
    r1 = per_event[:, 0]  # region 1 has the most hits per event, the least counting noise
    assert np.quantile(r1, 0.02) > 0.75 and np.quantile(r1, 0.98) < 3.3 and np.quantile(r1, 0.9) > 2.4
    assert np.corrcoef(per_event[:, 0], per_event[:, 1])[0, 1] < 0.3  # regions vary independently
    hard_raw, hard_truth = (ei.hit_mask(a) for a in me.generate_events(400, seed=4, preset="hard"))
    today_raw, today_truth = (ei.hit_mask(a) for a in me.generate_events(400, seed=4))
    assert (hard_raw & ~hard_truth).sum() > 2 * (today_raw & ~today_truth).sum()


def test_wire_gradient_tilts_the_uncorrelated_hits_along_the_wires():
    quiet = world(unwanted_fraction=0.0, segment_rate=0.0, crosstalk_rate=0.0, occupancy_scale=(1.0, 1.0))
    flat, tilted = (me.generate_events(400, seed=4, preset={**quiet, "wire_gradient": g}) for g in (0.0, 0.8))
    np.testing.assert_array_equal(flat[1], tilted[1])  # the same tracks
    noise = [(ei.hit_mask(raw) & ~ei.hit_mask(truth)).sum(axis=(0, 1)) for raw, truth in (flat, tilted)]
    assert 0.95 < noise[1].sum() / noise[0].sum() < 1.05  # as many hits in all
    quarter = 28  # the profile 1 + 0.8 (1 - 2 w / 111) averages 1.61 over wires 0-27 and 0.39 over 84-111
    assert 1.5 < noise[1][:quarter].sum() / noise[0][:quarter].sum() < 1.72
    assert 0.3 < noise[1][-quarter:].sum() / noise[0][-quarter:].sum() < 0.48
    assert me.parse_args(["--output", "x", "--wire-gradient", "0.5"]).world["wire_gradient"] == 0.5
    me.parse_args(["--output", "x", "--occupancy-scale", "3", "3", "--luminosity", "10"])  # 75 % at most: fine
    for bad in (["--wire-gradient", "1.5"], ["--wire-gradient", "-0.1"],  # 112 % on the densest wire
                ["--occupancy-scale", "3", "3", "--luminosity", "10", "--wire-gradient", "0.5"]):
        with pytest.raises(InputError):
            me.parse_args(["--output", "x", *bad])
    with pytest.raises(InputError, match=r"135% occupancy .*--luminosity 10 x \(1 \+ wire gradient 0.8\)"):
        me.parse_args(["--output", "x", "--preset", "hard", "--luminosity", "10", "--wire-gradient", "0.8"])


def two_layer_lean(background):
    """(pairs leaning to higher wires - pairs leaning to lower) / all: background hits two layers apart in one
    superlayer (the same stagger) and 1-3 wires apart; about the --background-lean L of the segments."""
    m = background.reshape(len(background), ei.SUPERLAYERS, ei.LAYERS_PER_SUPERLAYER, ei.WIRES)
    a, b = m[:, :, :-2], m[:, :, 2:]
    up = sum((a[..., :-d] & b[..., d:]).sum() for d in (1, 2, 3))
    down = sum((a[..., d:] & b[..., :-d]).sum() for d in (1, 2, 3))
    return (up - down) / (up + down)


def test_background_lean_tilts_background_segments_and_curls_one_way():
    segments_only = world(occupancy_scale=(0.0, 0.0), crosstalk_rate=0.0, tracks=(0, 0), segment_rate=1.0)
    unwanted_only = world(**QUIET, tracks=(1, 1), unwanted_fraction=1.0)
    lean = {}
    for value in (0.0, 0.5, 1.0):
        lean[value] = []
        for only in (segments_only, unwanted_only):
            events = me.generate_events(N, seed=4, preset={**only, "background_lean": value})
            raw, truth = (ei.hit_mask(a) for a in events)
            lean[value].append(two_layer_lean(raw & ~truth))
        rng = np.random.default_rng(4)
        curls = [ew.unwanted_track(rng, value)[2] for _ in range(N)]  # local slopes along each unwanted track
        lean[value].append(np.mean([slope[-1] > slope[0] for slope in curls]))
    assert abs(lean[0.0][0]) < 0.15 and abs(lean[0.0][1]) < 0.15 and 0.4 < lean[0.0][2] < 0.6  # either way alike
    assert 0.4 < lean[0.5][0] < 0.7 and 0.3 < lean[0.5][1] < 0.7 and 0.68 < lean[0.5][2] < 0.82  # 3 in 4 one way
    assert lean[1.0][0] > 0.95 and lean[1.0][1] > 0.8 and lean[1.0][2] == 1.0  # all one way
    raw, truth = me.generate_events(50, seed=4, preset="hard")  # lean 0 draws nothing: the events from before it
    assert hashlib.sha256(raw.tobytes() + truth.tobytes()).hexdigest().startswith("a99f48f4394d52e3")
    assert me.parse_args(["--output", "x", "--background-lean", "0.5"]).world["background_lean"] == 0.5
    for bad in ("1.5", "-0.1"):
        with pytest.raises(InputError):
            me.parse_args(["--output", "x", "--background-lean", bad])


def test_unwanted_tracks_are_raw_hits_never_truth():
    raw, truth, ids = (me.generate_events(200, seed=5, track_ids=True, preset=world(unwanted_fraction=1.0, **QUIET)))
    assert not ei.hit_mask(truth).any() and not ids.any()  # all unwanted: empty truth
    junk = ei.hit_mask(raw)
    assert junk.sum() > 200 * 5 and not junk[:, 24:].any()  # curling tracks never reach region 3
    raw, truth = (ei.hit_mask(a) for a in me.generate_events(400, seed=5, preset=world(**QUIET)))
    unwanted = raw & ~truth  # no background: what raw has beyond the truth is the unwanted tracks
    assert unwanted.sum() > 0 and not unwanted[:, 24:].any()
    wanted_events = truth.any(axis=(1, 2)).mean()
    assert 0.75 < wanted_events < 0.87  # half the tracks unwanted: 19 % of events keep none (1-5 tracks)
    lengths = unwanted.any(axis=2).sum(axis=1)[unwanted.any(axis=(1, 2))]
    assert lengths.max() <= 24


def test_cli_preset_and_world_options(script, tmp_path):
    out = tmp_path / "hard"
    done = script("make_events.py", "--output", out, "-n", "12", "--preset", "hard", "--workers", "1")
    assert done.returncode == 0, done.stderr
    raw, truth, ids = me.generate_events(12, seed=0, track_ids=True, preset="hard")
    got = np.asarray(Image.open(out / "raw" / me.event_name(5)).convert("RGB"))
    np.testing.assert_array_equal(got, raw[5])
    args = me.parse_args(["--output", "x", "--preset", "hard", "--tracks", "2", "2", "--unwanted-fraction", "0"])
    assert list(args.world["tracks"]) == [2, 2] and args.world["track_span"] == 45
    assert set(me.generate_events(30, preset=args.world, track_ids=True)[2].max(axis=(1, 2))) == {2}
    assert list(me.parse_args(["--output", "x", "--tracks", "0", "127"]).world["tracks"]) == [0, 127]
    for bad in (["--tracks", "3", "1"], ["--tracks", "1", "128"], ["--inefficiency", "1.5"],
                ["--occupancy-scale", "2", "1"], ["--bend", "-1"]):
        with pytest.raises(InputError):
            me.parse_args(["--output", "x", *bad])
    with pytest.raises(InputError):
        me.generate_events(2, preset="nope")
    totals = [0, 0, 0, np.zeros(3, np.int64)]  # the HIPO writer's events carry the preset's sectors
    events = list(hipo_writer.hipo_events(me.hipo_chunks(4, 0, 1.0, 2, totals, "hard"), 0, 2))
    np.testing.assert_array_equal(events[0]["sectors"][min(events[0]["sectors"])][0], ei.hit_mask(raw[0]))


@pytest.mark.slow
def test_a_killed_worker_stops_the_run_in_one_line_and_leaves_nothing(tmp_path):
    """A worker that died (the out-of-memory killer's) hung the run for good on multiprocessing.Pool (which never
    finishes a dead worker's task), its temporary folder left. Now it stops, in one line."""
    # --out: --output's old name, still taken
    proc, _, err = kill_a_pool_worker([ROOT / "make_events.py", "--out", "ev", "-n", 40000, "--workers", 2], tmp_path)
    assert proc.returncode == 2 and err.strip().splitlines() == [
        "error: a worker process died (killed? out of memory?): the run stops, nothing written"], err[-2000:]
    assert list(tmp_path.iterdir()) == []
