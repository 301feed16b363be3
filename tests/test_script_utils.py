"""script_utils: the one rule for numeric flags, outputs that never replace another run's file, outputs
that are inputs, empty and folder paths."""

import argparse
import errno
import importlib
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT
from test_settings import SCRIPTS

from script_utils import InputError, atomic_output, can_write_in, check_not_an_input, check_output_path


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_numeric_flag_of_every_script_refuses_nan_inf_and_negatives(script):
    parser = importlib.import_module(script).build_parser()
    numeric = [a for a in parser._actions if a.option_strings and a.type in (float, int)]
    for action in numeric:
        convert = parser._registry_get("type", action.type, action.type)  # what argparse applies to the text
        for bad in ("nan", "inf", "-inf", "-1"):
            with pytest.raises(argparse.ArgumentTypeError):
                convert(bad)
        assert convert("0") == 0  # zero itself passes the common rule (scripts narrow it further)


def test_a_bad_number_is_a_one_line_input_error_naming_the_flag():
    import Pix2Pix_training

    for bad in ("nan", "inf", "-1"):
        with pytest.raises(InputError, match="--discriminator-lr"):
            Pix2Pix_training.build_parser().parse_args(["--discriminator-lr", bad])


def test_a_file_that_appears_while_writing_is_never_replaced(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(InputError, match="appeared while this run was writing"):
        with atomic_output(target) as tmp:
            tmp.write_text("ours")
            target.write_text("the other run's")  # another run finished first
    assert target.read_text() == "the other run's"
    assert os.listdir(tmp_path) == ["out.h5"]  # our temporary is gone


def test_a_folder_that_appears_while_writing_is_never_replaced(tmp_path):
    target = tmp_path / "events"
    with pytest.raises(InputError, match="appeared"):
        with atomic_output(target, folder=True) as tmp:
            (tmp / "a.png").write_text("ours")
            target.mkdir()
            (target / "b.png").write_text("theirs")
    assert os.listdir(target) == ["b.png"] and os.listdir(tmp_path) == ["events"]


def test_a_stop_between_the_folder_swaps_renames_waits_for_the_second(tmp_path, monkeypatch):
    """--overwrite of a folder renames twice (old out, new in); a Ctrl-C between them once left neither. Now
    the stop comes after the swap: the new folder in place, nothing hidden left beside it."""
    target = tmp_path / "events"
    target.mkdir()
    (target / "old.png").write_text("old")
    rename = os.replace

    def rename_then_ctrl_c(src, dst):
        rename(src, dst)
        os.kill(os.getpid(), signal.SIGINT)  # lands after the first rename

    monkeypatch.setattr(os, "replace", rename_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target, overwrite=True, folder=True) as tmp:
            (tmp / "new.png").write_text("new")
    assert os.listdir(target) == ["new.png"] and os.listdir(tmp_path) == ["events"]


def test_overwrite_replaces_and_plain_write_creates(tmp_path):
    target = tmp_path / "x.txt"
    with atomic_output(target) as tmp:
        tmp.write_text("one")
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_text("two")
    assert target.read_text() == "two" and os.listdir(tmp_path) == ["x.txt"]


def test_output_paths_that_are_empty_or_of_the_wrong_kind(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="empty"):
        check_output_path("", overwrite=True)
    with pytest.raises(InputError, match="is a folder"):
        check_output_path(tmp_path / "folder", overwrite=True)  # even with --overwrite
    with pytest.raises(InputError, match="not a folder"):
        check_output_path(tmp_path / "file", overwrite=True, folder=True)
    check_output_path(tmp_path / "folder", overwrite=True, folder=True)


def test_an_output_that_is_inside_or_links_to_an_input(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_text("x")
    os.symlink(raw / "a.png", tmp_path / "link.png")
    os.link(raw / "a.png", tmp_path / "hard.png")
    for output, inputs, word in ((raw / "a.png", [raw / "a.png"], "is the input file"),
                                 (raw / "new.h5", [raw], "inside the input folder"),
                                 (tmp_path / "link.png", [raw / "a.png", None], "is the input file"),
                                 (tmp_path / "hard.png", [raw / "a.png"], "is the input file"),  # a hard link
                                 (raw, [raw], "is the input folder"),
                                 (tmp_path, [raw / "a.png"], "holds the input"),  # replacing it deletes it
                                 ("", [raw], "empty")):
        with pytest.raises(InputError, match=word):
            check_not_an_input(output, inputs)
    check_not_an_input(tmp_path / "elsewhere.h5", [raw, None, ""])
    check_not_an_input(tmp_path / "raw2", [raw])  # a name that only starts like an input's


def test_output_names_too_long_or_below_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="too long"):
        check_output_path(tmp_path / ("x" * 240), overwrite=False)
    check_output_path(tmp_path / ("x" * 200), overwrite=False)
    with pytest.raises(InputError, match="afile is a file, not a folder"):
        check_output_path(tmp_path / "afile" / "sub" / "out.h5", overwrite=True)
    with pytest.raises(InputError, match=r"does not exist \(make it first: mkdir -p .*missing\)"):
        check_output_path(tmp_path / "missing" / "out.h5", overwrite=True)


def test_a_folder_that_refuses_new_names_is_not_writable_even_to_root(tmp_path):
    """/proc and /sys pass os.access(W_OK) for root but refuse every new name: an output there is refused
    before anything runs (it was a traceback at the end), and the probe leaves nothing in a writable folder."""
    assert can_write_in(tmp_path) and list(tmp_path.iterdir()) == []
    for folder in ("/proc", "/sys"):
        assert not can_write_in(folder)
        with pytest.raises(InputError, match=f"folder {folder} is not writable"):
            check_output_path(f"{folder}/out.h5", overwrite=False)
        with pytest.raises(InputError, match="is not writable"):
            with atomic_output(f"{folder}/events", folder=True):
                pass


CTRL_C_IN_A_FINALIZER = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import script_utils


class Finalizer:
    def __del__(self):  # a Ctrl-C that lands while a finalizer runs (TensorFlow's objects have many)
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))  # the handler runs here: its KeyboardInterrupt is dropped with the finalizer


def main(argv):
    if len(sys.argv) < 3:  # no output to keep back: run_main still exits 130
        Finalizer()
        print("went on", flush=True)
        return 0
    with script_utils.atomic_output(Path(sys.argv[2])) as tmp:
        tmp.write_text("half")
        Finalizer()
        print("went on", flush=True)
    print("wrote it")


script_utils.run_main(main)
"""


@pytest.mark.parametrize("writes", [True, False], ids=["with-an-output", "without"])
def test_a_ctrl_c_that_python_drops_in_a_finalizer_still_stops_the_run_and_keeps_no_output(tmp_path, writes):
    out = [str(tmp_path / "out.txt")] if writes else []
    proc = subprocess.run([sys.executable, "-c", CTRL_C_IN_A_FINALIZER, str(ROOT), *out], capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.split() == ["went", "on"]  # Python dropped the interrupt: the body went on ...
    assert proc.returncode == 130 and proc.stderr.strip() == "interrupted", proc.stderr  # ... but it counts
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary


STOPPED_WHILE_READING = """
import sys, threading
sys.path.insert(0, sys.argv[1])
import script_utils


def main(argv):
    tf = script_utils.import_tensorflow()
    reading = threading.Event()

    def pairs():
        yield 0
        reading.set()
        threading.Event().wait(2)  # a slow read, under way when the script stops
        yield 1

    def start_reading():
        batches = iter(tf.data.Dataset.from_generator(pairs, output_signature=tf.TensorSpec((), tf.int32)).prefetch(2))
        next(batches)
        garbage = [batches]
        garbage.append(garbage)  # a reference cycle (a traceback's frames make them): only the collector frees it

    start_reading()
    reading.wait()
    raise {"input-error": script_utils.InputError("pairs.h5: damaged HDF5 file"), "ctrl-c": KeyboardInterrupt(),
           "bug": RuntimeError("a bug")}[sys.argv[2]]


script_utils.run_main(main)
"""


@pytest.mark.parametrize("stop, code, line", [("input-error", 2, "error: pairs.h5: damaged HDF5 file"),
                                              ("ctrl-c", 130, "interrupted"), ("bug", 1, "RuntimeError: a bug")])
def test_a_script_stopped_while_tf_data_reads_exits(stop, code, line):
    """A tf.data reader left to Python's shutdown waited there for its generator, which the shutdown had stopped:
    the process hung after its error line (a damaged file, in training). run_main frees it before exiting."""
    proc = subprocess.run([sys.executable, "-c", STOPPED_WHILE_READING, str(ROOT), stop], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == code and proc.stderr.strip().splitlines()[-1] == line, proc.stderr


@pytest.mark.parametrize("failing", [(2,), (2, 3), ("race",)], ids=["new-refused", "old-not-back-either", "race"])
def test_a_folder_replaced_keeps_the_old_one_when_the_new_cannot_be_put_in_its_place(tmp_path, monkeypatch, failing):
    import script_utils

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.png").write_text("the user's")
    calls, real_replace = [], os.replace

    def some_fail(src, dst):  # 1: the old folder moved aside; 2: the new one in its place; 3: the old one back
        calls.append(dst)
        if len(calls) in failing:  # a lost mount, an I/O error
            raise OSError(errno.EIO, "input/output error")
        real_replace(src, dst)
        if failing == ("race",) and len(calls) == 1:  # another run's folder lands in between: 2 and 3 refused
            target.mkdir()
            (target / "theirs.png").write_text("another run's")

    monkeypatch.setattr(script_utils.os, "replace", some_fail)
    with pytest.raises((OSError, InputError)) as raised, \
            script_utils.atomic_output(target, overwrite=True, folder=True) as tmp:
        (tmp / "new.png").write_text("new")
    if failing == (2,):  # put back: no temporary, no hidden old folder left
        assert [p.name for p in target.iterdir()] == ["old.png"] and (target / "old.png").read_text() == "the user's"
        assert [p.name for p in tmp_path.iterdir()] == ["out"]
    else:  # the old folder is all there is: kept where it was moved, and the line says where
        kept = list(tmp_path.rglob("old.png"))
        assert len(kept) == 1 and kept[0].read_text() == "the user's" and kept[0].parent != target
        assert [p.name for p in target.iterdir()] == ["theirs.png"] if failing == ("race",) else not target.exists()
        assert isinstance(raised.value, InputError) and f"old content is kept in {kept[0].parent}" in str(raised.value)


def test_a_script_runs_with_its_stdout_and_stderr_closed(tmp_path):
    """`script >&- 2>&-`: Python's sys.stdout and sys.stderr are None (the progress bar and TensorFlow's quiet
    import failed on it)."""
    script = f"{sys.executable} {ROOT / 'make_events.py'} --output {tmp_path / 'ev'} -n 5 --workers 1 >&- 2>&-"
    assert subprocess.run(["bash", "-c", script], timeout=120).returncode == 0
    assert len(list((tmp_path / "ev" / "raw").iterdir())) == 5
    for closed in ("2>&-", "<&- 2>&-"):  # with stdin closed too, /dev/null for stderr took descriptor 0
        proc = subprocess.run(["bash", "-c", f"{sys.executable} {ROOT / 'Pix2Pix_training.py'} --help {closed}"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "usage: Pix2Pix_training.py" in proc.stdout, closed
