"""Small pieces every command-line script of the project shares.

- InputError: a bad input the user can fix. Scripts raise it with a one-line message
  naming the file and the reason; `run_main` turns it into that line on stderr and exit
  code 2, with no traceback. Imported as a library, it is an ordinary exception.
- atomic_output: write a file under a temporary name beside the target and rename it
  only when everything went well, so no half-written file ever carries the final name.
- progress: a tqdm bar that shows on a terminal and stays quiet in logs and tests.
- import_tensorflow: TensorFlow imported without its C++ start-up lines on stderr.
"""

import contextlib
import os
import secrets
import signal
import sys
from pathlib import Path

from tqdm import tqdm

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """A problem with the user's input or settings, reported as one line (exit code 2)."""


def run_main(main, argv=None):
    """Run main(argv) as a script: InputError -> one line on stderr and exit 2, Ctrl-C -> 130."""
    try:
        code = main(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def check_output_path(target, overwrite):
    """Refuse an output that exists (unless overwrite) or whose folder is missing or read-only."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: already exists (use --overwrite to replace it)")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{target}: folder {folder} is not writable")


@contextlib.contextmanager
def atomic_output(target, overwrite=False, suffix=""):
    """Yield a temporary path beside target; on success rename it to target, else delete it.

    The existing target (if any, and only with overwrite) is replaced in one rename, so an
    interrupted run leaves either the old file or the new one, never half of one.
    """
    target = Path(target)
    check_output_path(target, overwrite)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}.tmp")  # O_EXCL refuses a clash
    try:
        # Made inside the try: an interrupt (Ctrl-C, a batch system's SIGTERM) may fall on any line,
        # and the file must not outlive the run. Mode 0o666 less the umask, as for any new file.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # Ctrl-C and a batch system's stop


def start_pool(make_pool):
    """make_pool() (a multiprocessing pool) made with Ctrl-C and SIGTERM held back.

    An interrupt inside Pool() can lose its workers (a run was seen hanging past 60 s) or, with
    fork, run the main process's handler in a half-started worker. The workers inherit the held
    signals: their initializer calls release_stop_signals() once its own handlers are set. An
    interrupt that came meanwhile is raised here, after the pool is stopped.
    """
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    pool = None
    try:
        pool = make_pool()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if pool is not None:
            pool.terminate()
            pool.join()
        raise
    return pool


def release_stop_signals():
    """In a pool worker's initializer, after its handlers are set: let Ctrl-C and SIGTERM through."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def progress(iterable=None, **kwargs):
    """A tqdm progress bar, shown only when stderr is a terminal."""
    kwargs.setdefault("disable", not sys.stderr.isatty())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def import_tensorflow():
    """Import and return TensorFlow, keeping its C++ start-up lines off stderr.

    TensorFlow 2.21 prints oneDNN/absl lines from C++ at import whatever TF_CPP_MIN_LOG_LEVEL
    says; they would bury a bad input's one-line error. File descriptor 2 goes to /dev/null
    only for the import itself (a Python exception raised by it still shows).
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    return sys.modules["tensorflow"]
