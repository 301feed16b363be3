"""Small pieces every command-line script of the project shares.

- InputError, run_main, ArgumentParser: a bad input or setting is one line on stderr and
  exit code 2, with no traceback (imported as a library, InputError is an ordinary exception).
- warn: the one way a script prints a warning (run_main prints Python warnings through it too).
- atomic_output: every file and folder the project writes goes through it.
- run_main treats SIGTERM as Ctrl-C; stop_signals_held keeps a stop from cutting a step in two.
- progress: a tqdm bar that shows on a terminal and stays quiet in logs and tests.
- import_tensorflow / import_keras: TensorFlow and Keras without their C++ start-up lines.
"""

import argparse
import contextlib
import ctypes
import errno
import functools
import gc
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from pathlib import Path

from tqdm import tqdm

EXIT_BAD_INPUT = 2
AT_FDCWD, RENAME_NOREPLACE = -100, 1  # renameat2(2): paths relative to the working folder; refuse to replace
NAME_MAX = 255  # bytes in one file name (Linux filesystems)
SEED_LIMIT = 2**32  # seeds numpy, scikit-learn and Keras all take are below this
TEMP_NAME_EXTRA = 40  # what atomic_output's temporary name adds: ".", ".<12 hex>", a suffix, ".tmp", an ending


def open_closed_streams():
    """A descriptor closed when the script started (`<&-`, `>&-`, `2>&-`) gets /dev/null, else the next file opened
    would take its number (and a child's or a C library's output would land in it); Python's stream of it, None
    (which the progress bar and TensorFlow's quiet import failed on), becomes that /dev/null."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", closefd=False))


open_closed_streams()  # at import, before anything writes


class InputError(Exception):
    """A problem with the user's input or settings, reported as one line (exit code 2)."""


def run_main(main, argv=None):
    """Run main(argv) as a script: InputError -> one line on stderr and exit 2, Ctrl-C or a batch system's
    SIGTERM -> 130 with nothing half written (also one that Python dropped: note_dropped_interrupt), a bug -> its
    traceback and 1, each with the run's objects freed first, a Python warning -> warn's one line. Output piped
    to a reader that has gone (`script | head`) is dropped, the run goes on."""
    INTERRUPTED.clear()
    sys.unraisablehook = note_dropped_interrupt
    sys.stdout, sys.stderr = (s if isinstance(s, ReaderMayLeave) else ReaderMayLeave(s)
                              for s in (sys.stdout, sys.stderr))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: atomic_output keeps nothing
    try:
        with warnings_as_lines():
            code = main(argv)
        check_interrupted()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        if (full := disk_full(exc)) is not None:
            print(f"error: no room to write{f' {full.filename}' if full.filename else ''}: {os.strerror(full.errno)}; "
                  "make room and run the same command again", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(EXIT_BAD_INPUT)  # not Python's shutdown: HDF5, left with a failed write, can crash in it
        traceback.print_exc()  # a bug: as Python would print it
        code = 1
    gc.collect()  # a stopped run's objects (tf.data iterators) freed now: in Python's shutdown they can hang it
    sys.exit(code or 0)


class ReaderMayLeave:
    """stdout or stderr whose lines go to /dev/null once its pipe's reader has gone (`script | head`), not a crash."""

    def __init__(self, stream):
        self.stream = stream

    def quietly(self, call, *args):
        try:
            call(*args)
        except BrokenPipeError:  # from now on the stream's descriptor is /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def write(self, text):
        self.quietly(self.stream.write, text)
        return len(text)

    def flush(self):
        self.quietly(self.stream.flush)

    def __getattr__(self, name):  # fileno, isatty, encoding, ...: the stream's own
        return getattr(self.stream, name)


DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # no space left, over quota, over the file size limit


def disk_full(exc):
    """The OSError in exc's chain (its causes and contexts) that says the disk is full, else None: a library
    that fails on a full disk often fails again cleaning up (h5py's close after its failed write)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


INTERRUPTED = []  # Ctrl-Cs whose KeyboardInterrupt Python dropped (note_dropped_interrupt)


def note_dropped_interrupt(unraisable):
    """run_main's sys.unraisablehook. A Ctrl-C (or SIGTERM, where a script makes it one) that lands while a
    __del__ or a garbage-collector callback runs raises KeyboardInterrupt there, and Python drops it with a
    traceback; TensorFlow's objects run such code often. It is noted instead, so that atomic_output keeps
    nothing and run_main still exits 130. A full disk's error (h5py's objects fail again as they are freed) is
    dropped: run_main says it. Anything else goes to Python's own hook."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        INTERRUPTED.append(unraisable.exc_type)
    elif disk_full(unraisable.exc_value) is None:  # a full disk's: said once, by run_main
        sys.__unraisablehook__(unraisable)


def check_interrupted():
    """Raise the KeyboardInterrupt of a Ctrl-C that Python dropped (note_dropped_interrupt), if there was one."""
    if INTERRUPTED:
        raise KeyboardInterrupt


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are the project's one-line InputError (exit 2), not a usage dump.

    One rule for every numeric flag of every script: a value given as `type=float` or `type=int`
    must be a finite number, 0 or more (nan, inf and negative numbers are refused before any
    work); scripts add their narrower ranges. The description keeps its line breaks."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        for kind in (float, int):  # argparse looks types up here, for the parser and its groups
            self.register("type", kind, setting_number(kind))

    def error(self, message):
        raise InputError(f"{self.prog}: {message}")


def setting_number(kind):
    """argparse type: a finite number of this kind (float or int), not negative."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text} must not be negative")
        return value
    parse.__name__ = kind.__name__
    return parse


def seed_number(text):
    """argparse type: a seed that numpy, scikit-learn and Keras all take (an integer, 0 to 2**32 - 1)."""
    value = setting_number(int)(text)
    if value >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{text} is too large for a seed (at most {SEED_LIMIT - 1})")
    return value


def number_list(kind):
    """argparse type: '0,10,20' -> (0, 10, 20), increasing."""
    def parse(text):
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated {kind.__name__} values") from None
        if not all(math.isfinite(v) and v >= 0 for v in values):  # the one rule of every numeric flag
            raise argparse.ArgumentTypeError(f"{text!r}: every value must be a finite number, 0 or more")
        if list(values) != sorted(set(values)):
            raise argparse.ArgumentTypeError(f"{text!r}: values must increase")
        return values
    return parse


def json_ready(obj):
    """obj with NaN/inf -> None and numpy values -> Python ones: strict JSON that every reader takes."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # a numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def raised_input_error(message):
    """The InputError that code run inside a library (a tf.data generator) raised, out of the library's error
    message around it; None if there is none."""
    lines = [line.split("InputError: ", 1)[1] for line in message.splitlines() if "InputError: " in line]
    return InputError(lines[0]) if lines else None


def warn(message):
    """A warning line on stderr: the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def warnings_as_lines():
    """Inside: a Python warning (data_management's SplitChangedWarning, a library's) is printed as warn's
    one line, without the file, line and source that Python adds."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_, **__: warn(message)
        yield


def check_output_path(target, overwrite, folder=False):
    """Refuse an output path that is empty, exists (unless overwrite), is a folder where a file is
    written (or a file where a folder is), has a name too long to write, or whose folder is
    missing, a file or read-only."""
    if not str(target).strip():
        raise InputError("an output path is empty")
    target = Path(target)
    check_not_a_broken_link(target)
    if target.is_dir() and not folder:
        raise InputError(f"{target}: is a folder, not a file")
    if folder and target.exists() and not target.is_dir():
        raise InputError(f"{target}: exists and is not a folder")
    if target.exists() and not overwrite:
        raise InputError(f"{target}: already exists (use --overwrite to replace it)")
    if len(os.fsencode(target.name)) + TEMP_NAME_EXTRA > NAME_MAX:
        raise InputError(f"{target.name[:40]}...: the output's file name is too long to write "
                         f"(at most {NAME_MAX - TEMP_NAME_EXTRA} bytes)")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        above = next((a for a in (parent, *parent.parents) if a.exists()), None)
        if above is not None and not above.is_dir():
            raise InputError(f"{target}: {above} is a file, not a folder")
        raise InputError(f"{target}: folder {parent} does not exist (make it first: mkdir -p {parent})")
    if not can_write_in(parent):
        raise InputError(f"{target}: folder {parent} is not writable")


def check_output_folder(out, overwrite):
    """Refuse an output folder we must not (or cannot) replace; an empty one needs no --overwrite."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: folder is not empty (use --overwrite to replace it)")
    if out.is_dir() and Path.cwd().resolve().is_relative_to(out.resolve()):
        raise InputError(f"{out}: refusing to replace a folder that holds the current directory")
    check_output_path(out, overwrite=True, folder=True)  # its parent folder exists and is writable


def check_folder_can_be_made(folder):
    """Refuse a folder path under a file or a read-only folder (the nearest part of it that exists)."""
    folder = Path(folder)
    check_not_a_broken_link(folder)
    made_in = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not made_in.is_dir():
        raise InputError(f"{folder}: {made_in} is not a folder")
    if not can_write_in(made_in):
        raise InputError(f"{folder}: folder {made_in} is not writable")


def check_not_a_broken_link(path):
    """Refuse an output path that is a symbolic link to nothing (its target missing, or a loop of links):
    writing through it would fail, or land elsewhere, only at the end of the work."""
    if path.is_symlink() and not path.exists():
        raise InputError(f"{path}: is a symbolic link to {os.readlink(path)}, which leads nowhere "
                         "(its target missing, or a loop of links); remove the link or choose another output")


def can_write_in(folder):
    """Whether this process can make new files in folder, found out by making (and removing) an empty
    hidden folder there: os.access says yes to root everywhere, and to folders that refuse every new
    name (/proc, /sys)."""
    try:
        tempfile.TemporaryDirectory(dir=folder, prefix=".write-test.").cleanup()
    except OSError:
        return False
    return True


def check_not_an_input(output, inputs, kind="input"):
    """Refuse an output that is one of the inputs (also through a symbolic or hard link), lies inside
    an input folder, or is a folder holding an input (replacing it would delete the input). kind names
    what inputs are in the messages (another output of the run, say)."""
    if not str(output).strip():
        raise InputError("an output path is empty")
    out = Path(os.path.realpath(output))  # realpath, not resolve: a loop of links is left for the checks after
    for given in inputs:
        if given is None or not str(given):
            continue
        source = Path(os.path.realpath(given))
        same = out == source or (out.exists() and source.exists() and os.path.samefile(out, source))
        if same:
            raise InputError(f"{output}: the output is the {kind} {'folder' if source.is_dir() else 'file'} {given} "
                             "(refused, --overwrite or not)")
        if source in out.parents:
            raise InputError(f"{output}: the output would be written inside the {kind} folder {given}")
        if out in source.parents:
            raise InputError(f"{output}: the output folder holds the {kind} {given} (replacing it would delete it)")


@functools.cache
def libc():
    """The C library of this process (loaded once: each load costs a fraction of a millisecond)."""
    return ctypes.CDLL(None, use_errno=True)


def rename_noreplace(source, target):
    """Rename source to target unless target exists by now (another run wrote it): then InputError.

    Linux's renameat2(RENAME_NOREPLACE) checks and renames in one step; where it is missing, a
    file is hard-linked (which also refuses an existing name) and a folder checked, then renamed.
    """
    if hasattr(libc(), "renameat2"):
        if libc().renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise InputError(f"{target}: appeared while this run was writing it (another run?); left as it is")
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL: this filesystem does not know the flag
            raise OSError(err, os.strerror(err), str(target))
    if Path(target).exists() or Path(target).is_symlink():
        raise InputError(f"{target}: appeared while this run was writing it (another run?); left as it is")
    if Path(source).is_dir():
        os.rename(source, target)
    else:
        os.link(source, target)
        os.unlink(source)


@contextlib.contextmanager
def atomic_output(target, overwrite=False, suffix="", ext="", folder=False):
    """Yield a temporary path beside target; on success rename it to target, else delete it.

    The temporary name is `.NAME.<random>SUFFIX.tmp` (+ EXT, for writers that insist on a file
    ending, such as Keras' `.keras`). With folder=True it is an empty folder to fill. An existing
    target (only with overwrite) is replaced at the very end, so an interrupted run leaves either
    the old output or the new one, never half of one.
    """
    check_output_path(target, overwrite, folder)
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}.tmp{ext}")
    try:
        # Made inside the try: an interrupt (Ctrl-C, a batch system's SIGTERM) may fall on any line,
        # and the temporary must not outlive the run. Mode 0o666 (0o777) less the umask, as usual.
        if folder:
            tmp.mkdir()
        else:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # O_EXCL refuses a clash
        yield tmp
        check_interrupted()  # a Ctrl-C dropped on the way still keeps the output from landing
        if not overwrite:
            rename_noreplace(tmp, target)  # a file that appeared meanwhile is never replaced
        elif folder and target.is_dir():
            replace_folder(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def replace_folder(new, target):
    """Swap the finished folder new in for the existing folder target, then delete the old one. A stop
    between the two renames would leave neither: it waits for the second; a second that fails puts the
    old folder back, and where that fails too (another run's folder there now) says where it is kept."""
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    saved, placed = old / target.name, False
    try:
        with stop_signals_held():
            os.replace(target, saved)
            try:
                os.replace(new, target)
                placed = True
            except BaseException as exc:
                try:
                    os.replace(saved, target)
                except OSError:
                    why = getattr(exc, "strerror", None) or type(exc).__name__
                    raise InputError(f"{target}: not replaced ({why}); its old content is kept in {saved}") from exc
                raise
    finally:
        if placed or not os.path.lexists(saved):
            shutil.rmtree(old)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # Ctrl-C and a batch system's stop


@contextlib.contextmanager
def stop_signals_held(block=False):
    """Ctrl-C and SIGTERM only noted while the block runs (a step a stop must not cut in two), the first
    then raised again as if it came at its end. Python handlers run in the main thread only, so elsewhere
    nothing is held. block=True also blocks them in this thread, which processes it starts inherit (a
    Python started by subprocess would keep them blocked for good)."""
    noted = []

    def note(signum, frame):
        noted.append(signum)

    in_main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.signal(s, note) for s in STOP_SIGNALS} if in_main else {}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if block else None
    try:
        yield
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal blocked meanwhile is noted here
        for s, handler in handlers.items():
            signal.signal(s, handler)
    for signum in noted[:1]:
        signal.raise_signal(signum)


def progress(iterable=None, **kwargs):
    """A tqdm progress bar, shown only when stderr is a terminal."""
    kwargs.setdefault("disable", not sys.stderr.isatty())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def tensorflow_here():
    """Whether TensorFlow imports (a GPU machine may carry JAX alone: bench/train_jax.py)."""
    try:
        import_tensorflow()
    except ImportError:
        return False
    return True


def import_tensorflow():
    """Import and return TensorFlow, keeping its C++ start-up lines off stderr.

    TensorFlow 2.21 prints oneDNN/absl lines from C++ at import whatever TF_CPP_MIN_LOG_LEVEL
    says; they would bury a bad input's one-line error. File descriptor 2 goes to /dev/null
    only for the import itself (a Python exception raised by it still shows).
    """
    if "tensorflow" not in sys.modules:
        # 3: also TensorFlow's C++ ERROR lines (oneDNN's `E0000 ... util.cc` during predict), which are
        # not errors of the run (a real failure is a Python exception). A user's higher level stays.
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "3":
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
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


def import_keras():
    """Keras, imported after a quiet TensorFlow import (see import_tensorflow)."""
    import_tensorflow()
    import keras

    return keras
