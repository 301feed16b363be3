"""Shared test setup: the project root on sys.path, TensorFlow kept quiet and small."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")

import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

# A suite started in the background by a non-interactive shell (`... &` in a CI script) inherits
# Ctrl-C ignored, and so would every script it starts: the tests that press Ctrl-C on a script need
# a terminal's default, which an exec'd child gets from a handler here.
signal.signal(signal.SIGINT, signal.default_int_handler)


def own_tmpdir(tmp_path):
    """os.environ with TMPDIR a folder in tmp_path, for a child the test kills or makes fail: what it leaves in
    its temporary folder (pool workers' results, Keras' .keras save folder, TF's autograph files) stays there."""
    (tmp_path / "tmpdir").mkdir(exist_ok=True)
    return dict(os.environ, TMPDIR=str(tmp_path / "tmpdir"))


def run_script(script, *args, timeout=600, env=None):
    """Run one of the project's scripts as a user would; return the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=full_env,
    )


def assert_one_line_error(proc, *words):
    """A bad input: exit code 2, one line on stderr naming the problem, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


def damage_record(data, where=0.5, size=64):
    """HIPO file bytes with `size` bytes inverted `where` (0..1) into the first event record's compressed data.

    Half-way, hipopybind's LZ4 decoding fails without an error and hands the events from the damage on
    as zero bytes; at the start (4 bytes), reading an event crashes the process."""
    header_words, user_bytes = (int.from_bytes(data[i:i + 4], "little") for i in (8, 24))
    record = header_words * 4 + user_bytes + (-user_bytes) % 4
    at = record + 56 + int((int.from_bytes(data[record:record + 4], "little") * 4 - 56) * where)
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + size]) + data[at + size:]


@pytest.fixture
def script():
    """The run_script helper, as a fixture."""
    return run_script


def wait_for(proc, event, what, timeout=300):
    """Wait, event-driven, until event() is true while proc runs (polled every 0.01 s).

    The test fails if proc ends first (with its stderr) or, as a guard against a hung run only,
    after timeout seconds; the timeout decides nothing about when the test acts.
    """
    deadline = time.monotonic() + timeout
    while not event():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}: {(err or '')[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.01)


def kill_a_pool_worker(cmd, cwd):
    """Start cmd (a script with --workers 2), SIGKILL one of its pool workers once its output's temporary exists
    (what the out-of-memory killer does) and return (the CompletedProcess-like proc, its stdout, its stderr)."""
    import psutil

    proc = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers = lambda: [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]  # noqa: E731
    wait_for(proc, lambda: len(workers()) == 2 and any(p.name.endswith(".tmp") for p in Path(cwd).iterdir()),
             "two pool workers writing")
    workers()[0].kill()
    out, err = proc.communicate(timeout=300)  # it hung for good before
    return proc, out, err
