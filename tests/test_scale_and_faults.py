"""Scaling past one machine and surviving faults (issue 6), end to end with the real scripts.

1. Two training workers on localhost (TF_CONFIG, MultiWorkerMirroredStrategy on the CPU) train
   together and end with identical weights.
2. Training killed with SIGKILL at a random moment, then rerun with the same command: it resumes
   from the last checkpoint and, with --deterministic, ends with exactly the weights of a run
   that was never interrupted.
3. The bad-input sweep: every script fed every bad input the project knows of that applies to
   it; each must fail with exit code 2, one line on stderr naming the problem, no traceback,
   and no file changed or left behind.

Everything runs as a user would run it (subprocesses, real files, tiny widths).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, own_tmpdir, run_script, wait_for
from PIL import Image

import data_management
import event_image as ei
import make_events

TINY = ["--base-filters", "4", "--mixed-precision", "float32", "--sample-events", "2", "--validation-batches", "1",
        "--gan-weight", "1"]  # the GAN term on (off by default): these runs check its discriminator too


def write_events_h5(path, n, seed=3, chunk=8):
    """n synthetic pairs in the project's HDF5 layout (as Pix2Pix_data.py writes them)."""
    raw, truth = make_events.generate_events(n, seed=seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=ei.pad_event(raw), chunks=(chunk, 128, 128, 3))
        f.create_dataset("truth", data=ei.pad_event(truth), chunks=(chunk, 128, 128, 3))
        f.create_dataset("names", data=np.array([f"e{i}" for i in range(n)], dtype="S"))
    return path


@pytest.fixture(scope="module")
def events_h5(tmp_path_factory):
    """48 synthetic pairs (27 train, 9 validation, 12 test)."""
    return write_events_h5(tmp_path_factory.mktemp("data") / "events.h5", 48)


def start_training(*args, env=None):
    """Pix2Pix_training.py as a background process (stdout and stderr captured)."""
    return subprocess.Popen([sys.executable, str(ROOT / "Pix2Pix_training.py"), *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))


def checkpoint_tensors(prefix):
    """Every variable a TensorFlow checkpoint holds: {name: numpy array} (the object graph left out)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def assert_same_tensors(a, b, skip=()):
    """Two checkpoints hold the same variables with bit-identical values (but those named in skip)."""
    assert sorted(a) == sorted(b)
    assert any(k.startswith("generator/") for k in a) and any(k.startswith("discriminator/") for k in a)
    for name in a:
        if name.split("/")[0] in skip:
            continue
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def newest_checkpoint(folder):
    """The highest-step checkpoint prefix in a folder (None if none)."""
    steps = [int(p.name[len("ckpt-"):-len(".index")]) for p in Path(folder).glob("ckpt-*.index")]
    return Path(folder) / f"ckpt-{max(steps)}" if steps else None


# --- 1. Multi-worker training --------------------------------------------------------------------
def free_ports(n):
    """n TCP ports on localhost that are free now (bound all at once, so they differ, then released).

    Another process may take one before a worker binds it: start_workers sees that and retries.
    """
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


PORT_TAKEN = "could not start its server"  # Pix2Pix_training's words when its TF_CONFIG port is taken


def run_workers(args, n=2, attempts=5, timeout=400):
    """Run n training workers on localhost to the end: [(process, stdout, stderr)].

    Event-driven about the ports: a worker whose port another process took meanwhile says so
    (PORT_TAKEN) and exits; then the others are stopped and all start again on new ports.
    """
    for _ in range(attempts):
        workers = [f"localhost:{port}" for port in free_ports(n)]
        logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(n)]  # never fill up
        procs = [subprocess.Popen([sys.executable, str(ROOT / "Pix2Pix_training.py"), *map(str, args)], cwd=ROOT,
                                  stdout=log[0], stderr=log[1], text=True, env=dict(os.environ, TF_CONFIG=json.dumps(
                                      {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})))
                 for i, log in enumerate(logs)]
        try:
            deadline = time.monotonic() + timeout
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                if any(p.poll() not in (None, 0) for p in procs):
                    break  # one failed: the others would wait for it
                time.sleep(0.01)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
        results = []
        for p, log in zip(procs, logs, strict=True):
            for f in log:
                f.seek(0)
            results.append((p, log[0].read(), log[1].read()))
            for f in log:
                f.close()
        if not any(PORT_TAKEN in err for _, _, err in results):
            return results
    pytest.fail(f"the workers' ports were taken {attempts} times in a row")


def test_a_worker_whose_port_is_taken_says_so_in_one_line(tmp_path):
    """What run_workers' retry waits for: the words of a worker that cannot bind its port."""
    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        workers = [f"localhost:{taken.getsockname()[1]}", f"localhost:{free_ports(1)[0]}"]
        config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}})
        proc = run_script("Pix2Pix_training.py", "--data", tmp_path / "x.h5", "--output-dir", tmp_path / "run",
                          env={"TF_CONFIG": config}, timeout=300)
    assert_one_line_error(proc, PORT_TAKEN, "port in use")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_workers_train_together_and_end_with_identical_weights(events_h5, tmp_path):
    out = tmp_path / "run"
    args = ["--data", events_h5, "--output-dir", out, "--epochs", 1, "--steps-per-epoch", 3, "--batch-size", 2,
            "--checkpoint-every", 2, "--deterministic", "--keep-worker-checkpoints", *TINY]
    results = run_workers(args)
    for p, stdout, stderr in results:
        assert p.returncode == 0, stderr
        # One replica per worker, the global batch is 2 x 2; both workers see the same run.
        assert "2 replica(s)" in stdout and "3 steps of 4 per epoch" in stdout, stdout
    chief_out, worker_out = results[0][1], results[1][1]
    assert "Done: 1 epochs, 3 steps" in chief_out and "Done" not in worker_out  # only the chief exports
    worker_ckpts = out / ".worker_worker_1_tmp" / "checkpoints"
    chief = checkpoint_tensors(newest_checkpoint(out / "checkpoints"))
    other = checkpoint_tensors(newest_checkpoint(worker_ckpts))
    assert newest_checkpoint(out / "checkpoints").name == newest_checkpoint(worker_ckpts).name == "ckpt-3"
    # Every weight (batch-norm statistics included), optimizer slot and counter of both workers. Only
    # the chief validates, so only its best validation F1 is set (a resume gives the worker the chief's).
    assert_same_tensors(chief, other, skip=("best_f1",))
    assert float(chief["best_f1/.ATTRIBUTES/VARIABLE_VALUE"]) >= 0 > float(other["best_f1/.ATTRIBUTES/VARIABLE_VALUE"])
    assert int(chief["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 3
    # They trained: the weights moved between the mid-epoch checkpoint (step 2) and the end (step 3).
    mid = checkpoint_tensors(out / "checkpoints" / "ckpt-2")
    assert any(not np.array_equal(mid[k], chief[k]) for k in chief if k.startswith("generator/"))
    assert (out / "generator_final.keras").is_file() and not list(out.glob(".worker_*/*.keras"))


def test_a_worker_folder_in_a_new_run_folder_is_not_a_foreign_folder(tmp_path):
    """A worker that gets going before the chief makes its folder in the run folder first: the chief
    must not then take the run folder for someone else's."""
    import Pix2Pix_training as pt

    out = tmp_path / "run"
    (out / ".worker_worker_1_tmp" / "checkpoints").mkdir(parents=True)
    pt.check_output_dir(out, wanted=None, chief=True)  # no run_config.json: nothing to compare with
    (out / "notes.txt").write_text("mine")
    with pytest.raises(pt.InputError, match="no run_config.json"):
        pt.check_output_dir(out, wanted=None, chief=True)


# --- 2. Killed at a random moment, resumed ----------------------------------------------------------
KILL_RUN = ["--epochs", 4, "--steps-per-epoch", 6, "--batch-size", 4, "--checkpoint-every", 2, "--deterministic",
            *TINY]


def kill_moments(out):
    """The moments a kill may hit, each an event (a file the run writes, never removed once there):
    {name: event()}. Mid-epoch and epoch-end checkpoints, just after an epoch's history.csv row
    (before its samples, best export and checkpoint) and just after its samples picture."""
    def checkpoint_from(step):
        def event():
            found = [p.name[len("ckpt-"):-len(".index")] for p in (out / "checkpoints").glob("ckpt-*.index")]
            return any(int(s) >= step for s in found if s.isdigit())  # older ones are rotated away
        return event

    def history_rows(n):
        def event():
            try:
                return len((out / "history.csv").read_text().splitlines()) > n  # the header, then n rows
            except FileNotFoundError:
                return False
        return event

    moments = {f"checkpoint {k}": checkpoint_from(k) for k in range(2, 19, 2)}
    moments.update({f"history row {n}": history_rows(n) for n in (1, 2, 3)})
    moments.update({f"samples of epoch {n}": (lambda n=n: (out / "samples" / f"epoch_{n:03d}.png").exists())
                    for n in (1, 2, 3)})
    return moments


@pytest.fixture(scope="module")
def uninterrupted(events_h5, tmp_path_factory):
    """The reference: the same command, never interrupted (4 epochs of 6 steps)."""
    out = tmp_path_factory.mktemp("whole") / "run"
    proc = run_script("Pix2Pix_training.py", "--data", events_h5, "--output-dir", out, *KILL_RUN)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_a_random_moment_then_rerun_ends_with_the_uninterrupted_weights(events_h5, uninterrupted,
                                                                                   tmp_path, seed):
    whole = uninterrupted
    out = tmp_path / "run"
    args = ["--data", events_h5, "--output-dir", out, *KILL_RUN]
    moments = kill_moments(out)
    moment = sorted(moments)[np.random.default_rng(seed).integers(len(moments))]  # the seed picks the event
    proc = start_training(*args, env=own_tmpdir(tmp_path))  # a kill inside a .keras save leaves Keras' folder
    try:
        wait_for(proc, moments[moment], moment)  # event-driven: killed the moment it happens
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    left = newest_checkpoint(out / "checkpoints")

    rerun = run_script("Pix2Pix_training.py", *args)  # the same command again
    assert rerun.returncode == 0, rerun.stderr
    resumed = rerun.stdout.split("Resuming from ")[1].split(":")[0]
    if "is unreadable" not in rerun.stderr:  # killed during a save: the one before is used (and said so)
        assert Path(resumed) == left, (resumed, left)
    assert "Done: 4 epochs, 24 steps" in rerun.stdout
    # Every generator and discriminator weight, optimizer slot and counter: bit for bit the same.
    assert_same_tensors(checkpoint_tensors(whole / "checkpoints" / "ckpt-24"),
                        checkpoint_tensors(out / "checkpoints" / "ckpt-24"))


@pytest.mark.slow
def test_sigterm_from_a_batch_system_saves_a_checkpoint_and_the_rerun_resumes(events_h5, tmp_path):
    out = tmp_path / "run"
    args = ["--data", events_h5, "--output-dir", out, "--epochs", 30, "--batch-size", 4, "--checkpoint-every", 8, *TINY]
    proc = start_training(*args)
    # Event-driven: the signal goes in as soon as the mid-epoch-2 checkpoint (step 8 of 6 per epoch) is there.
    wait_for(proc, lambda: (out / "checkpoints" / "ckpt-8.index").exists(), "the checkpoint of step 8")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    stopped = int(err.split("Stopped at step ")[1].split(";")[0])
    assert stopped >= 8 and (out / "checkpoints" / f"ckpt-{stopped}.index").exists()  # mid-epoch 2 or later
    rerun = run_script("Pix2Pix_training.py", *args[:4], "--epochs", stopped // 6 + 1, *args[6:])
    assert rerun.returncode == 0, rerun.stderr
    assert f"Resuming from {out / 'checkpoints' / f'ckpt-{stopped}'}: step {stopped}" in rerun.stdout


# --- 3. The bad-input sweep ----------------------------------------------------------------------------
PNG_KINDS = {  # how the PNG is spoiled -> what the one-line error must say
    "truncated PNG": "not a readable PNG",
    "zero-byte PNG": "not a readable PNG",
    "wrong size": "expected 112x36",
    "16-bit PNG": "more than 8 bits",
    "RGBA with transparency": "transparent",
    "JPEG renamed .png": "not a PNG",
    "animated PNG": "animated PNG of 2 frames",
}
H5_KINDS = {
    "missing HDF5 file": "not found",
    "zero-byte HDF5": "not a readable HDF5",
    "truncated HDF5": "not a readable HDF5",
    "HDF5 without the datasets": "no 'raw' dataset",
    "datasets of wrong shape": "shape",
    "datasets of wrong dtype": "dtype",
}
PLACE_KINDS = {  # where an output is asked for
    "output folder missing": "missing",
    "output folder is a file": "afile",
    "output folder not writable": "not writable",
}


def read_only_folders_refuse_writes(tmp):
    """Whether a chmod 555 folder really refuses this process's writes (not for root, as the tests run here)."""
    probe = tmp / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "x").write_text("x")
        return False
    except PermissionError:
        return True
    finally:
        probe.chmod(0o755)
        shutil.rmtree(probe)


def spoil_png(path, kind):
    """Replace a good event PNG by a bad one of the given kind."""
    good = path.read_bytes()
    if kind == "truncated PNG":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "zero-byte PNG":
        path.write_bytes(b"")
    elif kind == "wrong size":  # 36 wide, 112 high: the transposed image
        Image.new("RGB", (ei.LAYERS, ei.WIRES)).save(path, format="PNG")
    elif kind == "16-bit PNG":
        Image.fromarray(np.full((ei.LAYERS, ei.WIRES), 40000, np.uint16)).save(path, format="PNG")
    elif kind == "RGBA with transparency":
        rgba = np.zeros((ei.LAYERS, ei.WIRES, 4), np.uint8)
        rgba[..., 3] = 255
        rgba[5, 7, 3] = 0
        Image.fromarray(rgba, "RGBA").save(path, format="PNG")
    elif kind == "JPEG renamed .png":
        Image.new("RGB", (ei.WIRES, ei.LAYERS)).save(path, format="JPEG")
    elif kind == "animated PNG":  # the good event and a blank frame
        with Image.open(path) as im:
            first = im.convert("RGB")
        first.save(path, format="PNG", save_all=True, append_images=[Image.new("RGB", (ei.WIRES, ei.LAYERS))])


def write_bad_h5(path, kind, good):
    """A bad HDF5 file of the given kind at path (none for the missing one)."""
    if kind == "zero-byte HDF5":
        path.write_bytes(b"")
    elif kind == "truncated HDF5":  # a copy cut short
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "HDF5 without the datasets":
        with h5py.File(path, "w") as f:
            f.create_dataset("images", data=np.zeros((16, 128, 128, 3), np.uint8))
    elif kind == "datasets of wrong shape":  # the unpadded events
        with h5py.File(path, "w") as f:
            for key in ("raw", "truth"):
                f.create_dataset(key, data=np.zeros((16, ei.LAYERS, ei.WIRES, 3), np.uint8))
    elif kind == "datasets of wrong dtype":
        with h5py.File(path, "w") as f:
            for key in ("raw", "truth"):
                f.create_dataset(key, data=np.zeros((16, 128, 128, 3), np.float32))
    return path


def read_only_mount():
    """A folder on a file system mounted read-only (no write for root either), or None."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 3 and "ro" in fields[3].split(",") and Path(fields[1]).is_dir() \
                and not os.access(fields[1], os.W_OK):
            return Path(fields[1])
    return None


def output_place(tmp, kind, name):
    """An output path of the given bad kind, named name.

    "not writable": a chmod 555 folder, or, where that does not stop this process (root), a folder of a
    read-only file system: the case runs either way."""
    if kind == "output folder missing":
        return tmp / "missing" / name
    if kind == "output folder is a file":
        (tmp / "afile").write_text("a regular file")
        return tmp / "afile" / name
    if not read_only_folders_refuse_writes(tmp):
        return read_only_mount() / name
    folder = tmp / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / name


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Good inputs to copy and spoil: 4 PNG pairs, an HDF5 file of 16 pairs, a tiny generator."""
    import keras

    root = tmp_path_factory.mktemp("good")
    raw, truth = make_events.generate_events(4, seed=5)
    for folder, images in (("raw", raw), ("truth", truth)):
        (root / folder).mkdir()
        for i, image in enumerate(images):
            ei.write_event_png(root / folder / f"event_{i:04d}.png", image)
    write_events_h5(root / "good.h5", 16, chunk=4)
    data_management.load_split(root / "good.h5")  # good.split.npz, copied with it: no case writes one
    inp = keras.Input((128, 128, 3))
    keras.Model(inp, keras.layers.Conv2D(3, 1, activation="sigmoid")(inp)).save(root / "model.keras")
    (root / "model.json").write_text(json.dumps({"threshold": 0.5}))
    return root


def setup_case(script, kind, tmp, good):
    """Lay out one case's files in tmp; return (script arguments, words the error line must hold)."""
    def copy(*names):
        for name in names:
            (shutil.copytree if (good / name).is_dir() else shutil.copy)(good / name, tmp / name)
            if name == "good.h5":
                shutil.copy(good / "good.split.npz", tmp / "good.split.npz")

    def bad_h5():
        return write_bad_h5(tmp / "bad.h5", kind, good / "good.h5")

    model = ["--model", tmp / "model.keras"]
    if script == "Pix2Pix_data.py":
        copy("raw", "truth")
        args = ["--raw-dir", tmp / "raw", "--truth-dir", tmp / "truth", "--output", tmp / "pairs.h5"]
        if kind in PNG_KINDS:
            spoil_png(tmp / "raw" / "event_0002.png", kind)
            return args, ["event_0002.png", PNG_KINDS[kind]]
        if kind == "names differing only in case":
            (tmp / "truth" / "event_0001.png").rename(tmp / "truth" / "Event_0001.png")
            return args, ["event_0001.png", "differs only in case"]
        if kind == "unpaired file":
            (tmp / "truth" / "event_0003.png").unlink()
            return args, ["event_0003.png", "no truth file"]
        if kind == "missing folder":
            return ["--raw-dir", tmp / "nope", *args[2:]], ["nope", "does not exist"]
        if kind in PLACE_KINDS:
            return [*args[:-1], output_place(tmp, kind, "pairs.h5")], ["pairs.h5", PLACE_KINDS[kind]]
        return ["--merge", bad_h5(), "--output", tmp / "merged.h5"], ["bad.h5"]  # an HDF5 that is not a part
    if script == "data_management.py":
        return ["--data", bad_h5(), "--no-timing"], ["bad.h5", H5_KINDS[kind]]
    if script == "baselines.py":
        if kind in PLACE_KINDS:  # the folder the trained CAE is cached in (missing, a file, read-only)
            copy("good.h5")
            cache = output_place(tmp, kind, "cae").parent
            args = ["--data", tmp / "good.h5", "--methods", "cae", "--cae-cache", cache]
            return args, [cache.name, PLACE_KINDS[kind]]
        return ["--data", bad_h5(), "--methods", "snr"], ["bad.h5", H5_KINDS[kind]]
    if script == "Pix2Pix_training.py":
        run = ["--epochs", 1, "--batch-size", 4, *TINY]
        if kind in H5_KINDS:
            return ["--data", bad_h5(), "--output-dir", tmp / "run", *run], ["bad.h5", H5_KINDS[kind]]
        copy("good.h5")
        if kind == "output folder is a file":
            (tmp / "run").write_text("a regular file")
            return ["--data", tmp / "good.h5", "--output-dir", tmp / "run", *run], ["run", "not a folder"]
        where = output_place(tmp, kind, "run")
        return ["--data", tmp / "good.h5", "--output-dir", where, *run], [str(where.parent.name), PLACE_KINDS[kind]]
    if script == "make_events.py":
        args = ["-n", 2, "--workers", 1]
        if kind == "output is a file":
            (tmp / "events").write_text("a regular file")
            return ["--output", tmp / "events", *args], ["events", "not a folder"]
        if kind == "preview in a missing folder":
            return ["--output", tmp / "events", "--preview", tmp / "missing" / "p.png", *args], ["p.png", "missing"]
        return ["--output", output_place(tmp, kind, "events"), *args], ["events", PLACE_KINDS[kind]]
    # Pix2Pix_denoise.py
    copy("model.keras", "model.json")
    png_job = [*model, "--input-dir", tmp / "raw", "--output-dir", tmp / "out"]
    if kind in PNG_KINDS:
        copy("raw")
        spoil_png(tmp / "raw" / "event_0002.png", kind)
        return png_job, ["event_0002.png", PNG_KINDS[kind]]
    if kind in ("names differing only in case", "unpaired file"):
        copy("raw", "truth")
        if kind == "unpaired file":
            (tmp / "truth" / "event_0001.png").unlink()
        else:
            (tmp / "truth" / "event_0001.png").rename(tmp / "truth" / "Event_0001.png")
        return [*png_job, "--evaluate", "--truth-dir", tmp / "truth"], ["event_0001.png", "not found"]
    if kind == "missing folder":
        return [*model, "--input-dir", tmp / "nope", "--output-dir", tmp / "out"], ["nope", "does not exist"]
    if kind in H5_KINDS:
        return [*model, "--data", bad_h5()], ["bad.h5", H5_KINDS[kind]]
    if kind == "output is a file":
        copy("raw")
        (tmp / "out").write_text("a regular file")
        return png_job, ["out", "not a folder"]
    if kind.startswith("PNG "):  # "PNG output folder ..."
        copy("raw")
        where = output_place(tmp, kind[4:], "out")
        return [*png_job[:-1], where], [where.parent.name, PLACE_KINDS[kind[4:]]]
    if kind.startswith("HDF5 "):
        copy("good.h5")
        where = output_place(tmp, kind[5:], "den.h5")
        return [*model, "--data", tmp / "good.h5", "--output", where], ["den.h5", PLACE_KINDS[kind[5:]]]
    copy("raw")
    if kind == "model file that is not a model":
        (tmp / "model.keras").write_bytes(b"these are not the weights you are looking for\n")
        return png_job, ["model.keras", "not a Keras model file"]
    if kind == "zip that is not a model":
        shutil.make_archive(str(tmp / "model"), "zip", tmp / "raw")
        (tmp / "model.zip").replace(tmp / "model.keras")
        return png_job, ["model.keras", "cannot load"]
    if kind == "data file as the model":
        copy("good.h5")
        return (["--model", tmp / "good.h5", *png_job[2:], "--threshold", 0.5],
                ["good.h5", "not a .keras or .onnx model"])
    assert kind == "unreadable model sidecar"
    (tmp / "model.json").write_text("{threshold: 0.5")
    return png_job, ["model.json", "sidecar"]


CASES = (
    [("Pix2Pix_data.py", k) for k in (*PNG_KINDS, "names differing only in case", "unpaired file", "missing folder",
                                       *PLACE_KINDS, "missing HDF5 file", "zero-byte HDF5", "truncated HDF5",
                                       "HDF5 without the datasets")]
    + [("data_management.py", k) for k in H5_KINDS]
    + [("baselines.py", k) for k in (*H5_KINDS, *PLACE_KINDS)]
    + [("Pix2Pix_training.py", k) for k in (*H5_KINDS, "output folder is a file", "output folder not writable")]
    + [("make_events.py", k) for k in (*PLACE_KINDS, "output is a file", "preview in a missing folder")]
    + [("Pix2Pix_denoise.py", k) for k in (*PNG_KINDS, "names differing only in case", "unpaired file",
                                           "missing folder", *H5_KINDS, "output is a file",
                                           *(f"PNG {p}" for p in PLACE_KINDS), *(f"HDF5 {p}" for p in PLACE_KINDS),
                                           "model file that is not a model", "zip that is not a model",
                                           "data file as the model", "unreadable model sidecar")]
)


def tree_state(root):
    """Every file and folder under root: {relative path: (size, mtime)} (folders: None)."""
    return {str(p.relative_to(root)): None if p.is_dir() else (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in root.rglob("*")}  # lstat: a link that leads nowhere is a file here too


@pytest.mark.slow
@pytest.mark.parametrize("script, kind", CASES, ids=[f"{s[:-3]}-{k.replace(' ', '_')}" for s, k in CASES])
def test_every_bad_input_is_one_line_exit_2_and_touches_nothing(script, kind, good, tmp_path):
    if "not writable" in kind and not read_only_folders_refuse_writes(tmp_path) and read_only_mount() is None:
        pytest.skip("this process writes into read-only folders (root) and no read-only file system is mounted")
    tmp = tmp_path / "case"
    tmp.mkdir()
    args, words = setup_case(script, kind, tmp, good)
    before = tree_state(tmp)
    try:
        proc = run_script(script, *args, timeout=300)
    finally:
        for folder in tmp.rglob("readonly"):
            folder.chmod(0o755)
    assert_one_line_error(proc, *words)
    assert tree_state(tmp) == before, "files changed or left behind"


# --- 4. More bad inputs (issue 15): outputs that alias inputs, folders where files go, empty paths,
# names too long, non-finite and out-of-range flags, damaged caches, through the real scripts ----------------
LONG = "x" * 250 + ".h5"  # with the temporary name's additions, longer than a file name may be
NEW_CASES = {  # case -> (script, words the one-line error must hold); the arguments: new_case_args
    "output is a raw PNG": ("Pix2Pix_data.py", ["event_0001.png", "input"]),
    "output is a truth PNG": ("Pix2Pix_data.py", ["event_0002.png", "input"]),
    "output inside the raw folder": ("Pix2Pix_data.py", ["inside the input"]),
    "output links to a raw PNG": ("Pix2Pix_data.py", ["link.h5", "input"]),
    "output is the raw folder": ("Pix2Pix_data.py", ["raw", "input folder"]),
    "output folder holds the inputs": ("Pix2Pix_data.py", ["holds the input"]),
    "output is an existing folder": ("Pix2Pix_data.py", ["pairs.h5", "is a folder"]),
    "skipped list is an existing folder": ("Pix2Pix_data.py", ["pairs.h5.skipped.txt", "is a folder"]),
    "empty output": ("Pix2Pix_data.py", ["empty"]),
    "output name too long": ("Pix2Pix_data.py", ["too long"]),
    "output below a file": ("Pix2Pix_data.py", ["afile", "is a file"]),
    "merge output is a part": ("Pix2Pix_data.py", ["part.h5", "input file"]),
    "--workers nan": ("Pix2Pix_data.py", ["--workers", "nan"]),
    "--chunk-events inf": ("Pix2Pix_data.py", ["--chunk-events"]),
    "--compression-level -1": ("Pix2Pix_data.py", ["--compression-level", "negative"]),
    "empty positional": ("data_management.py", ["empty"]),
    "empty --data": ("data_management.py", ["empty"]),
    "--test-fraction nan": ("data_management.py", ["--test-fraction", "finite"]),
    "--memory-budget-mb inf": ("data_management.py", ["--memory-budget-mb", "finite"]),
    "baselines empty --data": ("baselines.py", ["empty"]),
    "CAE cache is a file": ("baselines.py", ["afile", "is a file"]),
    "CAE cache is the data file": ("baselines.py", ["good.h5", "is a file"]),
    "truncated CAE cache file": ("baselines.py", ["unreadable CAE cache file"]),
    "--snr-max-missing nan": ("baselines.py", ["--snr-max-missing", "not an integer"]),
    "--cae-threshold inf": ("baselines.py", ["--cae-threshold", "finite"]),
    "output-dir inside the input": ("Pix2Pix_denoise.py", ["inside the input"]),
    "output-dir is the truth folder": ("Pix2Pix_denoise.py", ["is the input folder"]),
    "output-dir holds the input": ("Pix2Pix_denoise.py", ["holds the input"]),
    "output is the data file": ("Pix2Pix_denoise.py", ["good.h5", "input file"]),
    "output is the model": ("Pix2Pix_denoise.py", ["model.keras", "input file"]),
    "report over the model sidecar": ("Pix2Pix_denoise.py", ["model.json", "input file"]),
    "report JSON is a folder": ("Pix2Pix_denoise.py", ["rep.json", "is a folder"]),
    "report inside the output folder": ("Pix2Pix_denoise.py", ["inside the denoised output folder"]),
    "HDF5 output is a folder": ("Pix2Pix_denoise.py", ["den.h5", "is a folder"]),
    "denoise empty --output": ("Pix2Pix_denoise.py", ["empty"]),
    "--sweep-thresholds 2": ("Pix2Pix_denoise.py", ["--sweep-thresholds"]),
    "--sweep-thresholds nan": ("Pix2Pix_denoise.py", ["--sweep-thresholds"]),
    "--threshold nan": ("Pix2Pix_denoise.py", ["--threshold", "finite"]),
    "--batch-size inf": ("Pix2Pix_denoise.py", ["--batch-size"]),
    "--cae-cache is a file": ("Pix2Pix_denoise.py", ["afile", "is a file"]),
    "preview is an existing folder": ("make_events.py", ["prev.png", "is a folder"]),
    "preview below a file": ("make_events.py", ["afile", "is a file"]),
    "events in a folder that refuses new names": ("make_events.py", ["/proc", "not writable"]),
    "run folder in a folder that refuses new names": ("Pix2Pix_training.py", ["/proc", "not writable"]),
    "output is a link that leads nowhere": ("Pix2Pix_data.py", ["nowhere.h5", "symbolic link", "leads nowhere"]),
    "run folder is a link that leads nowhere": ("Pix2Pix_training.py", ["nowhere.h5", "symbolic link"]),
    "output is a loop of links": ("Pix2Pix_denoise.py", ["loop.h5", "loop of links"]),
    "HIPO conversion's output is a loop of links": ("Pix2Pix_data.py", ["loop.h5", "loop of links"]),
    "--seed past 2**32": ("Pix2Pix_training.py", ["--seed", "too large for a seed"]),
    "--split-seed past 2**32": ("data_management.py", ["--split-seed", "too large for a seed"]),
    "CAE --seed past 2**32": ("baselines.py", ["--seed", "too large for a seed"]),
    "--lambda 0 without the GAN term": ("Pix2Pix_training.py", ["--lambda 0", "no loss"]),
    "width too large for the memory": ("Pix2Pix_training.py", ["out of memory", "--base-filters"]),
    "demo --tiny with a size of its own": ("demo.py", ["--tiny", "--epochs"]),
    "demo luminosity out of range": ("demo.py", ["luminosity 20", "outside"]),
}


def new_case_args(kind, tmp, good):
    """Lay out one new case's files in tmp; return the script's arguments."""
    for name in ("raw", "truth", "good.h5", "good.split.npz", "model.keras", "model.json"):
        (shutil.copytree if (good / name).is_dir() else shutil.copy)(good / name, tmp / name)
    (tmp / "afile").write_text("a regular file")
    (tmp / "link.h5").symlink_to(tmp / "raw" / "event_0001.png")
    (tmp / "nowhere.h5").symlink_to(tmp / "missing" / "x.h5")  # written through, it would make tmp/missing
    (tmp / "loop.h5").symlink_to(tmp / "loop.h5")
    pngs = ["--raw-dir", tmp / "raw", "--truth-dir", tmp / "truth"]
    over = "--overwrite"
    model = ["--model", tmp / "model.keras"]
    png_job = [*model, "--input-dir", tmp / "raw", over]
    evaluate = ["--evaluate", "--truth-dir", tmp / "truth"]
    train = ["--data", tmp / "good.h5", "--epochs", 1, "--batch-size", 4]
    if kind in ("output is an existing folder", "skipped list is an existing folder"):
        (tmp / ("pairs.h5" if kind == "output is an existing folder" else "pairs.h5.skipped.txt")).mkdir()
    if kind == "merge output is a part":
        shutil.copy(good / "good.h5", tmp / "part.h5")
    if kind == "report JSON is a folder":
        (tmp / "rep.json").mkdir()
    if kind == "preview is an existing folder":
        (tmp / "prev.png").mkdir()
    if kind == "HDF5 output is a folder":
        (tmp / "den.h5").mkdir()
    if kind == "truncated CAE cache file":
        import baselines

        (tmp / "cache").mkdir()
        path = baselines.cae_cache_path(tmp / "good.h5", tmp / "cache")
        path.write_bytes(b"PK\x03\x04" + bytes(500))  # the start of a zip, cut short
    return {
        "output is a raw PNG": [*pngs, "--output", tmp / "raw" / "event_0001.png", over],
        "output is a truth PNG": [*pngs, "--output", tmp / "truth" / "event_0002.png", over],
        "output inside the raw folder": [*pngs, "--output", tmp / "raw" / "pairs.h5"],
        "output links to a raw PNG": [*pngs, "--output", tmp / "link.h5", over],
        "output is the raw folder": [*pngs, "--output", tmp / "raw", over],
        "output folder holds the inputs": [*pngs, "--output", tmp, over],
        "output is an existing folder": [*pngs, "--output", tmp / "pairs.h5", over],
        "skipped list is an existing folder": [*pngs, "--output", tmp / "pairs.h5", over, "--skip-bad"],
        "empty output": [*pngs, "--output", "", over],
        "output name too long": [*pngs, "--output", tmp / LONG],
        "output below a file": [*pngs, "--output", tmp / "afile" / "sub" / "pairs.h5"],
        "merge output is a part": ["--merge", tmp / "part.h5", "--output", tmp / "part.h5", over],
        "--workers nan": [*pngs, "--output", tmp / "p.h5", "--workers", "nan"],
        "--chunk-events inf": [*pngs, "--output", tmp / "p.h5", "--chunk-events", "inf"],
        "--compression-level -1": [*pngs, "--output", tmp / "p.h5", "--compression-level", "-1"],
        "empty positional": ["", "--no-timing"],
        "empty --data": ["--data", "", "--no-timing"],
        "--test-fraction nan": ["--data", tmp / "good.h5", "--test-fraction", "nan", "--no-timing"],
        "--memory-budget-mb inf": ["--data", tmp / "good.h5", "--memory-budget-mb", "inf", "--no-timing"],
        "baselines empty --data": ["--data", "", "--methods", "snr"],
        "CAE cache is a file": ["--data", tmp / "good.h5", "--cae-cache", tmp / "afile"],
        "CAE cache is the data file": ["--data", tmp / "good.h5", "--cae-cache", tmp / "good.h5"],
        "truncated CAE cache file": ["--data", tmp / "good.h5", "--methods", "cae", "--cae-cache", tmp / "cache"],
        "--snr-max-missing nan": ["--data", tmp / "good.h5", "--snr-max-missing", "nan"],
        "--cae-threshold inf": ["--data", tmp / "good.h5", "--cae-threshold", "inf"],
        "output-dir inside the input": [*png_job, "--output-dir", tmp / "raw" / "den"],
        "output-dir is the truth folder": [*png_job, "--output-dir", tmp / "truth", *evaluate],
        "output-dir holds the input": [*png_job, "--output-dir", tmp],
        "output is the data file": [*model, "--data", tmp / "good.h5", "--output", tmp / "good.h5", over],
        "output is the model": [*model, "--data", tmp / "good.h5", "--output", tmp / "model.keras", over],
        "report over the model sidecar": [*png_job, "--output-dir", tmp / "o", *evaluate, "--report", tmp / "model"],
        "report JSON is a folder": [*png_job, "--output-dir", tmp / "o", *evaluate, "--report", tmp / "rep"],
        "report inside the output folder": [*png_job, "--output-dir", tmp / "o", *evaluate, "--report", tmp / "o/r"],
        "HDF5 output is a folder": [*model, "--data", tmp / "good.h5", "--output", tmp / "den.h5", over],
        "denoise empty --output": [*model, "--data", tmp / "good.h5", "--output", "", over],
        "--sweep-thresholds 2": [*png_job, "--output-dir", tmp / "o", *evaluate, "--sweep-thresholds", "0.5,2"],
        "--sweep-thresholds nan": [*png_job, "--output-dir", tmp / "o", *evaluate, "--sweep-thresholds", "nan"],
        "--threshold nan": [*png_job, "--output-dir", tmp / "o", "--threshold", "nan"],
        "--batch-size inf": [*png_job, "--output-dir", tmp / "o", "--batch-size", "inf"],
        "--cae-cache is a file": [*model, "--data", tmp / "good.h5", "--output", tmp / "d.h5", "--evaluate",
                                  "--baseline-cae", "--cae-cache", tmp / "afile"],
        "preview is an existing folder": ["--output", tmp / "ev", "-n", 5, "--preview", tmp / "prev.png"],
        "preview below a file": ["--output", tmp / "ev", "-n", 5, "--preview", tmp / "afile" / "prev.png"],
        "events in a folder that refuses new names": ["--output", "/proc/events", "-n", 5],  # /proc: root too
        "run folder in a folder that refuses new names": ["--data", tmp / "good.h5", "--output-dir", "/proc/run",
                                                          "--epochs", 1, "--batch-size", 4, *TINY],
        "output is a link that leads nowhere": [*pngs, "--output", tmp / "nowhere.h5"],
        "run folder is a link that leads nowhere": [*train, "--output-dir", tmp / "nowhere.h5", *TINY],
        "output is a loop of links": [*model, "--data", tmp / "good.h5", "--output", tmp / "loop.h5"],
        "HIPO conversion's output is a loop of links": ["--hipo", tmp / "good.h5", "--output", tmp / "loop.h5"],
        "--seed past 2**32": [*train, "--output-dir", tmp / "run", *TINY, "--seed", 2**32],
        "--split-seed past 2**32": ["--data", tmp / "good.h5", "--split-seed", 2**32, "--no-timing"],
        "CAE --seed past 2**32": ["--data", tmp / "good.h5", "--methods", "cae", "--seed", 2**32],
        "--lambda 0 without the GAN term": [*train, "--output-dir", tmp / "run", *TINY, "--lambda", 0,
                                            "--gan-weight", 0],
        "width too large for the memory": [*train, "--output-dir", tmp / "run", *TINY, "--base-filters", 100000],
        "demo --tiny with a size of its own": ["--tiny", "--epochs", 5, "--output-root", tmp / "demo"],
        "demo luminosity out of range": ["--luminosity", 20, "--output-root", tmp / "demo"],
    }[kind]


@pytest.mark.parametrize("script, limit, args", [
    ("make_events.py", 100, lambda out, good: ["--output", out / "ev", "-n", 300, "--workers", 2]),
    ("Pix2Pix_data.py", 2_000, lambda out, good: ["--raw-dir", good / "raw", "--truth-dir", good / "truth",
                                                  "--output", out / "p.h5", "--workers", 1]),
    ("Pix2Pix_training.py", 100_000, lambda out, good: ["--data", good / "good.h5", "--output-dir", out / "run",
                                                        "--base-filters", 4, "--batch-size", 4, "--epochs", 1,
                                                        "--steps-per-epoch", 2, "--validation-batches", 1]),
], ids=["make_events", "Pix2Pix_data", "Pix2Pix_training"])
def test_a_full_disk_is_one_line_exit_2_and_leaves_no_temporary(script, limit, args, good, tmp_path):
    """A full disk, as a file size limit makes it (writes past it fail with EFBIG as they would with ENOSPC):
    h5py crashed the process (a segfault, after two tracebacks), make_events and training ended in tracebacks."""
    import resource

    def small_files():  # in the child: writes past `limit` bytes of a file fail, SIGXFSZ ignored
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args(out, good))], capture_output=True,
                          text=True, cwd=ROOT, preexec_fn=small_files, timeout=600,
                          env=own_tmpdir(tmp_path))  # the failed .keras save leaves Keras' folder
    assert_one_line_error(proc, "no room to write", "File too large", "make room and run the same command again")
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".h5", ".keras")) or p.name == "ev"]


def test_the_readme_counts_the_sweeps_cases():
    """The README's Bad input line says how many cases the two sweeps hold: it counts these lists."""
    readme = (ROOT / "README.md").read_text()
    assert f"sweeps {len(CASES)} cases across the six scripts (" in readme and f"), {len(NEW_CASES)} more" in readme


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(NEW_CASES), ids=[k.replace(" ", "_") for k in NEW_CASES])
def test_more_bad_inputs_are_one_line_exit_2_and_touch_nothing(kind, good, tmp_path):
    script, words = NEW_CASES[kind]
    tmp = tmp_path / "case"
    tmp.mkdir()
    args = new_case_args(kind, tmp, good)
    before = tree_state(tmp)
    proc = run_script(script, *args, timeout=300)
    assert_one_line_error(proc, *words)
    assert tree_state(tmp) == before, "files changed or left behind"


CONCURRENT = ["Pix2Pix_data.py PNG pairs", "Pix2Pix_data.py merge", "Pix2Pix_denoise.py HDF5"]


def visible_files(root):
    """{path: bytes} of every file under root but the hidden temporaries of runs still writing."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


@pytest.mark.slow
@pytest.mark.parametrize("case", CONCURRENT)
def test_two_runs_at_once_never_replace_each_others_output(case, good, tmp_path):
    """Run A starts writing and is held (SIGSTOP) once its temporary file is there; run B writes the same
    output and finishes; A goes on: it must not replace B's output (no --overwrite): one line, exit 2, B's
    files byte for byte, A's temporary gone. Event-driven: no sleeps."""
    for name in ("raw", "truth", "good.h5", "good.split.npz", "model.keras", "model.json"):
        (shutil.copytree if (good / name).is_dir() else shutil.copy)(good / name, tmp_path / name)
    script, _ = case.split(" ", 1)
    out = tmp_path / "out.h5"
    args = {
        "Pix2Pix_data.py PNG pairs": ["--raw-dir", tmp_path / "raw", "--truth-dir", tmp_path / "truth", "--workers",
                                      1, "--chunk-events", 1, "--output", out],
        "Pix2Pix_data.py merge": ["--merge", tmp_path / "part.h5", "--copy", "--chunk-events", 1, "--output", out],
        "Pix2Pix_denoise.py HDF5": ["--model", tmp_path / "model.keras", "--data", tmp_path / "good.h5",
                                    "--output", out],
    }[case]
    for kind in ("raw", "truth"):  # 400 pairs: A cannot finish between its temporary's appearance and SIGSTOP
        for png in sorted((tmp_path / kind).glob("*.png")):
            for k in range(100):
                shutil.copy(png, png.with_name(f"{png.stem}_{k:03d}.png"))
    if case == "Pix2Pix_data.py merge":  # a part file of its own (a shard of 1)
        part = run_script("Pix2Pix_data.py", "--raw-dir", tmp_path / "raw", "--truth-dir", tmp_path / "truth",
                          "--shard", "1/1", "--output", tmp_path / "part.h5", "--workers", 1)
        assert part.returncode == 0, part.stderr

    def temporary():
        return any(p.name.startswith(".out.h5.") for p in tmp_path.iterdir())

    a = subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not temporary():
            assert a.poll() is None, a.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.002)
        a.send_signal(signal.SIGSTOP)
        assert not out.exists(), "A finished before it was held"
        b = run_script(script, *args, timeout=300)
        assert b.returncode == 0, b.stderr
        b_files = visible_files(tmp_path)
    finally:
        a.send_signal(signal.SIGCONT)
    _, err = a.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.strip()]
    assert a.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "out.h5" in lines[0] and "another run" in lines[0], lines
    assert visible_files(tmp_path) == b_files  # B's output byte for byte, nothing else changed
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "A left its temporary file"
