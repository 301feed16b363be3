"""Worker processes for the scripts that spread work over cores (make_events.py, Pix2Pix_data.py,
and Pix2Pix_export.py's TorchScript tracing): a concurrent.futures process pool that an interrupt
cannot leave half made and a dead worker cannot hang.

    with process_pool(4) as pool:
        results = [task_result(f) for f in [submit_task(pool, work, task) for task in tasks]]

worker_pool(workers) is the same, or None for one worker (the work then runs in the main process), and
ordered_results(pool, work, tasks, in_flight) yields the results in task order with a bounded number in flight.
"""

import contextlib
import os
import pickle
import signal
import tempfile
import threading
import time
from collections import deque

from script_utils import STOP_SIGNALS, InputError, stop_signals_held

POOL_START = "spawn"  # worker processes start fresh: no threads, locks or open files of the caller
WORKER_DIED = "a worker process died (killed? out of memory?): the run stops, nothing written"
PARENT_POLL_SECONDS = 0.5  # how often a worker looks whether the main process still lives
RESULTS_FOLDER = []  # in a worker: the folder its results go to (_start_worker)


@contextlib.contextmanager
def process_pool(workers, initializer=None, initargs=()):
    """A concurrent.futures process pool of `workers` fresh processes, for a with block.

    Its workers start with Ctrl-C and SIGTERM held back (start_pool). A worker that dies (killed, the
    out-of-memory killer) breaks the pool: the task waited on raises, and the block ends in one line
    (an InputError). A block left by an exception (Ctrl-C: workers ignore it) kills the workers at
    once, a stopped (SIGSTOP) one too; the pool is then shut down, tasks not started cancelled (the pool
    notices dead workers without taking its queue's lock, which a worker may have died holding).
    """
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    try:
        results = tempfile.TemporaryDirectory(prefix="worker-results-")
    except OSError as e:
        raise InputError(f"no temporary folder for the workers' results ({e}): set TMPDIR") from None
    with results as folder:
        before = set(multiprocessing.active_children())
        pool = None
        try:
            pool = start_pool(workers, folder, initializer, initargs)  # in the try: a stop may land as it returns
            yield pool
        except BrokenProcessPool:
            raise InputError(WORKER_DIED) from None
        except BaseException:
            for process in set(multiprocessing.active_children()) - before:  # the pool's, a late-started one too
                process.kill()  # not waiting for the tasks they run (SIGKILL: a stopped worker too)
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def worker_pool(workers):
    """A pool of fresh worker processes (None for workers <= 1): they inherit no open file or thread."""
    if workers <= 1:
        yield None
        return
    with process_pool(workers) as pool:
        yield pool


def ordered_results(pool, func, tasks, in_flight):
    """func(task) for each task, in task order, on the pool; a bounded number of tasks in flight."""
    if pool is None:
        yield from map(func, tasks)
        return
    pending = deque()
    for task in tasks:
        pending.append(submit_task(pool, func, task))
        if len(pending) >= in_flight:
            yield task_result(pending.popleft())
    while pending:
        yield task_result(pending.popleft())


def submit_task(pool, func, *args):
    """pool.submit(func, *args) with the result handed over in a file (result_in_file); task_result reads it."""
    return pool.submit(result_in_file, func, *args)


def task_result(future):
    """The result of a submit_task task (its file deleted); a worker's exception is raised here."""
    with open(future.result(), "rb") as f:
        result = pickle.load(f)
    os.unlink(f.name)
    return result


def result_in_file(func, *args):
    """(In a worker) func(*args) pickled into a new file of RESULTS_FOLDER; returns the file's path.

    Only the short path crosses the pool's pipe, in one write: a worker that dies halfway through
    sending a result of megabytes (a SIGTERM to the whole process group) leaves a message cut short
    that hangs the pool's reader for good.
    """
    result = func(*args)
    try:
        fd, path = tempfile.mkstemp(dir=RESULTS_FOLDER[0])
        with os.fdopen(fd, "wb") as f:
            pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as e:
        raise InputError(f"{RESULTS_FOLDER[0]}: a worker cannot hand its result over there ({e.strerror}): "
                         "set TMPDIR to a folder with free space") from None
    return path


def start_pool(workers, results_folder, initializer=None, initargs=()):
    """A ProcessPoolExecutor with all its workers started, made with Ctrl-C and SIGTERM held back.

    An interrupt while a worker starts can lose it or cut its start-up data short (it then prints a
    traceback). So while the workers start, the stop signals only are noted: blocked in this thread
    (the workers inherit that and let them through once their own handlers are set: Ctrl-C is the
    main process's to handle, SIGTERM stops them) and, for one that another thread receives (BLAS
    threads do not block signals), recorded by a Python handler. A noted signal is raised again once
    the workers stand, with the caller's handlers back; if that raises, the pool is shut down first.
    Then initializer(*initargs) in each worker; its results go to files in results_folder (submit_task).
    A worker exits when the main process dies (a SIGKILL): a concurrent.futures worker holds both ends
    of the pool's pipes and would never learn of it.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = None
    try:
        with stop_signals_held(block=True):
            pool = ProcessPoolExecutor(workers, multiprocessing.get_context(POOL_START), _start_worker,
                                       (os.getpid(), results_folder, initializer, initargs))
            for _ in range(workers):
                pool.submit(int)  # the pool starts a process for each task while none is idle: every worker, now
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    return pool


def _start_worker(parent_pid, results_folder, initializer, initargs):
    """A pool worker's start-up (see start_pool)."""
    RESULTS_FOLDER[:] = [results_folder]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)  # the main process was killed: nobody will read our results

    threading.Thread(target=watch, daemon=True).start()
    if initializer is not None:
        initializer(*initargs)
