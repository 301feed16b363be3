"""worker_pools.py: a pool that a stop while it starts leaves whole, a dead worker cannot hang, and a stop in
its block does not wait on."""

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, own_tmpdir

import worker_pools
from script_utils import InputError

STOP_WHILE_THE_POOL_STARTS = """
import multiprocessing, os, signal, sys, threading
sys.path.insert(0, sys.argv[1])
import worker_pools


class StopNow:
    \"\"\"Pickled for each worker as it starts: a SIGTERM to the process arrives at the second one,
    when the first worker is already running.\"\"\"
    pickled = 0

    def __reduce__(self):
        StopNow.pickled += 1
        if StopNow.pickled == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return (int, ())


signal.signal(signal.SIGTERM, signal.default_int_handler)  # the scripts' SIGTERM: as Ctrl-C
# A thread that does not hold the signals back (as BLAS threads do): the kernel hands it the SIGTERM.
threading.Thread(target=threading.Event().wait, daemon=True).start()
try:
    with worker_pools.process_pool(2, print, (StopNow(),)):
        print("no interrupt")
except KeyboardInterrupt:
    print("interrupted;", len(multiprocessing.active_children()), "workers left")
"""


def test_a_stop_while_the_pool_starts_its_workers_waits_for_the_pool_and_leaves_no_worker():
    proc = subprocess.run([sys.executable, "-c", STOP_WHILE_THE_POOL_STARTS, str(ROOT)], capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "interrupted; 0 workers left", (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr


def started_then_waiting(marker):
    """A pool task that says it started (its process id in a file) and then waits a minute (module level: workers
    import it)."""
    import time

    marker.write_text(str(os.getpid()))
    time.sleep(60)


def test_a_task_whose_worker_died_is_an_input_error_not_a_wait_for_ever(tmp_path):
    """A worker that died (the out-of-memory killer's) stops the run in one line, soon (make_events and Pix2Pix_data
    hung for good on multiprocessing.Pool, which replaces the worker and never finishes its task); a live pool's
    results come as before."""
    started = None
    with pytest.raises(InputError, match="a worker process died"):
        with worker_pools.process_pool(2) as pool:
            assert pool.submit(sum, [1, 2]).result() == 3
            markers = [tmp_path / f"task{k}" for k in range(2)]
            busy = [pool.submit(started_then_waiting, m) for m in markers]  # a task on each worker
            deadline = time.monotonic() + 120
            while not all(m.exists() and m.read_text() for m in markers) and time.monotonic() < deadline:
                time.sleep(0.01)  # polling for the event: both tasks running
            for m in markers:
                os.kill(int(m.read_text()), 9)
            started = time.monotonic()
            busy[0].result()
    assert time.monotonic() - started < 30  # the other worker's minute is not waited for


def both_running(markers, proc=None):
    """Wait until both started_then_waiting tasks wrote their process ids; return them."""
    deadline = time.monotonic() + 120
    while not all(m.exists() and m.read_text() for m in markers):
        assert time.monotonic() < deadline and (proc is None or proc.poll() is None), "the tasks did not start"
        time.sleep(0.01)  # polling for the event: both tasks running
    return [int(m.read_text()) for m in markers]


BUSY_POOL = """
import os, signal, sys, time
from pathlib import Path
sys.path[:0] = sys.argv[1:3]
import test_worker_pools
import worker_pools

markers = [Path(sys.argv[3]) / f"task{k}" for k in range(2)]
try:
    with worker_pools.process_pool(2) as pool:
        for m in markers:
            pool.submit(test_worker_pools.started_then_waiting, m)
        pids = test_worker_pools.both_running(markers)
        if sys.argv[4] == "stop":
            os.kill(pids[0], signal.SIGSTOP)  # a worker stopped (Ctrl-Z'd, a debugger's)
            started = time.monotonic()
            raise KeyboardInterrupt
        time.sleep(120)  # until the test kills this process
except KeyboardInterrupt:
    print(f"left the block in {time.monotonic() - started:.1f} s")
"""


def busy_pool(tmp_path, what):
    """BUSY_POOL in a child process: a pool of two workers, each in a task of a minute."""
    return subprocess.Popen([sys.executable, "-c", BUSY_POOL, str(ROOT), str(ROOT / "tests"), str(tmp_path), what],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=own_tmpdir(tmp_path))  # a SIGKILL leaves the results folder


def test_a_stop_in_the_pools_block_kills_its_busy_workers_at_once_a_stopped_one_too(tmp_path):
    """Ctrl-C inside the block: the workers (which ignore Ctrl-C) are killed, not waited for through their task's
    minute (an ordinary pool shutdown waits for running tasks), one stopped by SIGSTOP too (a SIGTERM would wait
    for its SIGCONT)."""
    proc = busy_pool(tmp_path, "stop")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.startswith("left the block in "), (out, err[-2000:])
    assert float(out.split()[-2]) < 30


def test_workers_exit_when_the_main_process_is_killed(tmp_path):
    """A SIGKILL of the main process: its workers exit within seconds (concurrent.futures workers hold both ends of
    the pool's pipes and never learn of it: make_events' went on writing into the temporary folder, then slept for
    good)."""
    proc = busy_pool(tmp_path, "kill")
    workers = [psutil.Process(pid) for pid in both_running([tmp_path / f"task{k}" for k in range(2)], proc)]
    proc.kill()
    proc.wait()  # not communicate(): live workers would hold its pipes open
    gone, alive = psutil.wait_procs(workers, timeout=10)
    for worker in alive:
        worker.kill()
    assert alive == [], alive


def test_a_result_that_cannot_be_handed_over_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    """A full $TMPDIR (No space left on device) gave a traceback from the worker: now one line that names the
    folder and says to set TMPDIR (by hand, on a full 48 KB tmpfs: that line, exit 2)."""
    monkeypatch.setattr(worker_pools, "RESULTS_FOLDER", [str(tmp_path / "gone")])
    with pytest.raises(InputError, match=r"gone: a worker cannot hand its result over there .* set TMPDIR"):
        worker_pools.result_in_file(len, [1, 2])
    monkeypatch.setattr(worker_pools, "RESULTS_FOLDER", [str(tmp_path)])
    path = worker_pools.result_in_file(len, [1, 2])
    assert pickle.loads(Path(path).read_bytes()) == 2
