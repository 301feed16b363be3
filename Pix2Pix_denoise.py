"""Denoise drift-chamber events with a trained Pix2Pix generator, and score it against the baselines.

Input: a folder of raw event PNGs (one denoised PNG per event, same name, into --output-dir), the
project's HDF5 file (its test split, into a new HDF5 file) or a CLAS12 HIPO file (a copy with the
rejected hits' DC order marked, as coatjava's denoiser does: hipo_denoise.py). The output
threshold defaults to the one chosen on validation and stored with the model. --evaluate scores
the result hit by hit against the truth and the CLAS12 baselines (evaluation.py) and writes a report.

    python Pix2Pix_denoise.py --model runs/pix2pix --data data/pairs.h5 --output test_denoised.h5 --evaluate
    python Pix2Pix_denoise.py --model runs/pix2pix --input-dir raw/ --output-dir denoised/ --evaluate --truth-dir truth/
    python Pix2Pix_denoise.py --model runs/pix2pix --hipo run.hipo --output run_denoised.hipo --evaluate
"""

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import data_management
import evaluation
import event_image as ei
import hipo_denoise
from denoise_io import H5SplitReader, H5Writer, PngFolderReader, PngFolderWriter
from script_utils import (
    ArgumentParser,
    InputError,
    check_not_an_input,
    check_output_path,
    number_list,
    progress,
    run_main,
    seed_number,
)
from trained_model import (
    choose_threshold,
    cpu_cores,
    kept_hits,
    model_from,
    predicted,
    read_sidecar,
    resolve_model,
    scored_split_seed,
    threshold_origin,
)

# --- Settings (each one has its command-line flag) ---------------------------------------
MODEL = None  # a .keras generator, a training output directory (its generator_best.keras) or an exported .onnx
INPUT_DIR = None  # folder of raw event PNGs
OUTPUT_DIR = None  # where the denoised PNGs go (same file names)
DATA = None  # the project's HDF5 file; its test split is denoised
HIPO = None  # a CLAS12 HIPO file, denoised into a copy (--output) with the rejected hits' DC order marked
OUTPUT = None  # the file written from --data (default DATA_denoised.h5) or --hipo (default IN_denoised.hipo)
THRESHOLD = None  # output > THRESHOLD is a hit; None = the one stored with the model
GATE_BY_RAW_HITS = False  # keep only pixels that were hits in the raw image (no invented hits)
BATCH_SIZE = 32
THREADS = 0  # an .onnx model: batches predicted at once, each on one thread (0 = one per CPU core)
SPLIT_SEED = None  # the split of --data: None = the model's own on the file it trained on, else data_management's
EVALUATE = False
TRUTH_DIR = None  # truth PNGs (same names as the inputs) for --evaluate on a folder
TRACKS_DIR = None  # track-id PNGs (same names) for --evaluate on a folder (None: a `tracks` folder beside TRUTH_DIR)
BASELINE_CAE = False  # also score the CLAS12 AI group's convolutional auto-encoder
CAE_DATA = None  # HDF5 file the CAE is trained on (default: --data)
CAE_CACHE = None  # where the trained CAE is cached (default: baselines' choice, beside the HDF5)
CAE_EPOCHS = None  # CAE training epochs (None = baselines' default)
SWEEP_THRESHOLDS = ei.SWEEP_THRESHOLDS  # model output thresholds of the report's sweep
BACKGROUND_BINS = evaluation.BACKGROUND_BINS  # lower edges of the report's background-hit bins
GRID_EVENTS = evaluation.GRID_EVENTS  # worst and best events drawn in the report
REPORT = None  # report path prefix (default: next to the output)
OVERWRITE = False

def build_parser():
    """The command line; every default is a setting above."""
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model", default=MODEL, required=MODEL is None,
                   help="trained generator: a .keras file, a training output directory (its generator_best.keras) "
                        "or an exported .onnx model (Pix2Pix_export.py; needs no TensorFlow)")
    src = p.add_argument_group("input (one of)")
    src.add_argument("--input-dir", default=INPUT_DIR, help="folder of raw event PNGs (112x36)")
    src.add_argument("--data", default=DATA, help="the project's HDF5 file; its test split is denoised")
    src.add_argument("--hipo", default=HIPO, metavar="IN.hipo",
                     help="a CLAS12 HIPO file: written to --output as a copy where only the DC::tdc/DC::tot order of "
                          "rejected hits changes (0 -> 40, 10 -> 70); --evaluate scores against its TBHits")
    out = p.add_argument_group("output")
    out.add_argument("--output-dir", default=OUTPUT_DIR, help="folder for the denoised PNGs (with --input-dir)")
    out.add_argument("--output", default=OUTPUT,
                     help="HDF5 file for the denoised test split (with --data; default DATA_denoised.h5) or the "
                          "denoised HIPO file (with --hipo; default IN_denoised.hipo)")
    out.add_argument("--overwrite", action="store_true", default=OVERWRITE, help="replace existing output files")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help="output > threshold is a hit (default: the one chosen on validation, stored with the model)")
    p.add_argument("--gate-by-raw-hits", action="store_true", default=GATE_BY_RAW_HITS,
                   help="write only hits that were in the raw image (drops invented hits)")
    p.add_argument("--mask-with-raw", dest="gate_by_raw_hits", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"events per prediction (default {BATCH_SIZE})")
    p.add_argument("--threads", type=int, default=THREADS,
                   help="with an .onnx model: batches predicted at once, each on one onnxruntime thread (default 0: "
                        "one per CPU core); a .keras model predicts one batch at a time on the library's own threads")
    p.add_argument("--split-seed", type=seed_number, default=SPLIT_SEED,
                   help="seed of the train/validation/test split of --data (default: the model's training split "
                        f"on the file it trained on, else {data_management.SPLIT_SEED})")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--evaluate", action="store_true", default=EVALUATE,
                    help="score hit by hit against the truth and the baselines (keep-all, SNR, optionally CAE)")
    ev.add_argument("--truth-dir", default=TRUTH_DIR, help="truth PNGs with the input's file names (--input-dir)")
    ev.add_argument("--tracks-dir", default=TRACKS_DIR,
                    help="track-id PNGs (each truth hit's track number) with the input's file names (--input-dir; "
                         "default: a `tracks` folder beside --truth-dir when there is one; without track ids the "
                         "truth of each event counts as one track)")
    ev.add_argument("--baseline-cae", action="store_true", default=BASELINE_CAE,
                    help="also score the CLAS12 AI convolutional auto-encoder (trained and cached if missing)")
    ev.add_argument("--cae-data", default=CAE_DATA, help="HDF5 file the CAE trains on (default: --data)")
    ev.add_argument("--cae-cache", default=CAE_CACHE, help="folder caching the trained CAE (default: beside the HDF5)")
    ev.add_argument("--cae-epochs", type=int, default=CAE_EPOCHS, help="CAE training epochs (default: baselines')")
    ev.add_argument("--sweep-thresholds", type=number_list(float), default=SWEEP_THRESHOLDS, metavar="T1,T2,...",
                    help="model output thresholds scored in the report's threshold sweep "
                         "(default 0.05..0.95 in steps of 0.05, 0.97, 0.98, 0.99)")
    ev.add_argument("--background-bins", type=number_list(int), default=BACKGROUND_BINS, metavar="E0,E1,...",
                    help="lower edges of the background-hit bins of the report (default "
                         f"{','.join(map(str, BACKGROUND_BINS))})")
    ev.add_argument("--grid-events", type=int, default=GRID_EVENTS,
                    help=f"worst and best events drawn in the report (default {GRID_EVENTS} of each)")
    ev.add_argument("--report", default=REPORT,
                    help="report path prefix: writes PREFIX.json, PREFIX.png, PREFIX.events.png "
                         "(default: next to the output, e.g. OUTPUT.report.json)")
    return p


def parse_args(argv=None):
    """The settings, with contradictory or impossible ones refused before anything is read or written."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if sum(map(bool, (args.input_dir, args.data, args.hipo))) != 1:
        raise InputError("give exactly one input: --input-dir (PNG folder), --data (HDF5 file) or --hipo (HIPO file)")
    for flag in ("output", "output_dir", "report", "truth_dir", "tracks_dir", "cae_cache", "cae_data"):
        if getattr(args, flag) is not None and not getattr(args, flag).strip():
            raise InputError(f"--{flag.replace('_', '-')}: the path is empty")
    if args.hipo and (args.output_dir or args.truth_dir):
        raise InputError(f"--hipo reads its truth from the file and writes --output; do not give "
                         f"{'--output-dir' if args.output_dir else '--truth-dir'}")
    if args.hipo and args.output and Path(args.output).suffix != ".hipo":
        raise InputError(f"--output {args.output}: --hipo writes a HIPO file, named .hipo")
    if args.input_dir and not args.output_dir:
        raise InputError("--input-dir needs --output-dir")
    if args.data and args.output_dir:
        raise InputError("--output-dir is for --input-dir; with --data use --output")
    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        raise InputError(f"--threshold {args.threshold}: must be in [0, 1)")
    if not all(0.0 < t < 1.0 for t in args.sweep_thresholds):
        raise InputError(f"--sweep-thresholds {','.join(map(str, args.sweep_thresholds))}: each must be between 0 "
                         "and 1 (exclusive)")
    if args.background_bins[0] != 0:
        edges = ",".join(map(str, args.background_bins))
        raise InputError(f"--background-bins {edges}: the first lower edge must be 0: every event falls in a bin")
    if args.grid_events < 0:
        raise InputError(f"--grid-events {args.grid_events}: must be 0 or more")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.truth_dir and not (args.evaluate and args.input_dir):
        raise InputError("--truth-dir is only used with --evaluate on --input-dir (--data holds its truth)")
    if args.tracks_dir and not (args.evaluate and args.input_dir):
        raise InputError("--tracks-dir is only used with --evaluate on --input-dir")
    if args.evaluate and args.input_dir and not args.truth_dir:
        raise InputError("--evaluate on a PNG folder needs --truth-dir")
    if args.truth_dir and args.tracks_dir is None:  # the track-id folder beside the truth's, if there is one
        args.tracks_dir = ei.default_tracks_dir(args.truth_dir)
    scoring = [f for f in ("baseline_cae", "cae_data", "cae_cache", "cae_epochs", "sweep_thresholds", "background_bins",
                           "grid_events", "report") if getattr(args, f) != parser.get_default(f)]
    if scoring and not args.evaluate:
        raise InputError(f"--{scoring[0].replace('_', '-')} is only used with --evaluate")
    if args.input_dir and args.output:
        raise InputError("--output is for --data or --hipo; with --input-dir use --output-dir")
    if args.split_seed != parser.get_default("split_seed") and not args.data:
        raise InputError("--split-seed chooses the test events of --data; it is only used with --data")
    if args.cae_epochs is not None and args.cae_epochs < 1:
        raise InputError(f"--cae-epochs must be at least 1, got {args.cae_epochs}")
    if args.baseline_cae and not (args.cae_data or args.data):
        raise InputError("--baseline-cae on a PNG folder or a HIPO file needs --cae-data (the HDF5 file the CAE "
                         "trains on)")
    return args


# --- The loop ------------------------------------------------------------------------------
def prefetched(batches, pool):
    """The batches of an iterable, each read in the pool while the one before is being used."""
    items = iter(batches)
    pending = pool.submit(next, items, None)
    while (batch := pending.result()) is not None:
        pending = pool.submit(next, items, None)
        yield batch


def denoise(model, threshold, reader, writer, evaluation=None, baselines=None, gate=False):
    """Predict, threshold (gate by the raw hits), write and score every batch of reader; returns N.

    Two helper threads read the next batch and write the previous one while the model predicts
    the current one (or several at once: predicted()). evaluation: a HitEvaluation fed the model
    and the baselines ({name: keep function of the raw hit masks}), with the reader's track ids
    when it has them.
    """
    bar = progress(total=len(reader), desc="denoising", unit="event")
    n, writing = 0, None
    with writer, ThreadPoolExecutor(max_workers=2) as pool:
        # readers may give no track ids
        for (names, raw, truth, *track_ids), prob in predicted(model, prefetched(reader, pool)):
            kept = kept_hits(prob, raw, threshold, gate)
            if writing is not None:
                writing.result()  # raises here if the previous batch could not be written
            writing = pool.submit(writer.write, names, kept)
            if evaluation is not None:
                evaluation.add_model(raw, truth, kept, prob, names, track_ids[0] if track_ids else None, baselines)
            n += len(names)
            bar.update(len(names))
        if writing is not None:
            writing.result()
    bar.close()
    return n


# --- Main ------------------------------------------------------------------------------------
def output_paths(args):
    """The output (PNG folder or HDF5 file) and the report prefix (default: next to the output)."""
    if args.input_dir:
        out = Path(args.output_dir)
        report = out.parent / (out.name + ".report")
    elif args.hipo:
        out = Path(args.output or Path(args.hipo).with_name(Path(args.hipo).stem + "_denoised.hipo"))
        report = out.with_suffix(".report")
    else:
        out = Path(args.output or Path(args.data).with_name(Path(args.data).stem + "_denoised.h5"))
        report = out.with_suffix(".report")
    return out, Path(args.report) if args.report else report


def input_paths(args, model_path):
    """Every file or folder the run reads: outputs must be none of them, nor inside or above one."""
    model_files = (model_path, Path(model_path).with_suffix(".json"))  # the model and its sidecar
    return (args.input_dir, args.truth_dir, args.tracks_dir, args.data, args.hipo, args.cae_data, *model_files)


def check_outputs(args, out, report, inputs):
    """Every output path checked before any work: none is an input; the report's files can be written."""
    check_not_an_input(out, inputs)
    if not args.input_dir:  # the output file (--data, --hipo); the PNG folder's checks come with its names
        check_output_path(out, args.overwrite)
    if args.evaluate:
        for path in evaluation.report_paths(report).values():
            check_not_an_input(path, inputs)
            check_not_an_input(path, (out,), kind="denoised output")
            check_output_path(path, args.overwrite)


def png_job(args, out, inputs):
    """Reader and writer of a PNG folder, every input and output checked."""
    reader = PngFolderReader(args.input_dir, args.truth_dir, args.batch_size, args.tracks_dir)
    writer = PngFolderWriter(out, args.overwrite)
    writer.check(reader.names, inputs)
    reader.check()
    return reader, writer


def h5_job(args, out, model_path, threshold, info):
    """Reader and writer of the HDF5 file's test split, the input and output checked."""
    if not Path(args.data).is_file():
        problem = "a folder, not an HDF5 file" if Path(args.data).is_dir() else "data file not found"
        raise InputError(f"{args.data}: {problem}")
    data_management.check_h5(args.data)
    args.split_seed = scored_split_seed(args.split_seed, args.data, data_management.fingerprint(args.data), info,
                                        model_path, data_management.SPLIT_SEED)
    reader = H5SplitReader(args.data, args.split_seed, batch_size=args.batch_size)
    print(f"{args.data}: the {len(reader)} test events of split seed {args.split_seed}")
    attrs = {"source": str(Path(args.data).resolve()), "model": str(model_path), "threshold": threshold,
             "split": "test", "gate_by_raw_hits": args.gate_by_raw_hits}
    return reader, H5Writer(out, reader.indices, reader.names, attrs, args.overwrite)


def main(argv=None):
    args = parse_args(argv)
    model_path = resolve_model(args.model)  # model, threshold: checked before the inputs are scanned
    info = read_sidecar(model_path)
    threshold = choose_threshold(args.threshold, info, model_path)
    out, report = output_paths(args)
    inputs = input_paths(args, model_path)
    check_outputs(args, out, report, inputs)
    if args.hipo:
        hipo_denoise.check_job(args.hipo, out, args.overwrite, args.evaluate)
        writer = None
    elif args.input_dir:
        reader, writer = png_job(args, out, inputs)
    else:
        reader, writer = h5_job(args, out, model_path, threshold, info)

    model = model_from(model_path, info, args.threads or cpu_cores())  # the sidecar read once, above
    print(f"model {model_path} (threshold {threshold:.3f}{threshold_origin(args.threshold, info)})")
    scoring = baselines = None
    if args.evaluate:
        cae_data = (args.cae_data or args.data) if args.baseline_cae else None
        baselines = evaluation.baseline_keeps(cae_data, cae_cache=args.cae_cache, epochs=args.cae_epochs,
                                              split_seed=args.split_seed)
        scoring = evaluation.HitEvaluation(["model", *baselines], args.sweep_thresholds, args.background_bins,
                                           args.grid_events)
    hipo_written = False
    try:
        if args.hipo:
            counts = hipo_denoise.denoise_hipo(model, threshold, args.hipo, out, batch_size=args.batch_size,
                                               gate=args.gate_by_raw_hits, overwrite=args.overwrite,
                                               evaluation=scoring, baselines=baselines)
            hipo_written = True
            print(hipo_denoise.summary_line(counts, out))
        else:
            n = denoise(model, threshold, reader, writer, scoring, baselines, args.gate_by_raw_hits)
            print(f"wrote {n} denoised events to {out}")
        if scoring is not None:
            meta = {"model": str(model_path), "model_info": info,
                    "input": str(args.input_dir or args.data or args.hipo), "output": str(out),
                    "gate_by_raw_hits": args.gate_by_raw_hits, "split_seed": args.split_seed if args.data else None}
            evaluation.finish_report(scoring.result(), threshold, report, args.overwrite, meta)
    except BaseException:  # a run that fails (or is stopped) after writing leaves nothing of its own behind
        if writer is not None:
            writer.discard()
        elif hipo_written:
            out.unlink(missing_ok=True)
        raise
    return 0


if __name__ == "__main__":
    run_main(main)
