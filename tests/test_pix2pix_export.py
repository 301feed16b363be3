"""Pix2Pix_export.py: the ONNX model has CLAS12's [B,1,36,112] interface and decides as the Keras model does."""

import hashlib
import json
import types

import h5py
import numpy as np
import onnx
import onnxruntime
import pytest
from conftest import assert_one_line_error, run_script

import event_image as ei
import make_events
import Pix2Pix_export as export
from script_utils import InputError, import_keras

keras = import_keras()
import pix2pix_model  # noqa: E402
import trained_model  # noqa: E402

SCRIPT = "Pix2Pix_export.py"


def hit_maps(n, seed=5):
    """n synthetic events as [n,1,36,112] float32 hit maps."""
    return ei.hit_mask(make_events.generate_events(n, seed=seed)[0])[:, None].astype(np.float32)


def keras_probabilities(generator, hits):
    """The project's own path: pad each event to 128x128x3, run the generator, crop, max over channels."""
    padded = ei.pad_event(ei.mask_to_image(hits[:, 0] > 0)).astype(np.float32) / 255.0
    return ei.crop_event(generator.predict(padded, verbose=0)).max(axis=-1)[:, None]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A training folder with a gated width-4 generator and a stored threshold that splits its outputs."""
    folder = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(3)
    generator = pix2pix_model.with_raw_hit_gate(pix2pix_model.build_generator(4))
    hits = hit_maps(64, seed=9)
    on_hits = keras_probabilities(generator, hits)[hits > 0]
    threshold = round(float(np.median(on_hits)), 4)  # about half the hits kept: decisions are tested
    generator.save(folder / "generator_best.keras")
    settings = {"threshold_criterion": "tracks", "validation_background": 2}
    (folder / "generator_best.json").write_text(json.dumps({"threshold": threshold, "epoch": 2, "base_filters": 4,
                                                            "validation": {"f1": 0.5}, "settings": settings}))
    return folder, generator, threshold


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    folder, _, _ = run
    out = tmp_path_factory.mktemp("export") / "denoiser.onnx"
    assert export.main(["--model", str(folder), "--output", str(out), "--verify-events", "64"]) == 0
    return out


def test_interface_shapes_and_gate(exported):
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("hits", "probabilities")
    assert inp.shape[1:] == out.shape[1:] == [1, 36, 112] and isinstance(inp.shape[0], str)
    for b in (1, 6, 37):
        hits = hit_maps(b, seed=b)
        prob = session.run(None, {"hits": hits})[0]
        assert prob.shape == (b, 1, 36, 112) and prob.dtype == np.float32
        assert (prob[hits == 0] == 0).all()  # nothing lit where the input has no hit
        assert (prob[hits > 0] > 0).any()


def test_decisions_equal_the_keras_model(run, exported):
    _, generator, threshold = run
    hits = hit_maps(300, seed=11)
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    prob = session.run(None, {"hits": hits})[0]
    expected = keras_probabilities(generator, hits) * hits  # the project's padding path, gated by the raw hits
    assert np.abs(prob - expected).max() < 1e-5
    kept, kept_keras = prob > threshold, expected > threshold
    assert np.array_equal(kept, kept_keras)
    assert 0.2 < kept.sum() / (hits > 0).sum() < 0.8  # the stored threshold really splits the hits


def test_sidecar_and_metadata_carry_the_threshold(run, exported):
    _, _, threshold = run
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    assert sidecar["threshold"] == threshold
    assert sidecar["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()
    assert sidecar["input"]["name"] == "hits" and sidecar["output"]["shape"] == ["batch", 1, 36, 112]
    assert sidecar["verification"]["decisions_differ"] == 0 and sidecar["verification"]["events"] == 64
    assert sidecar["training"]["epoch"] == 2
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert float(meta["threshold"]) == threshold


def test_threshold_override_is_stored_and_said(run, exported, tmp_path):
    folder, _, _ = run
    out = tmp_path / "t.onnx"
    two = tmp_path / "two.h5"  # events to verify with: two are enough (no split is made)
    images = ei.pad_event(ei.mask_to_image(hit_maps(2)[:, 0] > 0))
    with h5py.File(two, "w") as f:
        f["raw"], f["truth"] = images, images
    assert export.main(["--model", str(folder), "--output", str(out), "--verify-events", "8",
                        "--threshold", "0.3", "--data", str(two)]) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["threshold"] == 0.3 and sidecar["threshold_source"] == "export --threshold"
    # Pix2Pix_denoise's first line says where each export's threshold came from.
    assert trained_model.threshold_origin(None, sidecar) == f", set at export; validation chose {run[2]}"
    stored = json.loads(exported.with_suffix(".json").read_text())
    assert stored["threshold_source"] == "validation"
    assert trained_model.threshold_origin(None, stored) == ", from validation (criterion tracks, 2 events' background)"
    drawn = {**stored, "training": {"settings": {**trained_model.training_settings(stored), "validation_draws": 8}}}
    assert trained_model.threshold_origin(None, drawn) == (", from validation (criterion tracks, 2 events' background "
                                                           "in 8 draws)")
    assert trained_model.threshold_origin(0.3, stored) == ""


def test_refuses_an_export_that_disagrees(run, tmp_path, monkeypatch):
    """If the written file decides differently from Keras, nothing is left behind."""
    folder, _, _ = run
    real = export.run_exported
    monkeypatch.setattr(export, "run_exported", lambda *a: real(*a) * 0.5)  # a broken conversion
    with pytest.raises(InputError, match="disagrees"):
        export.main(["--model", str(folder), "--output", str(tmp_path / "bad.onnx"), "--verify-events", "16"])
    assert list(tmp_path.iterdir()) == []


def test_a_tie_at_the_threshold_is_not_a_disagreement(tmp_path, monkeypatch):
    """A probability within float rounding of the threshold may fall either side in another runtime (a
    TorchScript export was refused for one such hit, 1.2e-7 from it): not counted; 1e-5 away, it is."""
    hits, threshold = hit_maps(2), 0.5
    cell = np.unravel_index(np.argmax(hits), hits.shape)  # a hit
    for nudge, differ in ((2e-7, 0), (1e-5, 1)):
        keras_side, file_side = np.full(hits.shape, 0.1), np.full(hits.shape, 0.1)
        keras_side[cell], file_side[cell] = threshold + nudge, threshold - nudge  # kept by one, not the other
        monkeypatch.setattr(export, "run_exported", lambda *a, p=file_side: p)
        model = types.SimpleNamespace(predict=lambda x, p=keras_side, **kw: p)
        assert export.verify(tmp_path / "x.onnx", "onnx", model, hits, threshold)[1] == differ


def test_bad_inputs(run, exported, tmp_path):
    folder, _, _ = run
    cases = [
        (["--model", folder, "--output", tmp_path / "x.pt"], ["x.pt", ".onnx"]),
        (["--model", tmp_path / "none.keras", "--output", tmp_path / "x.onnx"], ["none.keras", "not found"]),
        (["--model", folder, "--output", exported], [exported.name, "exists"]),
        (["--model", folder, "--output", tmp_path / "x.onnx", "--verify-events", "0"], ["verify-events"]),
        (["--model", folder, "--output", tmp_path / "x.onnx", "--threshold", "1"], ["--threshold 1.0", "[0, 1)"]),
        (["--model", folder, "--output", folder / "generator_best.onnx", "--overwrite"], ["generator_best.json",
                                                                                         "generator_best.keras"]),
        (["--model", folder, "--output", tmp_path / "x.onnx", "--data", tmp_path / "x.onnx"], ["x.onnx", "inputs"]),
    ]
    for args, words in cases:
        assert_one_line_error(run_script(SCRIPT, *args), *words)
    assert list(tmp_path.iterdir()) == []


def test_verification_events_without_a_hit_are_refused(run, tmp_path):
    """A pairs file whose first events are blank would verify nothing: one line, no export written."""
    folder, _, _ = run
    raw, truth = make_events.generate_events(4, seed=2)
    raw[:3] = 0  # the first 3 events blank, the 4th with hits
    data = tmp_path / "blank_first.h5"
    with h5py.File(data, "w") as f:
        f.create_dataset("raw", data=ei.pad_event(raw))
        f.create_dataset("truth", data=ei.pad_event(truth * (raw > 0)))
        f.create_dataset("names", data=[f"ev{i}" for i in range(4)], dtype=h5py.string_dtype())
    out = tmp_path / "x.onnx"
    assert_one_line_error(run_script(SCRIPT, "--model", folder, "--output", out, "--data", data,
                                     "--verify-events", "3"), "blank_first.h5", "first 3 events have no hit")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank_first.h5"]
    assert export.main(["--model", str(folder), "--output", str(out), "--data", str(data),
                        "--verify-events", "4"]) == 0


# --- Pix2Pix_denoise.py with the exported model: the same results, no TensorFlow -------------------------
@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """48 synthetic events as PNG folders (raw/, truth/) and as a project HDF5 file."""
    import h5py

    folder = tmp_path_factory.mktemp("events")
    raw, truth = make_events.generate_events(48, seed=21)
    names = [f"ev{i:02d}.png" for i in range(48)]
    for sub, images in (("raw", raw), ("truth", truth)):
        (folder / sub).mkdir()
        for name, image in zip(names, images, strict=True):
            ei.write_event_png(folder / sub / name, image)
    with h5py.File(folder / "events.h5", "w") as f:
        f.create_dataset("raw", data=ei.pad_event(raw), chunks=(8, 128, 128, 3))
        f.create_dataset("truth", data=ei.pad_event(truth), chunks=(8, 128, 128, 3))
        f.create_dataset("names", data=names, dtype=h5py.string_dtype())
    return folder


def denoise_both_ways(model, events, out, *extra):
    """Run Pix2Pix_denoise on the PNG folder and on the HDF5 test split with --evaluate; return the outputs."""
    import h5py

    import Pix2Pix_denoise

    out.mkdir()
    common = ["--model", str(model), "--evaluate", *extra]
    assert Pix2Pix_denoise.main([*common, "--input-dir", str(events / "raw"), "--truth-dir", str(events / "truth"),
                                 "--output-dir", str(out / "png")]) == 0
    assert Pix2Pix_denoise.main([*common, "--data", str(events / "events.h5"), "--output", str(out / "d.h5")]) == 0
    pngs = {p.name: ei.read_event_png(p) for p in sorted((out / "png").iterdir())}
    with h5py.File(out / "d.h5", "r") as f:
        h5 = f["denoised"][:]
    reports = [json.loads(p.read_text()) for p in (out / "png.report.json", out / "d.report.json")]
    return pngs, h5, [{k: r[k] for k in ("methods", "threshold_sweep", "per_superlayer", "threshold")}
                      for r in reports]


def test_denoise_gives_identical_outputs_and_scores_from_keras_and_onnx(run, exported, events, tmp_path):
    folder, _, threshold = run
    keras_out = denoise_both_ways(folder / "generator_best.keras", events, tmp_path / "keras")
    onnx_out = denoise_both_ways(exported, events, tmp_path / "onnx")
    assert keras_out[0].keys() == onnx_out[0].keys() and len(keras_out[0]) == 48
    for name in keras_out[0]:
        np.testing.assert_array_equal(keras_out[0][name], onnx_out[0][name])
    np.testing.assert_array_equal(keras_out[1], onnx_out[1])
    assert keras_out[2] == onnx_out[2]
    assert keras_out[2][0]["threshold"] == threshold  # the stored threshold, read from the export's sidecar
    kept = keras_out[2][0]["methods"]["model"]["counts"]["kept"]
    assert 0 < kept < keras_out[2][0]["methods"]["keep-all"]["counts"]["kept"]


def denoise_hipo(model, hipo, out, *extra):
    """Run Pix2Pix_denoise --hipo with --evaluate; return the denoised file's bytes and the report's scores."""
    import Pix2Pix_denoise

    assert Pix2Pix_denoise.main(["--model", str(model), "--hipo", str(hipo), "--output", str(out), "--evaluate",
                                 *extra]) == 0
    report = json.loads(out.with_suffix(".report.json").read_text())
    return out.read_bytes(), {k: report[k] for k in ("methods", "threshold_sweep", "per_superlayer")}


def test_concurrent_onnx_denoising_equals_one_batch_at_a_time(exported, events, tmp_path, monkeypatch):
    """--threads 3: three single-thread batches at once give the PNGs, HDF5, HIPO file and scores of
    --threads 1, even when later batches finish first (every third call of a run held back, its first
    included); with a HIPO file too, more than one batch runs at once."""
    import itertools
    import threading
    import time

    import trained_model

    hipo = tmp_path / "ev.hipo"
    made = run_script("make_events.py", "--format", "hipo", "--output", hipo, "-n", 20, "--seed", 4, "--workers", 1)
    assert made.returncode == 0, made.stderr
    one = denoise_both_ways(exported, events, tmp_path / "one", "--threads", "1", "--batch-size", "5")
    one_hipo = denoise_hipo(exported, hipo, tmp_path / "one.hipo", "--threads", "1", "--batch-size", "5")
    run = trained_model.OnnxModel.probabilities
    calls, lock, running = {}, threading.Lock(), {}  # model -> its calls counted; model -> [now, most] at once

    def held_back(self, hit_maps):
        with lock:
            now = running.setdefault(self, [0, 0])
            now[0] += 1
            now[1] = max(now)
            slow = next(calls.setdefault(self, itertools.count())) % 3 == 0
        if slow:
            time.sleep(0.2)
        try:
            return run(self, hit_maps)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(trained_model.OnnxModel, "probabilities", held_back)
    three = denoise_both_ways(exported, events, tmp_path / "three", "--threads", "3", "--batch-size", "5")
    three_hipo = denoise_hipo(exported, hipo, tmp_path / "three.hipo", "--threads", "3", "--batch-size", "5")
    assert [m.concurrent_batches for m in calls] == [3, 3, 3]  # the PNG run's model, the HDF5 run's, the HIPO's
    assert all(most > 1 for _, most in running.values())
    assert one[0].keys() == three[0].keys() and len(one[0]) == 48
    for name in one[0]:
        np.testing.assert_array_equal(one[0][name], three[0][name])
    np.testing.assert_array_equal(one[1], three[1])
    assert one[2] == three[2]
    assert one_hipo[0] == three_hipo[0]
    assert one_hipo[1] == three_hipo[1]
    assert one_hipo[1]["methods"]["model"]["counts"]["events"] == 20  # every sector image scored


TF_FREE = """
import runpy, sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError(f"{name} imported on the TensorFlow-free path")

sys.meta_path.insert(0, NoTensorFlow())
sys.argv = ["Pix2Pix_denoise.py"] + sys.argv[1:]
try:
    runpy.run_path("Pix2Pix_denoise.py", run_name="__main__")
finally:
    print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
"""


def test_onnx_denoising_and_evaluation_import_no_tensorflow(exported, events, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    args = ["--model", exported, "--data", events / "events.h5", "--output", tmp_path / "d.h5", "--evaluate"]
    proc = subprocess.run([sys.executable, "-c", TF_FREE, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loaded: []" in proc.stdout and (tmp_path / "d.report.json").is_file()
    assert "SNR" in proc.stdout  # the baselines are scored too
    keras_model = run_script("Pix2Pix_denoise.py", *args[:1], ROOT / "missing.keras", *args[2:])
    assert keras_model.returncode == 2  # (a .keras model needs TensorFlow: that path is not this one)


def test_denoise_refuses_onnx_files_that_are_not_this_projects_export(exported, events, tmp_path):
    from onnx import TensorProto, helper

    not_onnx = tmp_path / "text.onnx"
    not_onnx.write_text("not a model")
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(other))
    interface = {}  # the right names and shapes, but a fixed batch of 1 or float64 tensors
    for name, kind, batch in (("fixed", TensorProto.FLOAT, 1), ("double", TensorProto.DOUBLE, "batch")):
        node = helper.make_node("Identity", [ei.MODEL_INPUT], [ei.MODEL_OUTPUT])
        tensors = [helper.make_tensor_value_info(t, kind, [batch, *ei.MODEL_TENSOR_SHAPE[1:]])
                   for t in (ei.MODEL_INPUT, ei.MODEL_OUTPUT)]
        interface[name] = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(helper.make_graph([node], "g", tensors[:1], tensors[1:])), str(interface[name]))
    no_sidecar = tmp_path / "copy.onnx"
    no_sidecar.write_bytes(exported.read_bytes())
    data = ["--data", events / "events.h5", "--output", tmp_path / "out.h5"]
    for model, extra, words in ((not_onnx, ["--threshold", "0.5"], ["text.onnx", "cannot load"]),
                                (other, ["--threshold", "0.5"], ["other.onnx", "not this project"]),
                                (interface["fixed"], ["--threshold", "0.5"], ["fixed.onnx", "any batch size"]),
                                (interface["double"], ["--threshold", "0.5"], ["double.onnx", "float32"]),
                                (no_sidecar, [], ["copy.json", "threshold"])):
        assert_one_line_error(run_script("Pix2Pix_denoise.py", "--model", model, *data, *extra), *words)
    assert not (tmp_path / "out.h5").exists()


def test_each_format_needs_a_name_of_its_own_and_a_sidecar_is_checked_against_its_model(run, exported, tmp_path):
    """denoiser.onnx and denoiser.pt would share denoiser.json: the second export is refused (even with
    --overwrite), and a model whose sidecar was written for another format or another file, or whose training
    settings were edited into something else, is refused when loaded."""
    folder, _, _ = run
    before = exported.with_suffix(".json").read_bytes()
    for extra in ([], ["--overwrite"]):
        with pytest.raises(InputError, match=r"denoiser.json: the sidecar of denoiser.onnx, which it would no longer "
                                             r"describe; give the torchscript file a name of its own"):
            export.main(["--model", str(folder), "--output", str(exported.with_suffix(".pt")), "--format",
                         "torchscript", *extra])
    assert exported.with_suffix(".json").read_bytes() == before and not exported.with_suffix(".pt").exists()
    training_sidecar = (folder / "generator_best.json").read_bytes()  # the training's, beside generator_best.keras
    with pytest.raises(InputError, match=r"generator_best.json: the sidecar of generator_best.keras, which it would"):
        export.main(["--model", str(folder), "--output", str(folder / "generator_best.onnx"), "--overwrite"])
    assert (folder / "generator_best.json").read_bytes() == training_sidecar
    assert not (folder / "generator_best.onnx").exists()
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(exported.read_bytes())
    sidecar = json.loads(before)
    (tmp_path / "copy.json").write_text(json.dumps(dict(sidecar, format="torchscript", file="copy.pt")))
    with pytest.raises(InputError, match=r"copy.json: the sidecar of copy.pt \(torchscript\), not of copy.onnx"):
        trained_model.load_model(copy)
    (tmp_path / "copy.json").write_text(json.dumps(sidecar))
    assert trained_model.load_model(copy)[1]["threshold"] == sidecar["threshold"]  # the same content: taken
    other = onnx.load(str(exported))
    other.doc_string = "another export"  # a working model, but not the file this sidecar was written for
    onnx.save(other, str(copy))
    with pytest.raises(InputError, match=r"copy.json: written for another copy.onnx \(its sha256 differs"):
        trained_model.load_model(copy)
    copy.write_bytes(exported.read_bytes())
    hand_edits = [(dict(sidecar, threshold=0.9), r"copy.json: its threshold 0.9 is not the one in copy.onnx's "
                   r"metadata \(0\.\d+, what CLAS12 reconstruction reads\)"),
                  (dict(sidecar, format=["onnx"]), r"copy.json: the sidecar of denoiser.onnx \(\['onnx'\]\)")]
    for content, message in hand_edits:
        (tmp_path / "copy.json").write_text(json.dumps(content))
        with pytest.raises(InputError, match=message):
            trained_model.load_model(copy)
    (tmp_path / "copy.json").write_text("[" * 100000 + "]" * 100000)  # deeper than json reads
    with pytest.raises(InputError, match=r"copy.json: unreadable model sidecar \(RecursionError"):
        trained_model.load_model(copy)
    for settings in ({"shift_average": "two"}, [1], {"mirror_average": "yes"}, {"shift_average": 1.5}):
        (tmp_path / "copy.json").write_text(json.dumps(dict(sidecar, training=dict(sidecar["training"],
                                                                                   settings=settings))))
        with pytest.raises(InputError, match="copy.json: its training settings are not a JSON object"):
            trained_model.load_model(copy)


def test_a_keras_model_that_is_not_a_pix2pix_generator_is_refused_in_one_line(tmp_path):
    inp = keras.Input((128, 128, 3))
    keras.Model(inp, keras.layers.Conv2D(3, 1, activation="sigmoid")(inp)).save(tmp_path / "conv.keras")
    (tmp_path / "conv.json").write_text('{"threshold": 0.5}')
    proc = run_script("Pix2Pix_export.py", "--model", tmp_path / "conv.keras", "--output", tmp_path / "d.onnx")
    assert_one_line_error(proc, "conv.keras", "not a generator of Pix2Pix_training.py")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.json", "conv.keras"]


def test_an_onnx_model_giving_nan_is_refused_on_every_route(events, tmp_path):
    """An ONNX model's weights are not checked on loading: its non-finite outputs stop the run, which leaves
    nothing (not a file of every hit rejected)."""
    from onnx import TensorProto, helper, numpy_helper

    shape = ["batch", *ei.MODEL_TENSOR_SHAPE[1:]]
    nan = numpy_helper.from_array(np.array(np.nan, np.float32), "nan")
    graph = helper.make_graph([helper.make_node("Mul", [ei.MODEL_INPUT, "nan"], [ei.MODEL_OUTPUT])], "nan",
                              [helper.make_tensor_value_info(ei.MODEL_INPUT, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(ei.MODEL_OUTPUT, TensorProto.FLOAT, shape)], [nan])
    model = tmp_path / "nan.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    hipo = tmp_path / "ev.hipo"
    assert run_script("make_events.py", "--format", "hipo", "--output", hipo, "-n", 6, "--seed", 4).returncode == 0
    for data, out in ((["--data", events / "events.h5"], "o.h5"), (["--hipo", hipo], "o.hipo")):
        proc = run_script("Pix2Pix_denoise.py", "--model", model, "--threshold", "0.5", *data, "--output",
                          tmp_path / out)
        assert_one_line_error(proc, "nan.onnx", "non-finite hit probabilities")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev.hipo", "nan.onnx"]


# --- TorchScript (the optional extra: CI installs requirements-export.txt, so there it never skips) ------
def need_export_extra():
    """torch (onnx2torch must be there too, not imported here), or a skip (a failure under CI, which installs them)."""
    import importlib.util
    import os

    if not all(importlib.util.find_spec(m) for m in ("torch", "onnx2torch")):
        if os.environ.get("CI"):
            pytest.fail("CI installs requirements-export.txt: torch and onnx2torch must be there")
        pytest.skip("torch/onnx2torch not installed: pip install -r requirements-export.txt")
    import torch

    return torch


def test_torchscript_export_runs_any_batch_and_agrees_with_onnx(run, exported, tmp_path):
    torch = need_export_extra()
    folder, generator, threshold = run
    out = tmp_path / "denoiser.pt"
    assert export.main(["--model", str(folder), "--output", str(out), "--format", "torchscript",
                        "--verify-events", "32"]) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["format"] == "torchscript" and sidecar["threshold"] == threshold
    assert sidecar["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    with export.quiet():
        module = torch.jit.load(str(out))
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    for b in (1, 37):  # traced at 2
        hits = hit_maps(b, seed=40 + b)
        with torch.no_grad():
            prob = module(torch.from_numpy(hits)).numpy()
        assert prob.shape == (b, 1, 36, 112)
        assert np.abs(prob - session.run(None, {"hits": hits})[0]).max() < 1e-5
        assert np.array_equal(prob > threshold, (keras_probabilities(generator, hits) * hits) > threshold)


@pytest.mark.slow
def test_fresh_inference_environment_denoises_and_scores(exported, events, tmp_path):
    """requirements-inference.txt alone (no TensorFlow in the environment) is enough for an exported model."""
    import subprocess
    import sys

    from conftest import ROOT

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "-r",
                          ROOT / "requirements-inference.txt"], capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-2000:]
    has_tf = subprocess.run([venv / "bin" / "python", "-c", "import tensorflow"], capture_output=True)
    assert has_tf.returncode != 0  # really without TensorFlow
    proc = subprocess.run([venv / "bin" / "python", ROOT / "Pix2Pix_denoise.py", "--model", exported, "--data",
                           events / "events.h5", "--output", tmp_path / "d.h5", "--evaluate"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "d.report.json").read_text())
    assert list(report["methods"]) == ["model", "keep-all", "SNR"]


def mirror_maps(hits):
    """[n,1,36,112] hit maps mirrored along the wires (event_image.MIRROR_WIRE; none there: 0)."""
    source = np.broadcast_to(np.maximum(ei.MIRROR_WIRE, 0), hits.shape)
    return np.take_along_axis(hits, source, axis=-1) * (ei.MIRROR_WIRE >= 0)


def run_trained_with(run, folder, **settings):
    """folder: the run's generator, its sidecar saying it trained with these settings."""
    folder.mkdir(exist_ok=True)
    (folder / "generator_best.keras").write_bytes((run[0] / "generator_best.keras").read_bytes())
    info = json.loads((run[0] / "generator_best.json").read_text())
    info["settings"].update(settings)
    (folder / "generator_best.json").write_text(json.dumps(info))
    return folder


@pytest.fixture(scope="module")
def mirror_run(run, tmp_path_factory):
    """The run's generator, its sidecar saying it trained with --mirror-average."""
    return run_trained_with(run, tmp_path_factory.mktemp("mirror_run"), mirror_average=True)


def test_mirror_averaged_export_answers_an_event_and_its_mirror_alike(run, exported, mirror_run, tmp_path):
    """--mirror-average: the export averages the event's and its mirror's answers, as the Keras model
    loaded from the same run does; the same generator without it does not (the check can fail)."""
    out = tmp_path / "mirror.onnx"
    assert export.main(["--model", str(mirror_run), "--output", str(out), "--verify-events", "16"]) == 0
    hits = hit_maps(40, seed=12) * (ei.MIRROR_WIRE >= 0)  # no hit without a mirror: mirroring twice restores it
    has_mirror = np.broadcast_to(ei.MIRROR_WIRE >= 0, hits.shape)
    answers = {}
    for name, path in (("mirror", out), ("plain", exported)):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        prob, of_mirror = (session.run(None, {"hits": h})[0] for h in (hits, mirror_maps(hits)))
        answers[name] = np.abs(mirror_maps(of_mirror) - prob)[has_mirror & (hits > 0)].max(), prob
    assert answers["mirror"][0] < 1e-5 < answers["plain"][0]
    keras_model, info = trained_model.load_model(mirror_run)
    assert keras_model.views == {"mirror": True, "shift": 0} == trained_model.output_views(
        json.loads(out.with_suffix(".json").read_text()))
    expected = keras_model.probabilities(hits[:, 0])[:, None]
    assert np.abs(answers["mirror"][1] - expected).max() < 1e-5
    assert np.abs(answers["plain"][1] - expected).max() > 1e-3


def test_shift_averaged_export_answers_as_the_keras_model_trained_so(run, exported, tmp_path):
    """--shift-average (with --mirror-average too): the export holds the extra passes (the map moved along its
    wires, the mirrored map) in its graph and answers as the Keras model loaded from the same run; the plain
    export does not. A 36x112 map moved inside the graph drops what leaves the wires, as the 128x128 one does."""
    hits = hit_maps(40, seed=13)
    for views in ({"mirror": False, "shift": 1}, {"mirror": True, "shift": 3}):
        folder = run_trained_with(run, tmp_path / f"run{views['shift']}", mirror_average=views["mirror"],
                                  shift_average=views["shift"])
        out = tmp_path / f"shift{views['shift']}.onnx"
        assert export.main(["--model", str(folder), "--output", str(out), "--verify-events", "16"]) == 0
        keras_model, _ = trained_model.load_model(folder)
        sidecar = json.loads(out.with_suffix(".json").read_text())
        assert keras_model.views == views == trained_model.output_views(sidecar)
        expected = keras_model.probabilities(hits[:, 0])[:, None]
        got, plain = (onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                      .run(None, {"hits": hits})[0] for path in (out, exported))
        assert np.abs(got - expected).max() < 1e-5 < np.abs(plain - expected).max()
