"""The whole chain on synthetic events, one command: `python demo.py` (or `make demo`).

1. make_events.py        synthetic CLAS12 raw/truth PNG pairs
2. Pix2Pix_data.py       PNGs -> one HDF5 file (padded to 128x128x3)
3. data_management.py    the train/validation/test split and its summary
4. Pix2Pix_training.py   the Pix2Pix U-Net, sized for a 2-core CPU
5. Pix2Pix_denoise.py    the test split denoised and scored hit by hit against the baselines
                         (keep-everything, SNR, the CLAS12 convolutional auto-encoder)
With --hipo (and --tiny) the same events also go the CLAS12 way: a HIPO file (make_events.py
--format hipo), its HDF5 pairs (checked equal to the PNG route's) and the file denoised into a
HIPO file with the rejected hits' DC order marked, scored against its TBHits.

Each step is run as a user would run it, and its command line is printed first, so the demo
doubles as a worked example. Everything is written to a new folder under OUTPUT_ROOT.
"""

import itertools
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from event_worlds import check_luminosity
from script_utils import ArgumentParser, InputError, check_folder_can_be_made, run_main, seed_number, stop_signals_held

# --- Settings (each one can be overridden on the command line) ----------------------------
OUTPUT_ROOT = "demo_output"  # each run gets its own timestamped folder in here
EVENTS = 3000  # synthetic pairs (56 % train, 19 % validation, 25 % test)
LUMINOSITY = 1.0
SEED = 1  # the events' seed and the training's initialisation
EPOCHS = 16
BASE_FILTERS = 16  # generator width: 64 is the paper's, 16 trains in minutes on a CPU
CAE_EPOCHS = 3  # the auto-encoder baseline's epochs (10 in the clas12ai recipe; 3 fit the demo's time)
TINY = False  # a minute-long smoke run (CI), with the sizes of TINY_SIZES
HIPO = False  # also run the HIPO route on the same events (events.hipo -> HDF5 pairs, denoised HIPO file)
# ---------------------------------------------------------------------------------------------
TINY_SIZES = dict(events=96, epochs=1, base_filters=4, cae_epochs=1, hipo=True)
MIN_EVENTS = 64  # fewer leave the training split short of one batch

HERE = Path(__file__).resolve().parent


STEP = []  # the step's process while one runs (stop_step's)


def stop_step(signum, frame):
    """SIGTERM (a batch system's stop): passed on to the running step, which stops as its script does; then the
    demo stops as on Ctrl-C (which the terminal sends to the step itself)."""
    for child in STEP:
        child.send_signal(signal.SIGTERM)
    raise KeyboardInterrupt


def step(title, script, *args):
    """Run one of the project's scripts in a subprocess, echoing its command; stop on failure. A stopped demo
    waits for the step to stop: no step goes on running alone."""
    cmd = [sys.executable, str(HERE / script), *map(str, args)]
    print(f"\n=== {title}\n$ python {script} {shlex.join(map(str, args))}", flush=True)
    t0 = time.time()
    try:
        with stop_signals_held():  # a stop inside Popen, after the fork, would miss the step
            STEP[:] = [subprocess.Popen(cmd)]
        with STEP[0] as child:
            code = child.wait()
    except KeyboardInterrupt:
        for child in STEP:
            child.wait()
        raise
    finally:
        STEP.clear()
    if code != 0:
        sys.exit(f"demo: step '{title}' failed (see above)")
    print(f"({time.time() - t0:.0f} s)", flush=True)


def run_folder(root):
    """A new folder root/run-YYYYMMDD-HHMMSS (-2, -3, ... after it where another run started in that second)."""
    stamp = time.strftime("run-%Y%m%d-%H%M%S")
    for k in itertools.count(1):
        out = Path(root) / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            out.mkdir(parents=True)
            return out
        except FileExistsError:
            continue


def build_parser():
    """The settings above, each overridable on the command line."""
    p = ArgumentParser(description=__doc__)
    p.add_argument("--output-root", default=OUTPUT_ROOT, help="folder for the demo's runs (default %(default)s)")
    p.add_argument("--events", type=int, default=EVENTS, help="synthetic event pairs (default %(default)s)")
    p.add_argument("--luminosity", type=float, default=LUMINOSITY, help="background scale (default %(default)s)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="training epochs (default %(default)s)")
    p.add_argument("--base-filters", type=int, default=BASE_FILTERS, help="generator width (default %(default)s)")
    p.add_argument("--cae-epochs", type=int, default=CAE_EPOCHS, help="auto-encoder epochs (default %(default)s)")
    p.add_argument("--seed", type=seed_number, default=SEED,
                   help="the events' seed and the training's initialisation (default %(default)s)")
    p.add_argument("--tiny", action="store_true", default=TINY, help=f"a minute-long smoke run (CI): {TINY_SIZES}")
    p.add_argument("--hipo", action="store_true", default=HIPO,
                   help="also run the HIPO route on the same events: a HIPO file, its HDF5 pairs, the file denoised")
    return p


def same_pairs(a, b):
    """Whether two HDF5 pair files hold the same raw and truth images, in the same order."""
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        if fa["raw"].shape != fb["raw"].shape:
            return False
        return all(np.array_equal(fa[k][i:i + 256], fb[k][i:i + 256])
                   for k in ("raw", "truth") for i in range(0, len(fa["raw"]), 256))


def hipo_route(a, out, h5, run):
    """The same events as a HIPO file, its HDF5 pairs (checked against the PNG route's) and the file denoised."""
    hipo, hipo_h5, denoised = out / "events.hipo", out / "events_hipo.h5", out / "events_denoised.hipo"
    step("HIPO 1/3 the same events as a CLAS12 HIPO file (2 sectors per event)", "make_events.py", "--format", "hipo",
         "--output", hipo, "-n", a.events, "--seed", a.seed, "--luminosity", a.luminosity)
    step("HIPO 2/3 HIPO -> HDF5 pairs", "Pix2Pix_data.py", "--hipo", hipo, "--output", hipo_h5)
    if not same_pairs(h5, hipo_h5):
        sys.exit(f"demo: {hipo_h5} does not hold the same pairs as {h5}")
    print(f"{hipo_h5.name}: the same raw and truth images as {h5.name}, event for event")
    step("HIPO 3/3 denoise the HIPO file (every event, training ones too: a check of the route, not a score)",
         "Pix2Pix_denoise.py", "--model", run, "--hipo", hipo, "--output", denoised, "--evaluate")


def parse_args(argv=None):
    """The settings, refused in one line (InputError) before any folder is made where they cannot work."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.tiny:
        given = [f"--{k.replace('_', '-')}" for k in TINY_SIZES if k != "hipo" and getattr(a, k) != p.get_default(k)]
        if given:
            raise InputError(f"--tiny sets its own sizes {TINY_SIZES}: give {' '.join(given)} or --tiny, not both")
        vars(a).update(TINY_SIZES)
    check_luminosity(a.luminosity)
    if a.events < MIN_EVENTS:
        raise InputError(f"--events must be at least {MIN_EVENTS}, not {a.events}")
    for name in ("epochs", "base_filters", "cae_epochs"):
        if getattr(a, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(a, name)}")
    if not a.output_root.strip():
        raise InputError("--output-root: the path is empty")
    check_folder_can_be_made(a.output_root)
    return a


def main(argv=None):
    """Run the five steps with the command line's settings in a new folder."""
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, stop_step)
    out = run_folder(a.output_root)
    try:
        run_steps(a, out)
    except KeyboardInterrupt:
        print(f"\ndemo stopped: what it made is in {out}/; the demo run again starts a new run from step 1 (a "
              "step's own note on resuming is for its command, run by hand)", flush=True)
        raise
    return 0


def run_steps(a, out):
    """The steps, each a script run as a user would run it, writing into out."""
    t0 = time.time()
    events, h5, run, denoised = out / "events", out / "events.h5", out / "training", out / "test_denoised.h5"
    step("1/5 synthetic events", "make_events.py", "--output", events, "-n", a.events, "--seed", a.seed,
         "--luminosity", a.luminosity, "--preview")
    step("2/5 PNG pairs -> HDF5", "Pix2Pix_data.py", "--raw-dir", events / "raw", "--truth-dir", events / "truth",
         "--output", h5)
    step("3/5 train/validation/test split", "data_management.py", "--data", h5)
    step("4/5 training", "Pix2Pix_training.py", "--data", h5, "--output-dir", run, "--epochs", a.epochs,
         "--base-filters", a.base_filters, "--seed", a.seed)
    step("5/5 denoise the test split and score it against the baselines", "Pix2Pix_denoise.py", "--model", run,
         "--data", h5, "--output", denoised, "--evaluate", "--baseline-cae", "--cae-epochs", a.cae_epochs)
    if a.hipo:
        hipo_route(a, out, h5, run)
    print(f"\nDemo finished in {(time.time() - t0) / 60:.1f} min. Everything is in {out}/:")
    print("  events/preview.png          a few synthetic raw/truth pairs")
    print("  training/history.csv        losses and validation scores per epoch (samples/ has image grids)")
    print("  test_denoised.report.png    the score report (model vs baselines)")
    if a.hipo:
        print("  events_denoised.hipo        the HIPO file denoised (DC order 40/70 on rejected hits)")


if __name__ == "__main__":
    run_main(main)
