"""Pix2Pix_denoise.py: PNG folders and HDF5 test splits denoised by a real (tiny) Keras model, bad inputs;
evaluation.py: hit-level scores of hand-made events with known answers, the baselines through them, the report."""

import json
import math
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error
from PIL import Image

import evaluation
import event_image as ei
import Pix2Pix_denoise
import trained_model
from script_utils import InputError

SCRIPT = "Pix2Pix_denoise.py"
TRACK = (255, 255, 255)  # track hits are white ...
NOISE = (0, 255, 0)  # ... noise hits green: any lit channel is a hit


# --- Hand-made events and models whose answers are known -----------------------------------------
def make_events(n, seed=0, noise_per_event=None):
    """(raw uint8 (n,36,112,3), truth uint8): one straight track over all 36 layers, isolated noise hits.

    Noise is kept 6 wires or more away from the track, so a model keeping the hits with a hit just
    above or below them is a perfect denoiser (for the seeds used here no two noise hits touch).
    """
    rng = np.random.default_rng(seed)
    raw = np.zeros((n, 36, 112, 3), np.uint8)
    truth = np.zeros_like(raw)
    for i in range(n):
        wire = int(rng.integers(10, 100))
        raw[i, :, wire] = TRACK
        truth[i, :, wire] = TRACK
        k = noise_per_event[i] if noise_per_event is not None else int(rng.integers(1, 12))
        far = np.array([w for w in range(112) if abs(w - wire) > 6])
        cells = rng.choice(36 * len(far), size=k, replace=False)
        raw[i, cells // len(far), far[cells % len(far)]] = NOISE
    return raw, truth


def save_model(path, kind="track", threshold=0.5):
    """A fixed-weight 3x1 Conv2D + sigmoid generator saved as .keras with its sidecar JSON.

    track: output = sigmoid(40*hit + 20*(hit above + hit below) - 50) on every channel: a hit
    with a vertical neighbour (keeps exactly the track hits of make_events);
    all: lights every pixel (a model that invents hits); none: lights nothing.
    """
    import keras

    inp = keras.Input((128, 128, 3))
    conv = keras.layers.Conv2D(3, (3, 1), padding="same", activation="sigmoid")
    model = keras.Model(inp, conv(inp))
    kernel = np.zeros((3, 1, 3, 3), np.float32)
    bias = {"track": -50.0, "all": 10.0, "none": -10.0}[kind] * np.ones(3, np.float32)
    if kind == "track":
        kernel[:, 0, 0, :] = np.array([20.0, 40.0, 20.0])[:, None]
    conv.set_weights([kernel, bias])
    model.save(path)
    path.with_suffix(".json").write_text(json.dumps({"threshold": threshold, "base_filters": 1, "epoch": 1,
                                                     "validation": {}}))
    return path


def write_pngs(folder, images, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"event_{i:04d}.png" for i in range(len(images))]
    for name, img in zip(names, images, strict=True):
        ei.write_event_png(folder / name, img)
    return names


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    out = {k: save_model(d / f"{k}.keras", k) for k in ("track", "all", "none")}
    run = d / "training_run"  # a training output directory: its best generator is used
    run.mkdir()
    out["run"] = run
    save_model(run / "generator_best.keras", "track", threshold=0.4)
    save_model(run / "generator_final.keras", "none")
    return out


@pytest.fixture
def folders(tmp_path):
    raw, truth = make_events(12, seed=3)
    names = write_pngs(tmp_path / "raw", raw)
    write_pngs(tmp_path / "truth", truth, names)
    return tmp_path, raw, truth, names


# --- The evaluation on hand-made masks --------------------------------------------------------------
def masks(n=6, seed=1, noise_per_event=None):
    raw, truth = make_events(n, seed, noise_per_event)
    return ei.hit_mask(raw), ei.hit_mask(truth)


def test_event_by_event_counts_ties_as_equal_and_only_events_with_tracks():
    raw, truth = masks(8)
    truth[6:] = False  # two events of background only: nothing to find there
    snr = truth.copy()
    snr[6:] = raw[6:]  # keeps the background where the model keeps nothing: no track's F1 to compare
    res = evaluation.evaluate(raw, truth, {"model": truth, "keep-all": raw, "SNR": snr, "CAE": truth})
    assert res["model_vs_per_event"]["SNR"] == {"better": 0, "equal": 6, "worse": 0}  # the same F1 is a tie
    assert res["model_vs_per_event"]["keep-all"] == {"better": 6, "equal": 0, "worse": 0}


def test_evaluation_perfect_empty_and_keep_all():
    raw, truth = masks()
    invent = truth.copy()
    invent[:, 0, 0] = True  # one invented pixel per event (wire 0 has no raw hit in these events)
    assert not (raw[:, 0, 0]).any()
    res = evaluation.evaluate(raw, truth, {"model": truth, "keep-all": raw, "SNR": np.zeros_like(raw), "CAE": invent})
    perfect, keep_all, empty, inv = (res["methods"][m]["scores"] for m in ("model", "keep-all", "SNR", "CAE"))
    assert perfect["efficiency"] == 1 and perfect["rejection"] == 1 and perfect["purity"] == 1 and perfect["f1"] == 1
    assert perfect["invented_per_event"] == 0
    assert keep_all["efficiency"] == 1 and keep_all["rejection"] == 0
    n_track, n_noise = int((raw & truth).sum()), int((raw & ~truth).sum())
    assert keep_all["purity"] == pytest.approx(n_track / (n_track + n_noise))
    assert empty["efficiency"] == 0 and empty["rejection"] == 1 and empty["f1"] == 0 and math.isnan(empty["purity"])
    assert inv["efficiency"] == 1 and inv["invented_per_event"] == 1 and inv["purity"] == 1  # invented not "kept"
    assert res["events"] == 6 and res["methods"]["model"]["counts"]["track_hits"] == 6 * 36
    assert "EQUAL (to 4 decimals) to the best CLAS12 baseline (CAE)" in res["verdict"]  # CAE: F1 1 (invented not kept)
    res = evaluation.evaluate(raw, truth, {"model": truth, "SNR": np.zeros_like(raw)})
    assert "BETTER than the best CLAS12 baseline (SNR): F1 1.0000 vs 0.0000 (+1.0000)" in res["verdict"]
    assert res["model_vs_per_event"] == {"SNR": {"better": 6, "equal": 0, "worse": 0}}
    assert "better in 6, equal in 0, worse in 0. Tracking: the model keeps 100.00 %" in res["verdict"]
    assert res["verdict"].endswith("(6 events without track ids: the truth of each counts as one track.)")


def test_evaluation_half_the_track_and_half_the_noise():
    raw, truth = masks(4, seed=2, noise_per_event=[4, 4, 4, 4])
    kept = truth.copy()
    kept[:, 18:] = False  # the track in regions 2b-3 lost: superlayers 4-6
    noise = raw & ~truth
    for i in range(4):  # keep two of the four noise hits of each event
        cells = np.argwhere(noise[i])[:2]
        kept[i, cells[:, 0], cells[:, 1]] = True
    res = evaluation.evaluate(raw, truth, {"model": kept})
    s = res["methods"]["model"]["scores"]
    assert s["efficiency"] == 0.5 and s["rejection"] == 0.5
    assert s["purity"] == pytest.approx(18 / 20) and s["f1"] == pytest.approx(2 * 18 / (36 + 20))
    per_sl = [e["scores"]["efficiency"] for e in res["per_superlayer"]["model"]]
    assert per_sl == [1, 1, 1, 0, 0, 0]
    assert sum(e["counts"]["track_hits"] for e in res["per_superlayer"]["model"]) == 4 * 36


def test_evaluation_vs_background_hits_bins_events_by_their_noise():
    raw, truth = masks(5, seed=4, noise_per_event=[0, 3, 7, 25, 200])
    kept = truth.copy()
    kept[3] = raw[3]  # in the 20-39 bin the model keeps all noise
    res = evaluation.evaluate(raw, truth, {"model": kept}, background_bins=(0, 5, 20, 100))
    bins = res["vs_background_hits"]["model"]
    assert [(b["low"], b["high"], b["counts"]["events"]) for b in bins] == [(0, 5, 2), (5, 20, 1), (20, 100, 1),
                                                                            (100, None, 1)]
    assert [b["counts"]["noise_hits"] for b in bins] == [3, 7, 25, 200]
    assert [b["scores"]["rejection"] for b in bins] == [1, 1, 0, 1]


def test_threshold_sweep_and_batches_add_up():
    raw, truth = masks(8, seed=5)
    prob = np.where(truth, 0.7, np.where(raw, 0.3, 0.0)).astype(np.float32)
    ev = evaluation.HitEvaluation(["model"], thresholds=(0.2, 0.5, 0.8), grid_events=2)
    for sl in (slice(0, 3), slice(3, 8)):  # two batches give the same as one
        ev.add(raw[sl], truth[sl], {"model": prob[sl] > 0.5}, prob[sl], names=[f"e{i}" for i in range(8)][sl])
    res = ev.result()
    one = evaluation.evaluate(raw, truth, {"model": prob > 0.5}, prob, thresholds=(0.2, 0.5, 0.8))
    assert res["methods"] == one["methods"] and res["per_superlayer"] == one["per_superlayer"]
    sweep = [(s["scores"]["efficiency"], s["scores"]["rejection"]) for s in res["threshold_sweep"]]
    assert sweep == [(1, 0), (1, 1), (0, 1)]
    assert len(res["worst_events"]) == 2 and len(res["best_events"]) == 2


def test_worst_and_best_events_are_found_across_batches():
    raw, truth = masks(10, seed=6)
    kept = truth.copy()
    kept[7, :30] = False  # event 7 worst, event 2 second worst
    kept[2, :10] = False
    ev = evaluation.HitEvaluation(["model"], grid_events=2)
    names = [f"e{i}" for i in range(10)]
    for sl in (slice(0, 4), slice(4, 10)):
        ev.add(raw[sl], truth[sl], {"model": kept[sl]}, names=names[sl])
    res = ev.result()
    assert [e["name"] for e in res["worst_events"]] == ["e7", "e2"]
    np.testing.assert_array_equal(res["worst_events"][0]["keeps"]["model"], kept[7])
    assert res["worst_events"][0]["f1"] == pytest.approx(2 * 6 / (36 + 6))
    assert all(e["f1"] == 1 for e in res["best_events"])


def test_snr_baseline_through_the_evaluation():
    """SNR keeps a clean straight track whole and removes isolated hits far from anything."""
    import baselines
    raw, truth = masks(6, seed=7)
    res = evaluation.evaluate(raw, truth, {"model": truth, "keep-all": raw, "SNR": baselines.snr_keep(raw)})
    snr = res["methods"]["SNR"]["scores"]
    assert snr["efficiency"] == 1 and snr["rejection"] == 1 and snr["invented_per_event"] == 0
    assert res["methods"]["keep-all"]["scores"]["rejection"] == 0


def test_write_report_files(tmp_path):
    raw, truth = masks(6, seed=8)
    prob = np.where(truth, 0.9, 0.1).astype(np.float32)
    res = evaluation.evaluate(raw, truth, {"model": prob > 0.5, "keep-all": raw}, prob, names=list("abcdef"))
    res["threshold"] = 0.5
    paths = evaluation.write_report(res, tmp_path / "r", meta={"model": "m.keras"})
    data = json.loads(paths["json"].read_text())  # strict JSON: NaN written as null
    assert data["methods"]["model"]["scores"]["f1"] == 1 and data["model"] == "m.keras"
    assert len(data["threshold_sweep"]) == len(ei.SWEEP_THRESHOLDS)
    assert data["best_events"][0]["name"] in "abcdef"
    for key in ("png", "events"):
        with Image.open(paths[key]) as im:
            assert im.format == "PNG" and im.size[0] > 400
    with pytest.raises(InputError, match="already exists"):
        evaluation.write_report(res, tmp_path / "r")
    evaluation.write_report(res, tmp_path / "r", overwrite=True)


# --- The script on PNG folders -------------------------------------------------------------------------
def test_png_folder_denoised_cropped_same_names_only_hit_values(script, models, folders):
    tmp, raw, truth, names = folders
    (tmp / "raw" / "notes.txt").write_text("not an event")  # ignored
    proc = script(SCRIPT, "--model", models["track"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out",
                  "--batch-size", 5)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp / "out").iterdir()) == sorted(names)
    for name, t in zip(names, truth, strict=True):
        with Image.open(tmp / "out" / name) as im:
            assert im.size == (112, 36) and im.mode == "RGB"
            out = np.asarray(im)
        assert set(np.unique(out)) <= {0, ei.HIT_VALUE}
        np.testing.assert_array_equal(out, t)  # the perfect model gives back exactly the truth
    assert not (tmp / "out.report.json").exists()


def test_png_evaluate_report_and_table(models, folders, capsys):
    tmp, raw, truth, names = folders
    assert run_main("--model", models["run"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out",
                    "--evaluate", "--truth-dir", tmp / "truth") == 0
    stdout = capsys.readouterr().out
    assert "threshold 0.400, from validation" in stdout  # generator_best.keras and its sidecar
    data = json.loads((tmp / "out.report.json").read_text())
    assert data["threshold"] == 0.4 and data["events"] == 12
    # the sweep: 0.05..0.95, then 0.97, 0.98, 0.99, where a model keeps as few tracks as the CAE
    assert [s["threshold"] for s in data["threshold_sweep"]] == [*ei.THRESHOLDS, 0.97, 0.98, 0.99]
    assert set(data["methods"]) >= {"model", "keep-all", "SNR"}
    m = data["methods"]["model"]["scores"]
    assert m["efficiency"] == 1 and m["rejection"] == 1 and m["invented_per_event"] == 0
    assert data["methods"]["keep-all"]["scores"]["rejection"] == 0
    for line in data["table"].splitlines():
        assert line in stdout
    assert data["verdict"] in stdout
    assert (tmp / "out.report.png").is_file() and (tmp / "out.report.events.png").is_file()


def test_swapped_raw_and_truth_folders_are_named_in_a_warning(script, models, folders):
    """Truth hits that are not raw hits (the folders given the wrong way round) get one warning line; the
    right way round, none."""
    tmp, raw, truth, names = folders
    proc = script(SCRIPT, "--model", models["track"], "--input-dir", tmp / "truth", "--output-dir", tmp / "o",
                  "--evaluate", "--truth-dir", tmp / "raw")
    assert proc.returncode == 0, proc.stderr
    noise = ei.hit_mask(raw) & ~ei.hit_mask(truth)
    expected = (f"warning: {int(noise.any(axis=(1, 2)).sum())} event(s) have truth hits that are not raw hits "
                f"({int(noise.sum())} in all): are --input-dir and --truth-dir swapped?")
    assert [line for line in proc.stderr.splitlines() if "swapped" in line] == [
        expected + " (the scores count raw hits only)"]
    proc = script(SCRIPT, "--model", models["track"], "--input-dir", tmp / "raw", "--output-dir", tmp / "o2",
                  "--evaluate", "--truth-dir", tmp / "truth")
    assert proc.returncode == 0 and "swapped" not in proc.stderr


def test_events_scored_against_themselves_are_refused_before_any_work(script, models, tmp_path):
    """The input folder (or a link to it) as --truth-dir or --tracks-dir, and a folder of make_events' tagged
    layout (its truth and track-id PNGs would be denoised as events): one line, nothing written. A folder of
    tagged raw PNGs alone, or of names that carry a tag with no raw PNG beside them, is denoised as usual."""
    for layout in ("folders", "tagged"):
        proc = script("make_events.py", "--output", tmp_path / layout, "-n", 3, "--layout", layout, "--workers", 1)
        assert proc.returncode == 0, proc.stderr
    ev, tagged, out = tmp_path / "folders", tmp_path / "tagged", tmp_path / "out"
    (tmp_path / "link").symlink_to(ev / "raw")
    job = ["--model", models["track"], "--output-dir", out]
    same = ["the events would be scored against themselves"]
    for args, words in [
        (["--input-dir", ev / "raw", "--evaluate", "--truth-dir", ev / "raw"], ["truth folder is the input", *same]),
        (["--input-dir", ev / "raw", "--evaluate", "--truth-dir", tmp_path / "link"], ["link", *same]),
        (["--input-dir", ev / "raw", "--evaluate", "--truth-dir", ev / "truth", "--tracks-dir", tmp_path / "link"],
         ["track-id folder is the input", *same]),
        (["--input-dir", tagged, "--evaluate", "--truth-dir", tagged], ["beside dc_all_000000.png",
                                                                        "Pix2Pix_data.py --layout tagged", "--data"]),
        (["--input-dir", tagged], ["tagged layout's truth or track-id PNGs"]),
    ]:
        assert_one_line_error(script(SCRIPT, *job, *args), *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folders", "link", "tagged"]
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("dc_all_000000.png", "dc_all_000001.png"):
        shutil.copy(tagged / name, alone / name)
    shutil.copy(tagged / "dc_truth_000002.png", alone / "dc_truth_000002.png")  # no dc_all_000002.png beside it
    assert run_main(*job, "--input-dir", alone) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in alone.iterdir())


def test_png_evaluate_with_track_ids_from_the_tracks_folder(models, folders):
    tmp, raw, truth, names = folders
    (tmp / "tracks").mkdir()  # beside truth/: found without a flag
    for name, t in zip(names, truth, strict=True):
        ei.write_track_ids_png(tmp / "tracks" / name, ei.hit_mask(t).astype(np.uint8) * 7)
    assert run_main("--model", models["track"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out",
                    "--evaluate", "--truth-dir", tmp / "truth") == 0
    data = json.loads((tmp / "out.report.json").read_text())
    assert data["track_ids"] == {"with": 12, "without": 0}
    t = data["methods"]["model"]["tracking"]
    assert t["counts"]["tracks"] == 12 and t["scores"]["kept_6"] == 1 and t["scores"]["fake_segments_per_event"] == 0
    with pytest.raises(InputError, match="--tracks-dir is only used with --evaluate"):
        run_main("--model", models["track"], "--input-dir", tmp / "raw", "--output-dir", tmp / "o2",
                 "--tracks-dir", tmp / "tracks")


def run_main(*args):
    """Pix2Pix_denoise.main in this process (the model loads once per test session, not per run)."""
    return Pix2Pix_denoise.main([str(a) for a in args])


@pytest.mark.parametrize("keep_bytes, reads", [(None, 1), (0, 2)])
def test_each_png_is_read_once_when_the_checked_batches_fit(models, folders, monkeypatch, keep_bytes, reads):
    tmp, raw, truth, names = folders
    read, counts = ei.read_event_png, {}

    def counted(path):
        counts[path.name] = counts.get(path.name, 0) + 1
        return read(path)

    monkeypatch.setattr(ei, "read_event_png", counted)
    if keep_bytes is not None:
        monkeypatch.setattr(Pix2Pix_denoise.PngFolderReader, "keep_bytes", keep_bytes)
    assert run_main("--model", models["track"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out",
                    "--batch-size", 5) == 0
    assert counts == dict.fromkeys(names, reads)  # the check's read, kept for the run (or read again)
    for name, t in zip(names, truth, strict=True):
        np.testing.assert_array_equal(read(tmp / "out" / name), t)


def test_png_threshold_override_and_gate_by_raw_hits(models, folders):
    tmp, raw, truth, names = folders
    assert run_main("--model", models["all"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out",
                    "--threshold", "0.5") == 0
    assert ei.read_event_png(tmp / "out" / names[0]).min() == 255  # every pixel lit: invented hits are written
    assert run_main("--model", models["all"], "--input-dir", tmp / "raw", "--output-dir", tmp / "masked",
                    "--gate-by-raw-hits") == 0
    np.testing.assert_array_equal(ei.hit_mask(ei.read_event_png(tmp / "masked" / names[0])), ei.hit_mask(raw[0]))
    assert run_main("--model", models["none"], "--input-dir", tmp / "raw", "--output-dir", tmp / "none",
                    "--evaluate", "--truth-dir", tmp / "truth") == 0
    data = json.loads((tmp / "none.report.json").read_text())
    assert data["methods"]["model"]["scores"]["efficiency"] == 0 and "WORSE" in data["verdict"]


def test_output_piped_to_a_reader_that_leaves_does_not_stop_the_run(models, folders):
    """`Pix2Pix_denoise.py ... | head -3`: head leaves after its lines; the run ended in a BrokenPipeError traceback,
    its PNG folder removed and its report left. Now the rest of its lines go nowhere and the run finishes."""
    import subprocess
    import sys

    tmp, raw, truth, names = folders
    proc = subprocess.Popen([sys.executable, ROOT / "Pix2Pix_denoise.py", "--model", models["track"], "--input-dir",
                             tmp / "raw", "--output-dir", tmp / "out", "--evaluate", "--truth-dir", tmp / "truth"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp)
    proc.stdout.close()  # the reader gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and "Traceback" not in err, err[-2000:]
    assert sorted(p.name for p in (tmp / "out").iterdir()) == sorted(names)
    assert json.loads((tmp / "out.report.json").read_text())["events"] == len(names)


def test_overwrite(script, models, folders):
    tmp, raw, truth, names = folders
    args = ["--model", models["track"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out"]
    assert run_main(*args) == 0
    target = tmp / "out" / names[3]
    ei.write_event_png(target, np.zeros((36, 112, 3), np.uint8))  # a file of the user's
    before = {p.name: p.read_bytes() for p in (tmp / "out").iterdir()}
    proc = script(SCRIPT, *args)
    assert_one_line_error(proc, names[0], "already exists", "--overwrite")
    assert {p.name: p.read_bytes() for p in (tmp / "out").iterdir()} == before  # nothing touched
    assert run_main(*args, "--overwrite") == 0
    np.testing.assert_array_equal(ei.read_event_png(target), truth[3])
    assert sorted(p.name for p in (tmp / "out").iterdir()) == sorted(names)  # no temporary files left
    assert_one_line_error(script(SCRIPT, "--model", models["track"], "--input-dir", tmp / "raw", "--output-dir",
                                 tmp / "raw", "--overwrite"), "the output is the input folder")


def test_bad_inputs_one_line_error_and_no_output(script, models, folders, tmp_path):
    """As a user sees them (a script run: one line, exit 2): unreadable model, empty folder, wrong size."""
    tmp, raw, truth, names = folders
    out = tmp / "out"
    base = ["--input-dir", tmp / "raw", "--output-dir", out]
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    assert_one_line_error(script(SCRIPT, "--model", broken, *base, "--threshold", "0.5"), "broken.keras",
                          "not a Keras model file")
    (tmp / "empty").mkdir()
    assert_one_line_error(script(SCRIPT, "--model", models["track"], "--input-dir", tmp / "empty", "--output-dir", out),
                          "empty", "no .png files")
    Image.fromarray(np.zeros((112, 36, 3), np.uint8)).save(tmp / "raw" / "zz_rotated.png")  # 36 wide, 112 high
    assert_one_line_error(script(SCRIPT, "--model", models["track"], *base), "zz_rotated.png", "36x112")
    assert_one_line_error(script(SCRIPT, "--model", models["track"], *base, "--batch-size", "many"), "--batch-size",
                          "not an integer")
    assert not out.exists() and not [p for p in tmp.iterdir() if p.name.startswith(".")]  # nor a temporary folder
    out.mkdir()  # an existing folder is left as it was (the inputs are checked first; what a failed run wrote goes)
    assert_one_line_error(script(SCRIPT, "--model", models["track"], *base, "--batch-size", "2"), "zz_rotated.png",
                          "36x112")  # batches of 2: the bad PNG comes in the last one
    assert not any(out.iterdir())


@pytest.mark.parametrize("case, words", [
    ("missing model", "missing.keras: model not found"),
    ("run dir without best", "training directory without generator_best.keras"),
    ("missing truth", "event_0005.png: file not found"),
    ("evaluate without truth", "needs --truth-dir"),
    ("threshold out of range", "--threshold 1.5: must be in [0, 1)"),
    ("no stored threshold", "bare.keras: no bare.json beside it with the threshold chosen on validation"),
    ("both inputs", "exactly one input"),
    ("decreasing bins", "--background-bins: '10,5': values must increase"),
    ("bins not from 0", "--background-bins 10,20: the first lower edge must be 0: every event"),
    ("no model", "the following arguments are required: --model"),
    ("cae epochs 0", "--cae-epochs must be at least 1, got 0"),
    ("truth dir with data", "--truth-dir is only used with --evaluate on --input-dir"),
    ("negative threads", "--threads: -1 must not be negative"),
    ("report without evaluate", "--report is only used with --evaluate"),
    ("sweep without evaluate", "--sweep-thresholds is only used with --evaluate"),
    ("output with input dir", "--output is for --data or --hipo; with --input-dir use --output-dir"),
    ("split seed with input dir", "--split-seed chooses the test events of --data"),
    ("data is a folder", "raw: a folder, not an HDF5 file"),
])
def test_bad_settings_are_input_errors_before_any_output(models, folders, tmp_path, case, words):
    tmp, raw, truth, names = folders
    args = ["--model", models["track"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out"]
    if case == "missing model":
        args[1] = tmp_path / "missing.keras"
    elif case == "run dir without best":
        args[1] = tmp / "raw"
    elif case == "missing truth":
        (tmp / "truth" / names[5]).unlink()
        args += ["--evaluate", "--truth-dir", tmp / "truth"]
    elif case == "evaluate without truth":
        args += ["--evaluate"]
    elif case == "threshold out of range":
        args += ["--threshold", "1.5"]
    elif case == "no stored threshold":
        args[1] = tmp_path / "bare.keras"
        shutil.copy(models["track"], args[1])  # a model without its sidecar JSON has no stored threshold
    elif case == "both inputs":
        args += ["--data", tmp_path / "x.h5"]
    elif case == "decreasing bins":
        args += ["--evaluate", "--truth-dir", tmp / "truth", "--background-bins", "10,5"]
    elif case == "bins not from 0":
        args += ["--evaluate", "--truth-dir", tmp / "truth", "--background-bins", "10,20"]
    elif case == "no model":
        args = args[2:]
    elif case == "negative threads":
        args += ["--threads", "-1"]
    elif case == "cae epochs 0":
        args += ["--evaluate", "--truth-dir", tmp / "truth", "--baseline-cae", "--cae-data", tmp_path / "x.h5",
                 "--cae-epochs", "0"]
    elif case == "truth dir with data":
        args = [*args[:2], "--data", tmp_path / "x.h5", "--evaluate", "--truth-dir", tmp / "truth"]
    elif case.endswith("without evaluate"):  # (they did nothing, without a word)
        args += ["--report", tmp_path / "r"] if case.startswith("report") else ["--sweep-thresholds", "0.1,0.5"]
    elif case == "output with input dir":
        args += ["--output", tmp_path / "o.h5"]
    elif case == "split seed with input dir":
        args += ["--split-seed", "7"]
    elif case == "data is a folder":
        args = [*args[:2], "--data", tmp / "raw"]
    with pytest.raises(InputError) as err:
        run_main(*args)
    assert words in str(err.value)
    assert not (tmp / "out").exists()


class SlowModel:
    """probabilities = maps * 10, slow for every third batch (so later ones finish first when run at once);
    records the most calls running at once and the threads they ran on."""

    def __init__(self, concurrent_batches):
        self.concurrent_batches, self.running, self.most, self.threads = concurrent_batches, 0, 0, set()
        self.lock = threading.Lock()

    def probabilities(self, maps):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread())
        time.sleep(0.1 if maps[0] % 3 == 0 else 0.001)
        with self.lock:
            self.running -= 1
        return maps * 10


@pytest.mark.parametrize("at_once", [1, 3])
def test_predictions_come_back_in_order_with_up_to_n_running_at_once(at_once):
    batches = [(f"names {i}", np.array([i, i, i])) for i in range(10)]
    model = SlowModel(at_once)
    out = list(trained_model.predicted(model, iter(batches)))
    assert [batch for batch, _ in out] == batches  # every batch once, in the reader's order ...
    for (_, maps), prob in out:
        np.testing.assert_array_equal(prob, maps * 10)  # ... with its own probabilities
    if at_once == 1:  # a Keras model: one batch at a time, on the caller's thread, as before
        assert model.most == 1 and model.threads == {threading.current_thread()}
    else:
        assert 2 <= model.most <= at_once


def test_wrong_model_shape_is_refused(folders, tmp_path):
    import keras

    tmp, *_ = folders
    inp = keras.Input((36, 112, 3))
    keras.Model(inp, keras.layers.Conv2D(3, 1, activation="sigmoid")(inp)).save(tmp_path / "small.keras")
    with pytest.raises(InputError, match=r"small.keras: model maps .*36, 112.* expected"):
        run_main("--model", tmp_path / "small.keras", "--input-dir", tmp / "raw", "--output-dir", tmp / "out",
                 "--threshold", "0.5")
    assert not (tmp / "out").exists()


def test_model_on_hit_maps_equals_the_padded_images_of_255_hits(tmp_path):
    """KerasModel.probabilities(hit maps) gives what the generator gives on the padded PNG images / 255
    (hits 255 on all channels), cropped, largest channel; a short batch after a long one is the same too."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((128, 128, 3))
    keras.Model(inp, keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")(inp)).save(tmp_path / "g.keras")
    model, info = trained_model.load_model(tmp_path / "g.keras")
    assert info == {}
    raw, _ = make_events(7, seed=11)
    images = ei.mask_to_image(ei.hit_mask(raw))  # the project's PNGs: hits 255 on all channels
    direct = ei.crop_event(np.asarray(model.model.predict_on_batch(ei.pad_event(images) / np.float32(255)))).max(-1)
    prob = model.probabilities(ei.hit_mask(raw))
    assert prob.shape == (7, 36, 112) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, direct, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.probabilities(ei.hit_mask(raw[2:5])), direct[2:5], rtol=0, atol=1e-6)


def test_old_mask_with_raw_flag_still_gates():
    args = Pix2Pix_denoise.build_parser().parse_args(["--model", "m.keras", "--mask-with-raw"])
    assert args.gate_by_raw_hits is True


# --- The script on the HDF5 test split ---------------------------------------------------------------
@pytest.fixture
def h5file(tmp_path):
    """A project HDF5 file of 16 hand-made pairs (padded 128x128, as Pix2Pix_data.py writes them)."""
    import h5py

    raw, truth = make_events(16, seed=9)
    path = tmp_path / "events.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=ei.pad_event(raw), chunks=(4, 128, 128, 3))
        f.create_dataset("truth", data=ei.pad_event(truth), chunks=(4, 128, 128, 3))
        f.create_dataset("names", data=[f"ev{i:02d}.png" for i in range(16)], dtype=h5py.string_dtype())
    return path, raw, truth


def test_h5_test_split_denoised_and_scored(models, h5file, capsys):
    import h5py

    import data_management

    path, raw, truth = h5file
    out = path.parent / "test_denoised.h5"
    assert run_main("--model", models["run"], "--data", path, "--output", out, "--evaluate", "--batch-size", 3) == 0
    test = data_management.load_split(path)["test"]
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["indices"][:], test)
        assert [n.decode() for n in f["names"][:]] == [f"ev{i:02d}.png" for i in test]
        den = f["denoised"][:]
        assert den.shape == (len(test), 36, 112, 3) and den.dtype == np.uint8 and f.attrs["threshold"] == 0.4
        assert f.attrs["created_by"] == "Pix2Pix_denoise.py" and json.loads(f.attrs["layout"]) == json.loads(
            json.dumps(ei.LAYOUT)) and not f.attrs["gate_by_raw_hits"]  # the attribute names of every HDF5 file
    np.testing.assert_array_equal(den, truth[test])  # the perfect model: exactly the truth, cropped back
    data = json.loads((path.parent / "test_denoised.report.json").read_text())
    assert data["events"] == len(test) and data["methods"]["model"]["scores"]["f1"] == 1
    assert data["methods"]["model"]["counts"]["track_hits"] == len(test) * 36
    noise = ei.hit_mask(raw[test]) & ~ei.hit_mask(truth[test])
    assert data["methods"]["model"]["counts"]["noise_hits"] == int(noise.sum())
    assert (path.parent / "test_denoised.report.png").is_file()
    # An existing output is refused; the input is never an output.
    capsys.readouterr()
    with pytest.raises(InputError, match="already exists"):
        run_main("--model", models["run"], "--data", path, "--output", out)
    with pytest.raises(InputError, match="output is the input file"):
        run_main("--model", models["run"], "--data", path, "--output", path, "--overwrite")


def test_h5_scores_the_test_events_of_the_split_the_model_trained_on(models, h5file, tmp_path, capsys):
    """A sidecar recording the pairs file (its fingerprint) and split seed 7: --data on that file scores split
    7's test events; another split seed there is refused (its test events hold training events); on another
    file the default split."""
    import h5py

    import data_management

    path, raw, truth = h5file
    model = shutil.copy(models["track"], tmp_path / "m.keras")
    sidecar = {"threshold": 0.5, "settings": {"split_seed": 7},
               "data": {"path": "elsewhere/events.h5", "fingerprint": data_management.fingerprint(path)}}
    Path(model).with_suffix(".json").write_text(json.dumps(sidecar))
    ours = data_management.make_split(16, 7)["test"]
    assert set(ours) != set(data_management.make_split(16, data_management.SPLIT_SEED)["test"])
    assert run_main("--model", model, "--data", path, "--output", tmp_path / "a.h5", "--evaluate") == 0
    with h5py.File(tmp_path / "a.h5", "r") as f:
        np.testing.assert_array_equal(f["indices"][:], np.sort(ours))
    assert f"the {len(ours)} test events of split seed 7" in capsys.readouterr().out
    assert json.loads((tmp_path / "a.report.json").read_text())["split_seed"] == 7
    with pytest.raises(InputError, match=r"m.keras trained on this file with split seed 7: the test events of "
                                         r"--split-seed 1234 hold its training events"):
        run_main("--model", model, "--data", path, "--output", tmp_path / "b.h5", "--split-seed", 1234)
    assert not (tmp_path / "b.h5").exists()
    assert run_main("--model", model, "--data", path, "--output", tmp_path / "c.h5", "--split-seed", 7) == 0
    other = tmp_path / "other.h5"  # other pairs: the model did not train on them
    shutil.copy(path, other)
    with h5py.File(other, "a") as f:
        f["raw"][0] = 0
    capsys.readouterr()
    assert run_main("--model", model, "--data", other, "--output", tmp_path / "d.h5") == 0
    with h5py.File(tmp_path / "d.h5", "r") as f:
        np.testing.assert_array_equal(f["indices"][:], data_management.load_split(other)["test"])
    assert "changed" not in capsys.readouterr().err
    sidecar["data"]["path"] = str(other.resolve())  # the file it trained on, changed since: warned about
    Path(model).with_suffix(".json").write_text(json.dumps(sidecar))
    assert run_main("--model", model, "--data", other, "--output", tmp_path / "e.h5") == 0
    assert f"warning: {other} has changed since {model} trained on it" in capsys.readouterr().err


def test_h5_bad_file_one_line_error(script, models, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    assert_one_line_error(script(SCRIPT, "--model", models["track"], "--data", bad), "bad.h5", "HDF5")
    assert not (tmp_path / "bad_denoised.h5").exists()


def test_cae_baseline_through_the_evaluation(models, h5file):
    """--baseline-cae trains and caches the CAE; its row equals evaluate() of baselines.cae_keep on the same events."""
    import baselines
    path, raw, truth = h5file
    cache = path.parent / "cae"
    cache.mkdir()
    out = path.parent / "den.h5"
    assert run_main("--model", models["track"], "--data", path, "--output", out, "--evaluate", "--baseline-cae",
                    "--cae-epochs", 1, "--cae-cache", cache, "--report", path.parent / "rep") == 0
    assert len(list(cache.glob("*.keras"))) == 1
    data = json.loads((path.parent / "rep.json").read_text())
    assert list(data["methods"]) == ["model", "keep-all", "SNR", "CAE"]
    import data_management

    test = data_management.load_split(path)["test"]
    raw_m, truth_m = ei.hit_mask(raw[test]), ei.hit_mask(truth[test])
    cae = baselines.get_cae(path, cache, train_if_missing=False, epochs=1)
    direct = evaluation.evaluate(raw_m, truth_m, {"CAE": baselines.cae_keep(cae, raw_m)})
    assert data["methods"]["CAE"]["counts"] == direct["methods"]["CAE"]["counts"]


# --- Killed mid-run: nothing half-written under a final name -------------------------------------------
def _start(*args):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, str(ROOT / SCRIPT), *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=ROOT)


def _kill_when(proc, ready, delay, timeout=120):
    """SIGKILL proc `delay` seconds after ready() first holds; False if it finished before that."""
    import time

    t0 = time.time()
    while not ready():
        if proc.poll() is not None or time.time() - t0 > timeout:
            return False
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait()
    return True


@pytest.mark.slow
@pytest.mark.parametrize("seed, existing", [(0, False), (1, True), (2, True)])
def test_killed_mid_run_leaves_only_complete_pngs(models, tmp_path, seed, existing):
    """A new output folder is filled under a hidden temporary name: killed, the final name does not
    exist. Into an existing folder each PNG is renamed into place whole: killed, those there are valid."""
    raw, _ = make_events(1500, seed=seed)
    write_pngs(tmp_path / "raw", raw)
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    proc = _start("--model", models["track"], "--input-dir", tmp_path / "raw", "--output-dir", out, "--batch-size", 4)
    delay = float(np.random.default_rng(seed).uniform(0.0, 0.6))
    writing = (lambda: any(out.glob("*.png"))) if existing else (lambda: any(tmp_path.glob(".out.*.tmp/*.png")))
    assert _kill_when(proc, writing, delay), "finished before the kill"
    finals = sorted(out.glob("*.png"))
    if not existing:
        assert not out.exists() and len(list(tmp_path.glob(".out.*.tmp/*.png"))) < 1500
        return
    assert 0 < len(finals) < 1500
    for p in finals:  # every PNG under a final name is whole and valid
        with Image.open(p) as im:
            im.load()
            assert im.size == (112, 36) and set(np.unique(np.asarray(im))) <= {0, 255}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_killed_mid_run_leaves_no_hdf5_under_the_final_name(models, tmp_path, seed):
    import h5py

    raw, truth = make_events(2000, seed=seed)
    path = tmp_path / "events.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=ei.pad_event(raw), chunks=(16, 128, 128, 3))
        f.create_dataset("truth", data=ei.pad_event(truth), chunks=(16, 128, 128, 3))
    out = tmp_path / "den.h5"
    proc = _start("--model", models["track"], "--data", path, "--output", out, "--batch-size", 4, "--evaluate")
    delay = float(np.random.default_rng(seed).uniform(0.0, 0.5))
    assert _kill_when(proc, lambda: any(tmp_path.glob(".den.h5.*")), delay), "finished before the kill"
    assert not out.exists() and not (tmp_path / "den.report.json").exists()


def test_a_model_with_non_finite_weights_is_refused(script, folders):
    """A generator exported from a diverged run (NaN weights) would write empty events: refused up front."""
    import keras

    tmp_path = folders[0]
    inp = keras.Input((128, 128, 3))
    conv = keras.layers.Conv2D(3, 1, activation="sigmoid")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.full((1, 1, 3, 3), np.nan, np.float32), np.zeros(3, np.float32)])
    model.save(tmp_path / "nan.keras")
    (tmp_path / "nan.json").write_text('{"threshold": 0.5}')
    proc = script(SCRIPT, "--model", tmp_path / "nan.keras", "--input-dir", tmp_path / "raw",
                  "--output-dir", tmp_path / "out")
    assert_one_line_error(proc, "nan.keras", "not finite")
    assert not (tmp_path / "out").exists()


# --- Graded outputs: the written hits are exactly `probability > threshold` (issue 15) ---------------
def save_graded_model(path, seed=4):
    """A 3x3 Conv2D + sigmoid generator with seeded random weights and a different bias per channel:
    probabilities spread over (0, 1), channels that differ (largest channel != mean), and every empty
    neighbourhood gives sigmoid(-0.3) (channel 0, the largest bias). Returns (path, that background value)."""
    import keras

    inp = keras.Input((128, 128, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")
    model = keras.Model(inp, conv(inp))
    kernel = np.random.default_rng(seed).normal(0, 0.6, (3, 3, 3, 3)).astype(np.float32)
    conv.set_weights([kernel, np.array([-0.3, -0.6, -1.0], np.float32)])
    model.save(path)
    background = float(np.asarray(model.predict_on_batch(np.zeros((1, 128, 128, 3), np.float32)))[0, 0, 0].max())
    return path, background


def graded_probabilities(path, raw):
    """The generator's probabilities worked out here: its outputs on the padded 0/1 images, cropped, largest channel."""
    import keras

    model = keras.models.load_model(path, compile=False)
    images = ei.pad_event(ei.mask_to_image(ei.hit_mask(raw))).astype(np.float32) / 255
    out = ei.crop_event(np.asarray(model.predict_on_batch(images)))
    return out.max(-1), out.mean(-1)


def written_hits(folder, names):
    return np.stack([ei.hit_mask(ei.read_event_png(folder / n)) for n in names])


def test_written_hits_are_probability_above_the_stored_and_the_given_threshold(script, folders):
    """Stored threshold = the exact probability of every empty cell (not 0.5): `>=` would light them all;
    a hard-coded 0.5, a channel mean or an ignored --threshold each give other hits than the expected ones."""
    tmp, raw, truth, names = folders
    path, background = save_graded_model(tmp / "graded.keras")
    (tmp / "graded.json").write_text(json.dumps({"threshold": background}))
    prob, mean = graded_probabilities(path, raw)
    assert background != 0.5 and (prob == np.float32(background)).sum() > 1000  # the empty cells
    expected = prob > background
    for other in (prob >= background, prob > 0.5, mean > background, prob > 0.6):  # what a broken copy writes
        assert (other != expected).any()
    proc = script(SCRIPT, "--model", path, "--input-dir", tmp / "raw", "--output-dir", tmp / "stored")
    assert proc.returncode == 0, proc.stderr
    assert f"threshold {background:.3f}, from validation" in proc.stdout
    np.testing.assert_array_equal(written_hits(tmp / "stored", names), expected)
    proc = script(SCRIPT, "--model", path, "--input-dir", tmp / "raw", "--output-dir", tmp / "given",
                  "--threshold", 0.6)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(written_hits(tmp / "given", names), prob > 0.6)
    proc = script(SCRIPT, "--model", path, "--input-dir", tmp / "raw", "--output-dir", tmp / "gated",
                  "--threshold", 0.6, "--gate-by-raw-hits")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(written_hits(tmp / "gated", names), (prob > 0.6) & ei.hit_mask(raw))


# --- Outputs that are inputs, folders where files go, a failure at the end (issue 15) ----------------------
@pytest.mark.parametrize("where", ["output-dir inside the input", "output-dir holds the input",
                                   "output-dir is the truth folder", "report over the model's sidecar",
                                   "output file is the model"])
def test_an_output_that_is_inside_or_holds_an_input_is_refused(script, models, folders, where):
    tmp, raw, truth, names = folders
    shutil.copy(models["track"], tmp / "m.keras")
    shutil.copy(models["track"].with_suffix(".json"), tmp / "m.json")
    sidecar = (tmp / "m.json").read_bytes()
    job = ["--model", tmp / "m.keras", "--input-dir", tmp / "raw", "--overwrite"]
    args, words = {
        "output-dir inside the input": ([*job, "--output-dir", tmp / "raw" / "den"], ["inside the input"]),
        "output-dir holds the input": ([*job, "--output-dir", tmp], ["holds the input"]),
        "output-dir is the truth folder": ([*job, "--output-dir", tmp / "truth", "--evaluate", "--truth-dir",
                                            tmp / "truth"], ["is the input folder"]),
        "report over the model's sidecar": ([*job, "--output-dir", tmp / "o", "--evaluate", "--truth-dir",
                                             tmp / "truth", "--report", tmp / "m"], ["m.json", "input file"]),
        "output file is the model": (["--model", tmp / "m.keras", "--data", tmp / "x.h5", "--output",
                                      tmp / "m.keras", "--overwrite"], ["m.keras", "input file"]),
    }[where]
    before = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
    assert_one_line_error(script(SCRIPT, *args), *words)
    assert {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()} == before
    assert (tmp / "m.json").read_bytes() == sidecar


def test_a_report_path_that_is_a_folder_is_refused_before_any_work(script, models, folders):
    tmp, raw, truth, names = folders
    (tmp / "rep.json").mkdir()
    proc = script(SCRIPT, "--model", models["track"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out",
                  "--evaluate", "--truth-dir", tmp / "truth", "--report", tmp / "rep", "--overwrite")
    assert_one_line_error(proc, "rep.json", "is a folder")
    assert "wrote" not in proc.stdout and "model" not in proc.stdout  # refused before the model loads
    assert not (tmp / "out").exists() and not (tmp / "rep.png").exists()


def test_a_png_another_run_wrote_meanwhile_is_never_replaced(models, folders, monkeypatch):
    """Two runs into one PNG folder: while this run writes the 7th event's PNG (its temporary file),
    another run finishes that PNG. This run stops there in one line, leaves the other run's file as
    it was and removes the PNGs it had written itself, and no temporary file stays. Deterministic:
    the other run's file appears at a chosen point, not after a sleep."""
    tmp, raw, truth, names = folders
    out = tmp / "out"
    out.mkdir()  # an existing folder: each PNG is written atomically (a new one is renamed into place whole)
    theirs = out / names[6]
    real_write = ei.write_event_png

    def another_run_finishes_that_png(path, image):
        real_write(path, image)
        if Path(path).name.startswith(f".{names[6]}."):  # this run's temporary of that event
            theirs.write_bytes(b"the other run's denoised event")

    monkeypatch.setattr(ei, "write_event_png", another_run_finishes_that_png)
    with pytest.raises(InputError, match="appeared while this run was writing it"):
        Pix2Pix_denoise.main(["--model", str(models["track"]), "--input-dir", str(tmp / "raw"), "--output-dir",
                              str(out), "--batch-size", "4"])
    assert [p.name for p in out.iterdir()] == [names[6]]  # its own first PNGs removed, no temporaries
    assert theirs.read_bytes() == b"the other run's denoised event"


def test_a_new_output_folder_appears_whole_and_never_replaces_one_another_run_made(models, folders, monkeypatch):
    """A new folder is filled under a hidden name and renamed into place at the end: while this run
    writes its last PNG, nothing exists under the final name. Another run that makes the folder
    meanwhile keeps it: this run stops in one line and removes its own temporary folder."""
    tmp, raw, truth, names = folders
    out = tmp / "out"
    real_write = ei.write_event_png
    seen = []

    def write_and_look(path, image):
        real_write(path, image)
        seen.append((Path(path).parent.name, out.exists()))
        if Path(path).name == names[-1] and another_run:
            out.mkdir()
            (out / "theirs.png").write_bytes(b"the other run's")

    monkeypatch.setattr(ei, "write_event_png", write_and_look)
    for another_run in (False, True):
        if another_run:
            shutil.rmtree(out)
            seen.clear()
        args = ["--model", str(models["track"]), "--input-dir", str(tmp / "raw"), "--output-dir", str(out)]
        if not another_run:
            assert Pix2Pix_denoise.main(args) == 0
            assert sorted(p.name for p in out.iterdir()) == sorted(names)
            assert len(seen) == len(names) and not any(exists for _, exists in seen)
            assert all(folder.startswith(".out.") and folder.endswith(".tmp") for folder, _ in seen)
            continue
        with pytest.raises(InputError, match="appeared while this run was writing it"):
            Pix2Pix_denoise.main(args)
        assert [p.name for p in out.iterdir()] == ["theirs.png"]
        assert sorted(p.name for p in tmp.iterdir()) == ["out", "raw", "truth"]  # no temporary folder left


def test_a_run_that_fails_at_the_report_removes_what_it_wrote(models, folders, monkeypatch):
    """The report fails after the PNGs are written (a disk filling up, say): no denoised PNG or report file stays."""
    tmp, raw, truth, names = folders

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluation, "write_event_grid", fail)
    with pytest.raises(OSError, match="No space left"):
        run_main("--model", models["track"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out",
                 "--evaluate", "--truth-dir", tmp / "truth")
    assert not (tmp / "out").exists()
    assert sorted(p.name for p in tmp.iterdir()) == ["raw", "truth"]


def test_a_run_that_fails_at_the_report_removes_its_hdf5(models, h5file, monkeypatch):
    path = h5file[0]
    monkeypatch.setattr(evaluation, "write_plots", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "disk full")))
    with pytest.raises(OSError, match="disk full"):
        run_main("--model", models["track"], "--data", path, "--evaluate")
    assert sorted(p.name for p in path.parent.iterdir()) == ["events.h5", "events.split.npz"]


@pytest.mark.parametrize("value", ["0,0.5", "0.5,1", "0.2,2", "nan", "0.1,inf", "-0.1,0.5"])
def test_sweep_thresholds_outside_0_1_are_refused(script, models, folders, value):
    tmp, *_ = folders
    proc = script(SCRIPT, "--model", models["track"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out",
                  "--evaluate", "--truth-dir", tmp / "truth", "--sweep-thresholds", value)
    assert_one_line_error(proc, "--sweep-thresholds")
    assert not (tmp / "out").exists()


def test_a_clean_run_prints_only_the_projects_lines_on_stderr(script, models, folders):
    """TensorFlow's C++ lines (oneDNN `E0000 ... util.cc`) and matplotlib's missing-glyph warnings for
    non-Latin event names stay off stderr; a folder of good PNGs gives an empty stderr."""
    tmp, raw, truth, names = folders
    for name in names[:3]:  # names in scripts the report's font lacks
        for kind in ("raw", "truth"):
            (tmp / kind / name).rename(tmp / kind / f"ऋषि_{name}")
    proc = script(SCRIPT, "--model", models["all"], "--input-dir", tmp / "raw", "--output-dir", tmp / "out",
                  "--evaluate", "--truth-dir", tmp / "truth", "--grid-events", 6, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
