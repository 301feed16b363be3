"""The README's first quick-start command, end to end at a tiny size: the chain cannot silently break."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import ROOT, assert_one_line_error, run_script

import clas12_hipo
import demo


def assert_a_working_model(report):
    """The tiny demo's generator (one epoch: three steps of 16 on 54 pairs) is barely trained, so its scores are
    those of any early model, and the tracks criterion (the default) may keep every hit to keep the tracks; what
    it must not be is broken. Its scores must be finite with no invented hit, and some threshold of the report's
    sweep must tell hits apart (0 < efficiency < 1 and 0 < rejection < 1): a model giving NaN, nothing, the same
    output everywhere or invented hits fails here."""
    scores = report["methods"]["model"]["scores"]
    for key in ("efficiency", "rejection", "purity", "f1"):
        assert isinstance(scores[key], float) and math.isfinite(scores[key]), scores
    assert scores["invented_per_event"] == 0.0, scores
    sweep = [point["scores"] for point in report["threshold_sweep"]]
    assert any(0.0 < s["efficiency"] < 1.0 and 0.0 < s["rejection"] < 1.0 and s["f1"] > 0.0 for s in sweep), sweep


@pytest.mark.slow
def test_tiny_demo_runs_the_whole_chain(tmp_path):
    proc = run_script("demo.py", "--tiny", "--output-root", tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert f"=== {step}" in proc.stdout
    table = [line.split()[0] for line in proc.stdout.splitlines() if line.split()]
    for method in ("model", "keep-all", "SNR", "CAE"):
        assert method in table, proc.stdout[-2000:]
    (run,) = tmp_path.iterdir()
    for name in ("events/preview.png", "events.h5", "events.split.npz", "training/generator_best.keras",
                 "training/history.csv", "test_denoised.h5", "test_denoised.report.png"):
        assert (run / name).is_file(), name
    report = json.loads((run / "test_denoised.report.json").read_text())
    assert list(report["methods"]) == ["model", "keep-all", "SNR", "CAE"]
    keep_all = report["methods"]["keep-all"]["scores"]
    assert keep_all["efficiency"] == 1.0 and keep_all["rejection"] == 0.0
    assert_a_working_model(report)
    # A clean run: nothing on stderr but the project's own warnings (no TensorFlow or matplotlib lines).
    assert [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("warning:")] == [], \
        proc.stderr[-3000:]
    # The same events through HIPO: a HIPO file, its HDF5 pairs equal to the PNG route's, the file denoised.
    for step in ("HIPO 1/3", "HIPO 2/3", "HIPO 3/3"):
        assert f"=== {step}" in proc.stdout
    assert "events_hipo.h5: the same raw and truth images as events.h5, event for event" in proc.stdout
    for name in ("events.hipo", "events_hipo.h5", "events_denoised.hipo", "events_denoised.report.png"):
        assert (run / name).is_file(), name
    # Kept (orders 0/10) and rejected (40/70) hits of the denoised file together are the raw hits.
    marked = list(clas12_hipo.read_sector_events(run / "events_denoised.hipo", raw_orders=(0, 10, 40, 70)))
    before = list(clas12_hipo.read_sector_events(run / "events.hipo"))
    assert len(marked) == len(before) == 96
    assert all((m.raw == b.raw).all() and (m.event, m.sector) == (b.event, b.sector)
               for m, b in zip(marked, before, strict=True))
    hipo_report = json.loads((run / "events_denoised.report.json").read_text())
    assert hipo_report["events"] == 96 and list(hipo_report["methods"]) == ["model", "keep-all", "SNR"]
    assert_a_working_model(hipo_report)


@pytest.mark.parametrize("args, words", [
    (["--events", "10"], ["--events must be at least 64, not 10"]),
    (["--epochs", "0"], ["--epochs must be at least 1, not 0"]),
    (["--output-root", "AFILE/runs"], ["afile is not a folder"]),
    (["--output-root", ""], ["--output-root: the path is empty"]),  # (ran the whole demo in the current folder)
])
def test_settings_that_cannot_work_are_one_line_before_any_folder(tmp_path, args, words):
    (tmp_path / "afile").write_text("a user's file")
    args = [a.replace("AFILE", str(tmp_path / "afile")) for a in args]
    proc = run_script("demo.py", "--output-root", tmp_path / "out", *args)
    assert_one_line_error(proc, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_run_started_in_the_same_second_gets_its_own_folder(tmp_path, monkeypatch):
    """Runs started at once (seeds side by side) each get a folder (the second crashed on the first's)."""
    assert re.fullmatch(r"run-\d{8}-\d{6}", demo.run_folder(tmp_path / "a").name)
    monkeypatch.setattr(time, "strftime", lambda fmt: "run-20261207-040000")  # the same second for all
    (tmp_path / "b/run-20261207-040000").mkdir(parents=True)
    assert demo.run_folder(tmp_path / "b").name == "run-20261207-040000-2"
    assert demo.run_folder(tmp_path / "b").name == "run-20261207-040000-3"
    assert sorted(p.name for p in (tmp_path / "b").iterdir())[-1] == "run-20261207-040000-3"


def test_a_stop_while_the_step_starts_stops_the_step_too(tmp_path, monkeypatch):
    """A SIGTERM that lands inside Popen, after the fork (a CI run once left training running alone this
    way): the demo still stops the step and waits for it."""
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(120)\n")
    monkeypatch.setattr(demo, "HERE", tmp_path)
    started = []

    class SignalledPopen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(subprocess, "Popen", SignalledPopen)
    handler = signal.signal(signal.SIGTERM, demo.stop_step)
    try:
        with pytest.raises(KeyboardInterrupt):
            demo.step("sleep", "sleeper.py")
    finally:
        signal.signal(signal.SIGTERM, handler)
        for child in started:
            if child.poll() is None:
                child.kill()
    (child,) = started
    assert child.returncode == -signal.SIGTERM  # stopped, and waited for


@pytest.mark.slow
def test_sigterm_stops_the_running_step_too(tmp_path):
    """A batch system's SIGTERM to the demo reaches the step it runs (training kept running alone): the demo
    waits for it and ends as on Ctrl-C."""
    proc = subprocess.Popen([sys.executable, ROOT / "demo.py", "--tiny", "--output-root", tmp_path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the training step's command line: the step is starting
        if line.startswith("$ python Pix2Pix_training.py"):
            break
    else:
        pytest.fail(f"no training step: {proc.wait()} {proc.stderr.read()[-2000:]}")
    children = []
    while not children and proc.poll() is None:
        children = psutil.Process(proc.pid).children()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err[-2000:]
    assert children and not any(c.is_running() for c in children)
    (run,) = tmp_path.iterdir()
    assert f"demo stopped: what it made is in {run}/; the demo run again starts a new run from step 1" in out
