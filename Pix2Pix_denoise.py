"""Denoise drift-chamber event images with a trained Pix2Pix generator, and score it.

Two inputs:
  --input-dir DIR   a folder of raw event PNGs (112 wires x 36 layers). One PNG per event, same
                    file name, goes to --output-dir: a hit (HIT_VALUE on all channels) where the
                    generator's output exceeds the threshold, background elsewhere.
  --data FILE.h5    the project's HDF5 file: its test split is denoised into a new HDF5 file
                    (--output; datasets denoised (N,36,112,3) uint8, indices, names).

The generator works on the 128x128 layout of event_image; its output is cropped back to the
36x112 event by the exact inverse of the padding. The threshold defaults to the one chosen on
the validation split and stored with the model (the sidecar JSON written by Pix2Pix_training.py).

--evaluate scores the result hit by hit against the truth (--truth-dir for PNG folders, the
truth dataset for HDF5), next to the baselines a CLAS12 physicist would name: keep-everything,
SNR (classical simple noise removal) and, with --baseline-cae, the CLAS12 AI group's
convolutional auto-encoder. It writes REPORT.json, REPORT.png (score bars, efficiency vs
background hits, efficiency vs threshold, per superlayer) and REPORT.events.png (the worst and
best events), and prints a table that answers "is the GAN better than what CLAS12 has?".

Example:
  python Pix2Pix_denoise.py --model runs/training --data events.h5 --output test_denoised.h5 --evaluate
"""

import argparse
import heapq
import json
import math
import os
import textwrap
from pathlib import Path

import numpy as np

import event_image as ei
from script_utils import InputError, atomic_output, check_output_path, import_tensorflow, progress, run_main

# --- Settings (each one can be overridden on the command line) -------------------------
MODEL = None  # a .keras generator, or a training output directory (its generator_best.keras)
INPUT_DIR = None  # folder of raw event PNGs
OUTPUT_DIR = None  # where the denoised PNGs go (same file names)
DATA = None  # the project's HDF5 file; its test split is denoised
OUTPUT = None  # the HDF5 file written from --data (default: DATA_denoised.h5 beside it)
THRESHOLD = None  # output > THRESHOLD is a hit; None = the one stored with the model
MASK_WITH_RAW = False  # keep only pixels that were hits in the raw image (no invented hits)
BATCH_SIZE = 32
SEED = None  # the split seed for --data; None = data_management's default
EVALUATE = False
TRUTH_DIR = None  # truth PNGs (same names as the inputs) for --evaluate on a folder
BASELINE_CAE = False  # also score the CLAS12 AI group's convolutional auto-encoder
CAE_DATA = None  # HDF5 file the CAE is trained on (default: --data)
CAE_CACHE = None  # where the trained CAE is cached (default: baselines' choice, beside the HDF5)
CAE_EPOCHS = None  # CAE training epochs (None = baselines' default)
REPORT = None  # report path prefix (default: next to the output)
SWEEP_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
BACKGROUND_BINS = (0, 10, 20, 40, 60, 80, 100, 130, 160, 200, 300)  # lower edges of the background-hit bins
GRID_EVENTS = 4  # worst and best events shown in the report
OVERWRITE = False

BEST_MODEL = "generator_best.keras"  # what a training output directory provides
METHODS = ("model", "keep-all", "SNR", "CAE")


def number_list(kind):
    """argparse type: '0,10,20' -> (0, 10, 20), increasing."""
    def parse(text):
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated {kind.__name__} values") from None
        if list(values) != sorted(set(values)):
            raise argparse.ArgumentTypeError(f"{text!r}: values must increase")
        return values
    return parse


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are the project's one-line InputError (exit 2), not a usage dump."""

    def error(self, message):
        raise InputError(f"{self.prog}: {message}")


def parse_args(argv=None):
    """Command-line settings; the defaults are the constants above."""
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL, required=MODEL is None,
                   help="trained generator: a .keras file, or a training output directory (its generator_best.keras)")
    src = p.add_argument_group("input (one of)")
    src.add_argument("--input-dir", default=INPUT_DIR, help="folder of raw event PNGs (112x36)")
    src.add_argument("--data", default=DATA, help="the project's HDF5 file; its test split is denoised")
    out = p.add_argument_group("output")
    out.add_argument("--output-dir", default=OUTPUT_DIR, help="folder for the denoised PNGs (with --input-dir)")
    out.add_argument("--output", default=OUTPUT,
                     help="HDF5 file for the denoised test split (with --data; default DATA_denoised.h5)")
    out.add_argument("--overwrite", action="store_true", default=OVERWRITE, help="replace existing output files")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help="output > threshold is a hit (default: the one chosen on validation, stored with the model)")
    p.add_argument("--mask-with-raw", action="store_true", default=MASK_WITH_RAW,
                   help="write only hits that were in the raw image (drops invented hits)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"events per prediction (default {BATCH_SIZE})")
    p.add_argument("--seed", type=int, default=SEED, help="split seed for --data (default: data_management's)")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--evaluate", action="store_true", default=EVALUATE,
                    help="score hit by hit against the truth and the baselines (keep-all, SNR, optionally CAE)")
    ev.add_argument("--truth-dir", default=TRUTH_DIR, help="truth PNGs with the input's file names (--input-dir)")
    ev.add_argument("--baseline-cae", action="store_true", default=BASELINE_CAE,
                    help="also score the CLAS12 AI convolutional auto-encoder (trained and cached if missing)")
    ev.add_argument("--cae-data", default=CAE_DATA, help="HDF5 file the CAE trains on (default: --data)")
    ev.add_argument("--cae-cache", default=CAE_CACHE, help="folder caching the trained CAE (default: beside the HDF5)")
    ev.add_argument("--cae-epochs", type=int, default=CAE_EPOCHS, help="CAE training epochs (default: baselines')")
    ev.add_argument("--sweep-thresholds", type=number_list(float), default=SWEEP_THRESHOLDS, metavar="T1,T2,...",
                    help="model output thresholds scored in the report's threshold sweep (default 0.05..0.95)")
    ev.add_argument("--background-bins", type=number_list(int), default=BACKGROUND_BINS, metavar="E0,E1,...",
                    help="lower edges of the background-hit bins of the report (default "
                         f"{','.join(map(str, BACKGROUND_BINS))})")
    ev.add_argument("--grid-events", type=int, default=GRID_EVENTS,
                    help=f"worst and best events drawn in the report (default {GRID_EVENTS} of each)")
    ev.add_argument("--report", default=REPORT,
                    help="report path prefix: writes PREFIX.json, PREFIX.png, PREFIX.events.png "
                         "(default: next to the output, e.g. OUTPUT.report.json)")
    return p.parse_args(argv)


def check_settings(args):
    """Refuse contradictory or impossible settings before anything is read or written."""
    if bool(args.input_dir) == bool(args.data):
        raise InputError("give exactly one input: --input-dir (PNG folder) or --data (HDF5 file)")
    if args.input_dir and not args.output_dir:
        raise InputError("--input-dir needs --output-dir")
    if args.data and args.output_dir:
        raise InputError("--output-dir is for --input-dir; with --data use --output")
    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        raise InputError(f"--threshold {args.threshold}: must be in [0, 1)")
    if args.grid_events < 0:
        raise InputError(f"--grid-events {args.grid_events}: must be 0 or more")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.truth_dir and not args.evaluate:
        raise InputError("--truth-dir is only used with --evaluate")
    if args.evaluate and args.input_dir and not args.truth_dir:
        raise InputError("--evaluate on a PNG folder needs --truth-dir")
    if args.baseline_cae and not args.evaluate:
        raise InputError("--baseline-cae is only used with --evaluate")
    if args.baseline_cae and not (args.cae_data or args.data):
        raise InputError("--baseline-cae on a PNG folder needs --cae-data (the HDF5 file the CAE trains on)")


# --- The model ----------------------------------------------------------------------------
def resolve_model(path):
    """The .keras file to load: the file itself, or a training directory's best generator."""
    path = Path(path)
    if path.is_dir():
        best = path / BEST_MODEL
        if not best.is_file():
            raise InputError(f"{path}: training directory without {BEST_MODEL}")
        return best
    if not path.exists():
        raise InputError(f"{path}: model not found")
    if path.suffix != ".keras":
        raise InputError(f"{path}: not a .keras model file")
    return path


def import_keras():
    """Import Keras after a quiet TensorFlow import (script_utils.import_tensorflow): TensorFlow's
    C++ start-up lines would otherwise bury the one-line error of a bad input."""
    import_tensorflow()
    import keras

    return keras


def read_sidecar(model_path):
    """The training run's JSON stored beside the .keras file (threshold, epoch, ...); {} if none."""
    sidecar = Path(model_path).with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{sidecar}: unreadable model sidecar ({exc})") from None
    if not isinstance(info, dict):
        raise InputError(f"{sidecar}: model sidecar is not a JSON object")
    return info


def load_generator(path):
    """Load a generator (.keras) and check that it maps 128x128x3 images to 128x128x3 images."""
    keras = import_keras()
    path = resolve_model(path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # zip, HDF5 and deserialisation errors come in many kinds
        why = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise InputError(f"{path}: cannot load the model ({type(exc).__name__}: {why})") from None
    want = (None, ei.PADDED_SIZE, ei.PADDED_SIZE, ei.CHANNELS)
    shapes = [tuple(model.input_shape), tuple(model.output_shape)] if hasattr(model, "input_shape") else []
    if shapes != [want, want]:
        raise InputError(f"{path}: model maps {shapes[:1]} -> {shapes[1:]}, expected {want} -> {want}")
    return model


def choose_threshold(args, info, model_path):
    """--threshold if given, else the validation-chosen threshold stored with the model."""
    if args.threshold is not None:
        return float(args.threshold)
    t = info.get("threshold")
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t < 1.0:
        raise InputError(f"{Path(model_path).with_suffix('.json')}: no valid stored threshold; give --threshold")
    return float(t)


def predict_probabilities(model, padded, batch_size=None):
    """Hit probability of each detector cell, (N, 36, 112) float32, from padded (N,128,128,3) in 0..1.

    The probability of a cell is its largest output channel, so `prob > t` equals
    event_image.hit_mask(output, t). A short last batch is filled up to batch_size with empty
    images (and their outputs dropped), so the predict function is traced for one shape only.
    """
    padded = np.asarray(padded, np.float32)
    n = len(padded)
    if batch_size and n < batch_size:
        padded = np.concatenate([padded, np.zeros((batch_size - n,) + padded.shape[1:], np.float32)])
    out = np.asarray(model.predict_on_batch(padded), np.float32)[:n]
    return ei.crop_event(out).max(axis=-1)


# --- The hit-level evaluation ---------------------------------------------------------------
def _empty_counts():
    return dict.fromkeys(ei.COUNT_KEYS, 0)


def event_f1(raw, truth, kept):
    """Per-event F1 (N,) of boolean masks (N, 36, 112); 1.0 for an event with nothing to find or keep."""
    track = raw & truth
    kept_raw = kept & raw
    tp = (kept_raw & track).sum(axis=(1, 2))
    den = track.sum(axis=(1, 2)) + kept_raw.sum(axis=(1, 2))
    return np.where(den > 0, 2.0 * tp / np.maximum(den, 1), 1.0)


class HitEvaluation:
    """Hit-level counts of several methods, accumulated batch by batch (memory stays flat).

    Per method: overall, per superlayer and per bin of background hits in the event; for the
    model also a sweep over output thresholds (from its probabilities) and the worst and best
    events by F1 (only GRID_EVENTS of each are kept).
    """

    def __init__(self, methods, thresholds=SWEEP_THRESHOLDS, background_bins=BACKGROUND_BINS,
                 grid_events=GRID_EVENTS):
        self.methods = list(methods)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.bins = tuple(int(b) for b in background_bins)
        self.grid_events = grid_events
        self.total = {m: _empty_counts() for m in self.methods}
        self.superlayer = {m: [_empty_counts() for _ in range(ei.SUPERLAYERS)] for m in self.methods}
        self.background = {m: [_empty_counts() for _ in self.bins] for m in self.methods}
        self.sweep = [_empty_counts() for _ in self.thresholds]
        self.paired = {m: {"better": 0, "equal": 0, "worse": 0} for m in self.methods if m != "model"}
        self.worst, self.best = [], []  # heaps of (key, -serial, event)
        self.serial = 0

    def add(self, raw, truth, keeps, probabilities=None, names=None):
        """Count one batch: boolean masks (N, 36, 112); keeps = {method: kept mask}."""
        raw, truth = np.asarray(raw, bool), np.asarray(truth, bool)
        noise_per_event = (raw & ~truth).sum(axis=(1, 2))
        bin_of_event = np.searchsorted(self.bins, noise_per_event, side="right") - 1
        for m in self.methods:
            kept = np.asarray(keeps[m], bool)
            self.total[m] = ei.add_counts(self.total[m], ei.hit_counts(raw, truth, kept))
            for s in range(ei.SUPERLAYERS):
                rows = slice(s * ei.LAYERS_PER_SUPERLAYER, (s + 1) * ei.LAYERS_PER_SUPERLAYER)
                c = ei.hit_counts(raw[:, rows], truth[:, rows], kept[:, rows])
                self.superlayer[m][s] = ei.add_counts(self.superlayer[m][s], c)
            for b in np.unique(bin_of_event[bin_of_event >= 0]):
                sel = bin_of_event == b
                self.background[m][b] = ei.add_counts(self.background[m][b],
                                                      ei.hit_counts(raw[sel], truth[sel], kept[sel]))
        if probabilities is not None:
            for i, t in enumerate(self.thresholds):
                self.sweep[i] = ei.add_counts(self.sweep[i], ei.hit_counts(raw, truth, probabilities > t))
        if "model" in keeps:
            f1, rows = self._compare_events(raw, truth, keeps)
            if self.grid_events:
                self._keep_extremes(raw, truth, keeps, names, f1, rows)

    def _compare_events(self, raw, truth, keeps):
        """Count the events (with track hits) where the model's F1 beats, ties or loses to each other method's."""
        has_track = (raw & truth).any(axis=(1, 2))
        f1 = event_f1(raw[has_track], truth[has_track], np.asarray(keeps["model"], bool)[has_track])
        for m in self.methods:
            if m != "model":
                other = event_f1(raw[has_track], truth[has_track], np.asarray(keeps[m], bool)[has_track])
                c = self.paired[m]
                c["better"] += int((f1 > other).sum())
                c["equal"] += int((f1 == other).sum())
                c["worse"] += int((f1 < other).sum())
        return f1, np.flatnonzero(has_track)

    def _keep_extremes(self, raw, truth, keeps, names, f1, rows):
        """Remember the GRID_EVENTS worst and best events by the model's F1 (events with track hits)."""
        for score, i in zip(f1, rows, strict=True):
            event = None
            for heap, key in ((self.worst, -score), (self.best, score)):
                item_key = (float(key), -self.serial)
                if len(heap) < self.grid_events or item_key > heap[0][:2]:
                    if event is None:  # copied only for the few events that are kept
                        event = {"name": str(names[i]) if names is not None else str(self.serial),
                                 "f1": float(score), "raw": raw[i].copy(), "truth": truth[i].copy(),
                                 "keeps": {m: np.asarray(k[i], bool).copy() for m, k in keeps.items()}}
                    push = heapq.heappush if len(heap) < self.grid_events else heapq.heapreplace
                    push(heap, (*item_key, event))
            self.serial += 1

    def result(self):
        """Everything measured (scores NaN where nothing was counted).

        model_vs_per_event: for each other method, the events (with track hits) where the model's
        F1 is better, equal or worse. worst_events/best_events hold the events' masks for the
        picture; write_report keeps only their names and F1 in the JSON.
        """
        def entry(c):
            return {"counts": dict(c), "scores": ei.scores_from_counts(c)}

        edges = list(self.bins) + [None]
        return {
            "events": self.total[self.methods[0]]["events"],
            "methods": {m: entry(self.total[m]) for m in self.methods},
            "per_superlayer": {m: [dict(superlayer=s + 1, **entry(c)) for s, c in enumerate(self.superlayer[m])]
                               for m in self.methods},
            "vs_background_hits": {m: [dict(low=edges[b], high=edges[b + 1], **entry(c))
                                       for b, c in enumerate(self.background[m])] for m in self.methods},
            "threshold_sweep": [dict(threshold=t, **entry(c)) for t, c in zip(self.thresholds, self.sweep, strict=True)]
            if any(c["events"] for c in self.sweep) else [],
            "model_vs_per_event": self.paired if "model" in self.methods else {},
            "worst_events": [e for _, _, e in sorted(self.worst, key=lambda x: (-x[0], x[1]))],
            "best_events": [e for _, _, e in sorted(self.best, key=lambda x: (-x[0], x[1]))],
        }


def evaluate(raw_masks, truth_masks, keep_masks, probabilities=None, names=None, **settings):
    """Hit-level scores of each method on one set of events, in one call.

    raw_masks, truth_masks: boolean (N, 36, 112); keep_masks: {method: boolean (N, 36, 112)};
    probabilities: optional (N, 36, 112) model output for the threshold sweep. Returns
    HitEvaluation.result() plus the verdict.
    """
    ev = HitEvaluation(keep_masks, **settings)
    ev.add(raw_masks, truth_masks, keep_masks, probabilities, names)
    res = ev.result()
    res["verdict"] = verdict(res)
    return res


def verdict(result):
    """One sentence: does the model beat the best classical/CLAS12 baseline on F1, and how?"""
    methods = result["methods"]
    if "model" not in methods:
        return "no model scores"
    baselines = [m for m in ("SNR", "CAE") if m in methods and not math.isnan(methods[m]["scores"]["f1"])]
    model = methods["model"]["scores"]
    if not baselines or math.isnan(model["f1"]):
        return "not enough track hits to compare"
    best = max(baselines, key=lambda m: methods[m]["scores"]["f1"])
    base = methods[best]["scores"]
    d = {k: model[k] - base[k] for k in ("f1", "efficiency", "rejection")}
    word = "BETTER than" if d["f1"] > 0 else ("EQUAL to" if d["f1"] == 0 else "WORSE than")
    text = (f"On {result['events']} events the GAN is {word} the best CLAS12 baseline ({best}): "
            f"F1 {model['f1']:.4f} vs {base['f1']:.4f} ({d['f1']:+.4f}), efficiency {d['efficiency']:+.4f}, "
            f"rejection {d['rejection']:+.4f}.")
    paired = result.get("model_vs_per_event", {}).get(best)
    if paired and sum(paired.values()):
        text += (f" Event by event (F1): better in {paired['better']}, equal in {paired['equal']}, "
                 f"worse in {paired['worse']}.")
    return text


def format_table(result):
    """The printed table: one row per method."""
    cols = {"efficiency": "efficiency", "rejection": "rejection", "purity": "purity", "f1": "F1",
            "invented_per_event": "invented/event"}
    lines = [f"{'method':<10}" + "".join(f"{title:>16}" for title in cols.values())]
    for m, e in result["methods"].items():
        lines.append(f"{m:<10}" + "".join(f"{e['scores'][c]:>16.4f}" for c in cols))
    return "\n".join(lines)


def _json_ready(obj):
    """NaN -> null and numpy -> Python, so the JSON is strict and readable everywhere."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def report_paths(prefix):
    """The three report files for a prefix."""
    prefix = str(prefix)
    return {"json": Path(prefix + ".json"), "png": Path(prefix + ".png"), "events": Path(prefix + ".events.png")}


def plot_efficiency_rejection(ax, x, groups, method, color):
    """One method's efficiency (solid) and rejection (dashed) over groups of events (bins, superlayers)."""
    ax.plot(x, [g["scores"]["efficiency"] for g in groups], "o-", color=color, label=f"{method} efficiency")
    ax.plot(x, [g["scores"]["rejection"] for g in groups], "s--", color=color, alpha=0.6, label=f"{method} rejection")


def finish_axes(ax, xlabel, title):
    """Label, score range and legend shared by the report's efficiency/rejection panels."""
    ax.set_xlabel(xlabel)
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)


def write_report(result, prefix, overwrite=False, meta=None):
    """Write PREFIX.json (every number), PREFIX.png (the plots) and PREFIX.events.png; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = report_paths(prefix)
    for p in paths.values():
        check_output_path(p, overwrite)
    methods = list(result["methods"])
    colors = dict(zip(METHODS, ("tab:red", "tab:gray", "tab:blue", "tab:green"), strict=True))

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    # Score bars, model vs baselines.
    ax = axes[0, 0]
    keys = ("efficiency", "rejection", "purity", "f1")
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [np.nan_to_num(result["methods"][m]["scores"][k]) for k in keys]
        ax.bar(np.arange(len(keys)) + (i - (len(methods) - 1) / 2) * width, vals, width, label=m,
               color=colors.get(m))
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylim(0, 1.05)
    ax.set_title("hit-level scores")
    ax.legend(fontsize=8, loc="lower right")
    # Efficiency (solid) and rejection (dashed) vs background hits in the event.
    for m in methods:
        bins = [b for b in result["vs_background_hits"][m] if b["counts"]["events"]]
        x = [f"{b['low']}-{b['high'] - 1}" if b["high"] else f"{b['low']}+" for b in bins]
        plot_efficiency_rejection(axes[0, 1], x, bins, m, colors.get(m))
    finish_axes(axes[0, 1], "background hits in the event", "efficiency (solid) and rejection (dashed) vs background")
    # Efficiency and rejection vs the model's output threshold.
    ax = axes[1, 0]
    sweep = result["threshold_sweep"]
    if sweep:
        t = [s["threshold"] for s in sweep]
        for k, style in (("efficiency", "o-"), ("rejection", "s-"), ("f1", "^-")):
            ax.plot(t, [s["scores"][k] for s in sweep], style, label=f"model {k}")
    if result.get("threshold") is not None:
        ax.axvline(result["threshold"], color="k", ls=":", label=f"threshold used {result['threshold']:.2f}")
    for m in methods:
        if m != "model":
            ax.axhline(np.nan_to_num(result["methods"][m]["scores"]["f1"]), color=colors.get(m), ls="--", lw=0.8,
                       label=f"{m} F1")
    ax.set_xlabel("model output threshold")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title("model scores vs threshold")
    ax.legend(fontsize=7)
    # Per superlayer.
    for m in methods:
        plot_efficiency_rejection(axes[1, 1], np.arange(1, ei.SUPERLAYERS + 1), result["per_superlayer"][m], m,
                                  colors.get(m))
    finish_axes(axes[1, 1], "superlayer", "per superlayer")
    fig.suptitle(textwrap.fill(result.get("verdict", ""), 150), fontsize=10)
    fig.tight_layout()

    worst, best = result["worst_events"], result["best_events"]
    shown = worst + best
    with atomic_output(paths["png"], overwrite) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)
    if shown:
        columns = {"raw": [e["raw"] for e in shown], "truth": [e["truth"] for e in shown]}
        for m in methods:
            if m != "keep-all":
                columns[m] = [e["keeps"][m] & e["raw"] if m == "model" else e["keeps"][m] for e in shown]
        labels = [f"{'worst' if i < len(worst) else 'best'} {e['name'][:18]}\nF1 {e['f1']:.3f}"
                  for i, e in enumerate(shown)]
        with atomic_output(paths["events"], overwrite) as tmp, open(tmp, "wb") as fh:
            ei.save_event_grid(fh, columns, row_labels=labels,
                               title="worst and best events by model F1 (model shown on the raw hits)")
    data = dict(result, **(meta or {}), report_files={k: str(v) for k, v in paths.items()})
    data["worst_events"] = [{"name": e["name"], "f1": e["f1"]} for e in worst]
    data["best_events"] = [{"name": e["name"], "f1": e["f1"]} for e in best]
    with atomic_output(paths["json"], overwrite) as tmp:
        tmp.write_text(json.dumps(_json_ready(data), indent=1))
    return paths


# --- Baselines ------------------------------------------------------------------------------
def load_baselines(args):
    """The baseline keep functions {name: f(raw_mask) -> kept mask}: keep-all, SNR, optionally CAE."""
    import baselines

    keep = {"keep-all": lambda raw: raw.copy(), "SNR": baselines.snr_keep}
    if args.baseline_cae:
        kwargs = {} if args.cae_epochs is None else {"epochs": args.cae_epochs}
        if args.seed is not None:
            kwargs["seed"] = args.seed  # trained on the train split of the same split
        cae = baselines.get_cae(args.cae_data or args.data, args.cae_cache, train_if_missing=True, **kwargs)
        keep["CAE"] = lambda raw: baselines.cae_keep(cae, raw)
    return keep


# --- PNG folders ---------------------------------------------------------------------------
def list_pngs(folder):
    """The PNG files of a folder, sorted by name; an empty or missing folder is an InputError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: input folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise InputError(f"{folder}: no PNG files")
    return files


def check_png_job(args):
    """Check every input (and truth) PNG and every output name before anything is written."""
    inputs = list_pngs(args.input_dir)
    in_dir, out_dir = Path(args.input_dir).resolve(), Path(args.output_dir).resolve()
    if out_dir == in_dir or (args.truth_dir and out_dir == Path(args.truth_dir).resolve()):
        raise InputError(f"{args.output_dir}: output folder is an input folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{args.output_dir}: exists and is not a folder")
    if not out_dir.parent.is_dir():
        raise InputError(f"{args.output_dir}: its folder {out_dir.parent} does not exist")
    writes_in = out_dir if out_dir.is_dir() else out_dir.parent
    if not os.access(writes_in, os.W_OK | os.X_OK):
        raise InputError(f"{args.output_dir}: folder {writes_in} is not writable")
    truths = None
    if args.truth_dir:
        truth_dir = Path(args.truth_dir)
        if not truth_dir.is_dir():
            raise InputError(f"{truth_dir}: truth folder not found")
        truths = [truth_dir / p.name for p in inputs]
    for p in progress(inputs, desc="checking inputs", unit="event"):
        ei.read_event_png(p)
        if truths is not None:
            ei.read_event_png(truth_dir / p.name)
        target = out_dir / p.name
        if target.exists() and not args.overwrite:
            raise InputError(f"{target}: already exists (use --overwrite to replace it)")
    return inputs, truths


def write_png_atomic(path, image, overwrite):
    """Write one event PNG under a temporary name and rename it: never half a PNG under `path`."""
    with atomic_output(path, overwrite, suffix=".png") as tmp:
        ei.write_event_png(tmp, image)


def read_png_batch(paths, truth_paths=None):
    """uint8 raw images (N, 36, 112, 3) of a batch of PNGs, and truth hit masks if truth paths are given."""
    raw = np.stack([ei.read_event_png(p) for p in paths])
    truth = ei.hit_mask(np.stack([ei.read_event_png(t) for t in truth_paths])) if truth_paths else None
    return raw, truth


def write_png_batch(folder, paths, kept, overwrite):
    """One denoised PNG per event (hits = HIT_VALUE), named like its input, each written atomically."""
    for p, image in zip(paths, ei.mask_to_image(kept), strict=True):
        write_png_atomic(folder / p.name, image, overwrite)


def denoise_folder(model, threshold, inputs, output_dir, batch_size, overwrite=False, truths=None,
                   evaluation=None, baseline_keep=None, mask_with_raw=False):
    """Denoise PNGs batch by batch into output_dir (same names); optionally score each batch. Returns N.

    Two helper threads read the next batch and write the previous one while the network
    predicts the current one (PNG and file work release the GIL), so the files cost little
    on top of the model.
    """
    from concurrent.futures import ThreadPoolExecutor

    output_dir = Path(output_dir)
    output_dir.mkdir(exist_ok=True)
    starts = range(0, len(inputs), batch_size)
    batch_of = lambda s: (inputs[s:s + batch_size], truths[s:s + batch_size] if evaluation is not None else None)
    bar = progress(total=len(inputs), desc="denoising", unit="event")
    with ThreadPoolExecutor(max_workers=2) as pool:
        reading, writing = pool.submit(read_png_batch, *batch_of(0)), None
        for i, start in enumerate(starts):
            paths = inputs[start:start + batch_size]
            raw, truth = reading.result()
            if i + 1 < len(starts):
                reading = pool.submit(read_png_batch, *batch_of(starts[i + 1]))
            prob = predict_probabilities(model, ei.pad_event(raw).astype(np.float32) / 255.0, batch_size)
            kept = prob > threshold
            raw_mask = ei.hit_mask(raw)
            if mask_with_raw:
                kept &= raw_mask
            if writing is not None:
                writing.result()  # raises here if the previous batch could not be written
            writing = pool.submit(write_png_batch, output_dir, paths, kept, overwrite)
            if evaluation is not None:
                keeps = {"model": kept, **{m: f(raw_mask) for m, f in baseline_keep.items()}}
                evaluation.add(raw_mask, truth, keeps, prob, [p.name for p in paths])
            bar.update(len(paths))
        writing.result()
    bar.close()
    return len(inputs)


# --- HDF5 ----------------------------------------------------------------------------------
def default_h5_output(data):
    """DATA_denoised.h5 beside the data file."""
    data = Path(data)
    return data.with_name(data.stem + "_denoised.h5")


def denoise_h5(model, threshold, data, output, batch_size, overwrite=False, seed=None, evaluation=None,
               baseline_keep=None, mask_with_raw=False, model_path=""):
    """Denoise the test split of the project's HDF5 file into a new HDF5 file (atomically). Returns N."""
    import h5py

    import data_management as dm

    split = dm.load_split(data) if seed is None else dm.load_split(data, seed=seed)
    indices = np.asarray(split["test"], np.int64)
    if len(indices) == 0:
        raise InputError(f"{data}: the test split is empty")
    with h5py.File(data, "r") as f:
        names = f["names"][indices] if "names" in f else np.array([str(i) for i in indices], dtype=object)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    n = len(indices)
    with atomic_output(output, overwrite, suffix=".h5") as tmp, h5py.File(tmp, "w") as out:
        den = out.create_dataset("denoised", (n, ei.LAYERS, ei.WIRES, ei.CHANNELS), np.uint8,
                                 chunks=(min(n, 256), ei.LAYERS, ei.WIRES, ei.CHANNELS), compression="gzip",
                                 compression_opts=1)
        out.create_dataset("indices", data=indices)
        out.create_dataset("names", data=names, dtype=h5py.string_dtype())
        out.attrs.update({"source": str(Path(data).resolve()), "model": str(model_path), "threshold": threshold,
                          "split": "test", "mask_with_raw": mask_with_raw,
                          "layout": json.dumps({k: list(v) if isinstance(v, tuple) else v
                                                for k, v in ei.LAYOUT.items()})})
        bar = progress(total=n, desc="denoising", unit="event")
        start = 0
        for raw_p, truth_p in dm.make_dataset(data, indices, batch_size=batch_size):
            raw_p = raw_p.numpy()
            prob = predict_probabilities(model, raw_p, batch_size)
            raw_mask = ei.hit_mask(ei.crop_event(raw_p), ei.SCALED_HIT_THRESHOLD)
            kept = prob > threshold
            if mask_with_raw:
                kept &= raw_mask
            stop = start + len(kept)
            den[start:stop] = ei.mask_to_image(kept)
            if evaluation is not None:
                truth = ei.hit_mask(ei.crop_event(truth_p.numpy()), ei.SCALED_HIT_THRESHOLD)
                keeps = {"model": kept, **{m: f(raw_mask) for m, f in baseline_keep.items()}}
                evaluation.add(raw_mask, truth, keeps, prob, names[start:stop])
            start = stop
            bar.update(len(kept))
        bar.close()
        if start != n:
            raise InputError(f"{data}: the data pipeline gave {start} test events, expected {n}")
    return n


# --- Main ------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    check_settings(args)
    model_path = resolve_model(args.model)  # model, threshold: checked before the inputs are scanned
    info = read_sidecar(model_path)
    threshold = choose_threshold(args, info, model_path)

    if args.input_dir:
        inputs, truths = check_png_job(args)
        out_path = Path(args.output_dir)
        default_report = out_path.parent / (out_path.name + ".report")
    else:
        import data_management

        if not Path(args.data).is_file():
            raise InputError(f"{args.data}: data file not found")
        data_management.check_h5(args.data)
        out_path = Path(args.output or default_h5_output(args.data))
        if out_path.resolve() == Path(args.data).resolve():
            raise InputError(f"{out_path}: output is the input file")
        check_output_path(out_path, args.overwrite)
        default_report = out_path.with_suffix(".report")
    report = Path(args.report) if args.report else default_report
    if args.evaluate:
        for p in report_paths(report).values():
            check_output_path(p, args.overwrite)

    model = load_generator(model_path)
    print(f"model {model_path} (threshold {threshold:.3f}{', from validation' if args.threshold is None else ''})")

    evaluation = baseline_keep = None
    if args.evaluate:
        baseline_keep = load_baselines(args)
        evaluation = HitEvaluation(["model", *baseline_keep], args.sweep_thresholds, args.background_bins,
                                   args.grid_events)
    job = dict(evaluation=evaluation, baseline_keep=baseline_keep, mask_with_raw=args.mask_with_raw,
               overwrite=args.overwrite)
    if args.input_dir:
        n = denoise_folder(model, threshold, inputs, out_path, args.batch_size, truths=truths, **job)
    else:
        n = denoise_h5(model, threshold, args.data, out_path, args.batch_size, seed=args.seed,
                       model_path=model_path, **job)
    print(f"wrote {n} denoised events to {out_path}")

    if evaluation is not None:
        result = evaluation.result()
        result["threshold"] = threshold
        result["verdict"] = verdict(result)
        result["table"] = format_table(result)
        print(result["table"])
        print(result["verdict"])
        meta = {"model": str(model_path), "model_info": info, "input": str(args.input_dir or args.data),
                "output": str(out_path), "mask_with_raw": args.mask_with_raw}
        paths = write_report(result, report, args.overwrite, meta)
        print(f"report: {paths['json']}, {paths['png']}, {paths['events']}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
