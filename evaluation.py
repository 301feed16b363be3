"""Hit-level and tracking-level scoring of a denoiser against the truth and the CLAS12 baselines, and its report.

Used by Pix2Pix_denoise.py --evaluate (hipo_denoise for --hipo) and bench/score_probabilities.py; no TensorFlow or Keras
(the CAE baseline imports them when asked for). On boolean hit masks (N, 36, 112):

    keeps = {"model": prob > 0.5, **{m: keep(raw) for m, keep in baseline_keeps().items()}}
    result = evaluate(raw, truth, keeps, prob, track_ids=ids)  # scores, tracks, per superlayer, sweep, verdict
    finish_report(result, 0.5, "runs/pix2pix/test.report")   # table, verdict, .json, .png, .events.png
"""

import heapq
import json
import math
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

import event_image as ei
import tracking
from report_plots import write_event_grid, write_plots
from script_utils import atomic_output, check_output_path, json_ready

BACKGROUND_BINS = (0, 10, 20, 40, 60, 80, 100, 130, 160, 200, 300)  # lower edges of the background-hit bins
GRID_EVENTS = 4  # worst and best events shown in the report


def _empty_counts():
    return dict.fromkeys(ei.COUNT_KEYS, 0)


def event_f1(raw, truth, kept):
    """Per-event F1 (N,) of boolean masks (N, 36, 112); 1.0 for an event with nothing to find or keep."""
    track = raw & truth
    kept_raw = kept & raw
    tp = (kept_raw & track).sum(axis=(1, 2))
    den = track.sum(axis=(1, 2)) + kept_raw.sum(axis=(1, 2))
    return np.where(den > 0, 2.0 * tp / np.maximum(den, 1), 1.0)


def tally(counts, a, b):
    """Add the events where a < b, a == b and a > b to counts' three keys, in their order."""
    for key, n in zip(counts, ((a < b).sum(), (a == b).sum(), (a > b).sum()), strict=True):
        counts[key] += int(n)


class HitEvaluation:
    """Hit-level counts of several methods, accumulated batch by batch (memory stays flat).

    Per method: overall, per superlayer and per bin of background hits in the event, with the
    tracking counts (tracking.py: reconstructable tracks, fake segments) overall and per bin; for
    the model also a sweep over output thresholds (from its probabilities; hit-level and tracking
    counts at each) and the worst and best events by F1 (only GRID_EVENTS of each are kept).
    """

    def __init__(self, methods, thresholds=ei.SWEEP_THRESHOLDS, background_bins=BACKGROUND_BINS,
                 grid_events=GRID_EVENTS):
        self.methods = list(methods)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.bins = tuple(int(b) for b in background_bins)
        self.grid_events = grid_events
        self.total = {m: _empty_counts() for m in self.methods}
        self.superlayer = {m: [_empty_counts() for _ in range(ei.SUPERLAYERS)] for m in self.methods}
        self.background = {m: [_empty_counts() for _ in self.bins] for m in self.methods}
        self.tracking = {m: tracking.add_counts({}, {}) for m in self.methods}
        self.tracking_background = {m: [tracking.add_counts({}, {}) for _ in self.bins] for m in self.methods}
        self.track_id_events = {"with": 0, "without": 0}  # events scored with and without track ids
        self.sweep = [_empty_counts() for _ in self.thresholds]
        self.sweep_tracking = [tracking.add_counts({}, {}) for _ in self.thresholds]
        self.paired = {m: {"better": 0, "equal": 0, "worse": 0} for m in self.methods if m != "model"}
        self.paired_fakes = {m: {"fewer": 0, "equal": 0, "more": 0} for m in self.methods if m != "model"}
        self.worst, self.best = [], []  # heaps of (key, -serial, event)
        self.serial = 0

    def add_model(self, raw, truth, kept, probabilities, names, track_ids, baselines):
        """Count one batch of the model's kept hits beside the baselines' ({method: keep function} of raw hits)."""
        keeps = {"model": kept, **{m: keep(raw) for m, keep in (baselines or {}).items()}}
        self.add(raw, truth, keeps, probabilities, names, track_ids)

    def add(self, raw, truth, keeps, probabilities=None, names=None, track_ids=None):
        """Count one batch: boolean masks (N, 36, 112); keeps = {method: kept mask}.

        track_ids: (N, 36, 112) track number of each truth hit (0 = none), or None: then the truth
        of each event counts as one track.
        """
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
        self._add_tracking(raw, truth, keeps, track_ids, bin_of_event)
        if probabilities is not None:
            swept = [probabilities > t for t in self.thresholds]
            per_threshold = tracking.counts_of_keeps(raw, truth, swept, track_ids)
            for i, (kept, per_event) in enumerate(zip(swept, per_threshold, strict=True)):
                self.sweep[i] = ei.add_counts(self.sweep[i], ei.hit_counts(raw, truth, kept))
                self.sweep_tracking[i] = tracking.add_counts(self.sweep_tracking[i],
                                                             {k: v.sum() for k, v in per_event.items()})
        if "model" in keeps:
            f1, rows = self._compare_events(raw, truth, keeps)
            if self.grid_events:
                self._keep_extremes(raw, truth, keeps, names, f1, rows)

    def _add_tracking(self, raw, truth, keeps, track_ids, bin_of_event):
        """Add each method's tracking counts (tracking.counts_of_keeps) overall and per background bin."""
        self.track_id_events["without" if track_ids is None else "with"] += len(raw)
        per_method = tracking.counts_of_keeps(raw, truth, [keeps[m] for m in self.methods], track_ids)
        for m, per_event in zip(self.methods, per_method, strict=True):
            self.tracking[m] = tracking.add_counts(self.tracking[m], {k: v.sum() for k, v in per_event.items()})
            for b in np.unique(bin_of_event[bin_of_event >= 0]):
                sel = bin_of_event == b
                self.tracking_background[m][b] = tracking.add_counts(
                    self.tracking_background[m][b], {k: v[sel].sum() for k, v in per_event.items()})
        if "model" in self.methods:
            fakes = {m: c["fake_segments"] for m, c in zip(self.methods, per_method, strict=True)}
            for m, c in self.paired_fakes.items():
                tally(c, fakes["model"], fakes[m])

    def _compare_events(self, raw, truth, keeps):
        """Count the events (with track hits) where the model's F1 beats, ties or loses to each other method's."""
        has_track = (raw & truth).any(axis=(1, 2))
        f1 = event_f1(raw[has_track], truth[has_track], np.asarray(keeps["model"], bool)[has_track])
        for m in self.methods:
            if m != "model":
                other = event_f1(raw[has_track], truth[has_track], np.asarray(keeps[m], bool)[has_track])
                tally(self.paired[m], other, f1)  # better: the other's F1 below the model's
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
        F1 is better, equal or worse; fake_segments_per_event_vs: the events where the model leaves
        fewer, as many or more fake segments. worst_events/best_events hold the events' masks for the
        picture; write_report keeps only their names and F1 in the JSON. Each method's entry and
        background bin has "tracking": tracking.py's counts and scores; "track_ids" says how many
        events had track ids (without them the truth of an event counts as one track).
        """
        def entry(c, t=None):
            out = {"counts": dict(c), "scores": ei.scores_from_counts(c)}
            if t is not None:
                out["tracking"] = {"counts": dict(t), "scores": tracking.scores_from_counts(t)}
            return out

        edges = list(self.bins) + [None]
        return {
            "events": self.total[self.methods[0]]["events"],
            "methods": {m: entry(self.total[m], self.tracking[m]) for m in self.methods},
            "track_ids": dict(self.track_id_events),
            "per_superlayer": {m: [dict(superlayer=s + 1, **entry(c)) for s, c in enumerate(self.superlayer[m])]
                               for m in self.methods},
            "vs_background_hits": {m: [dict(low=edges[b], high=edges[b + 1], **entry(c, t)) for b, (c, t)
                                       in enumerate(zip(self.background[m], self.tracking_background[m], strict=True))]
                                   for m in self.methods},
            "threshold_sweep": [dict(threshold=t, **entry(c, k)) for t, c, k
                                in zip(self.thresholds, self.sweep, self.sweep_tracking, strict=True)]
            if any(c["events"] for c in self.sweep) else [],
            "model_vs_per_event": self.paired if "model" in self.methods else {},
            "fake_segments_per_event_vs": self.paired_fakes if "model" in self.methods else {},
            "worst_events": [e for _, _, e in sorted(self.worst, key=lambda x: (-x[0], x[1]))],
            "best_events": [e for _, _, e in sorted(self.best, key=lambda x: (-x[0], x[1]))],
        }


def evaluate(raw_masks, truth_masks, keep_masks, probabilities=None, names=None, track_ids=None, **settings):
    """Hit-level and tracking scores of each method on one set of events, in one call.

    raw_masks, truth_masks: boolean (N, 36, 112); keep_masks: {method: boolean (N, 36, 112)};
    probabilities: optional (N, 36, 112) model output for the threshold sweep; track_ids:
    optional (N, 36, 112) track numbers of the truth hits (None: one track per event). Returns
    HitEvaluation.result() plus the verdict.
    """
    ev = HitEvaluation(keep_masks, **settings)
    ev.add(raw_masks, truth_masks, keep_masks, probabilities, names, track_ids)
    res = ev.result()
    res["verdict"] = verdict(res)
    return res


def shown(x, places, top=None):
    """x with `places` decimals, or more (up to 6) where fewer would show a positive x as 0 or an x below top
    as top: one track lost in 30,000 reads 99.997 %, not 100.00 %; 7 fake segments in 16,000 events 0.0004."""
    while places < 6 and ((0 < x and round(x, places) == 0) or (top is not None and x < top <= round(x, places))):
        places += 1
    return f"{x:.{places}f}"


def percent(share):
    """A share (0..1) as a percentage with 2 decimals, or more where 2 would round it to 0 or 100."""
    return shown(100 * share, 2, 100)


def verdict(result):
    """One sentence: does the model beat the best classical/CLAS12 baseline on F1, and how?"""
    methods = result["methods"]
    if "model" not in methods:
        return "no model scores"
    baselines = [m for m in ("SNR", "CAE") if m in methods and not math.isnan(methods[m]["scores"]["f1"])]
    model = methods["model"]["scores"]
    if not baselines or math.isnan(model["f1"]) or math.isnan(model["efficiency"]):
        return "not enough track hits to compare"
    best = max(baselines, key=lambda m: methods[m]["scores"]["f1"])
    base = methods[best]["scores"]
    d = {k: model[k] - base[k] for k in ("f1", "efficiency", "rejection")}
    shown_f1 = round(d["f1"], 4)  # the word agrees with the difference printed
    word = "BETTER than" if shown_f1 > 0 else ("EQUAL (to 4 decimals) to" if shown_f1 == 0 else "WORSE than")
    text = (f"On {result['events']} events the model is {word} the best CLAS12 baseline ({best}): "
            f"F1 {model['f1']:.4f} vs {base['f1']:.4f} ({d['f1']:+.4f}), efficiency {d['efficiency']:+.4f}, "
            f"rejection {d['rejection']:+.4f}.")
    paired = result.get("model_vs_per_event", {}).get(best)
    if paired and sum(paired.values()):
        text += (f" Event by event (F1): better in {paired['better']}, equal in {paired['equal']}, "
                 f"worse in {paired['worse']}.")
    return text + tracking_verdict(result)


def tracking_verdict(result):
    """' Tracking: ...': the model's share of the raw-reconstructable tracks kept, its fake segments, the baselines'."""
    methods = result["methods"]
    if "tracking" not in methods["model"]:
        return ""
    scores = {m: e["tracking"]["scores"] for m, e in methods.items()}
    others = [m for m in ("SNR", "CAE") if m in scores]
    kept = ", ".join(f"{m} {percent(scores[m]['kept_ge5'])} %" for m in others)
    fake = "".join(f", {m} {shown(scores[m]['fake_segments_per_event'], 3)} / "
                   f"{shown(scores[m]['fake_beside_tracks_per_event'], 3)}" for m in others)
    model = scores["model"]
    if math.isnan(model["kept_ge5"]):
        tracks = "no track is reconstructable (>= 5 of 6 superlayers) in the raw events; the model"
    else:
        how_sure = kept_share_text(methods["model"]["tracking"]["counts"])
        tracks = (f"the model keeps {percent(model['kept_ge5'])} % of the tracks reconstructable (>= 5 of 6 "
                  f"superlayers) in the raw events ({how_sure}{f'; {kept}' if kept else ''}) and")
    text = (f" Tracking: {tracks} leaves {shown(model['fake_segments_per_event'], 3)} fake segments per event, "
            f"{shown(model['fake_beside_tracks_per_event'], 3)} of them beside a track (raw "
            f"{shown(model['raw_fake_segments_per_event'], 3)} / "
            f"{shown(model['raw_fake_beside_tracks_per_event'], 3)}{fake}).")
    return text + fake_segment_sentence(result) + at_equal_tracks(result) + at_equal_fakes(result) + \
        track_ids_note(result, " ")


def kept_share_text(counts, confidence=0.95):
    """'6,504 of 6,572, 98.69-99.20 % with 95 % confidence': the tracks behind a kept_ge5 share and its exact
    (Clopper-Pearson) binomial interval, the shares on events of this kind that these counts do not rule out."""
    kept, of = counts["after_ge5"], counts["raw_ge5"]
    interval = stats.binomtest(kept, of).proportion_ci(confidence, method="exact")
    return (f"{kept:,} of {of:,}, {percent(interval.low)}-{percent(interval.high)} % with "
            f"{100 * confidence:g} % confidence")


def fake_segment_sentence(result):
    """' Fake segments in these N events: model a; SNR b (model fewer in x events, more in y: model fewer, ...).'

    The counts behind the per-event figures, and whether they differ by more than chance: the methods
    denoise the same events, so each p is a two-sided sign test on the events where the two leave a
    different number of fake segments (an exact binomial test of the model's share of those events
    against one half); events where both leave as many say nothing either way, and a handful of events
    is no evidence. p < 0.05 is called a difference ('' without a baseline).
    """
    counts = {m: e["tracking"]["counts"]["fake_segments"] for m, e in result["methods"].items() if "tracking" in e}
    ours, paired = counts["model"], result["fake_segments_per_event_vs"]
    parts = []
    for other in (m for m in ("SNR", "CAE") if m in counts):
        fewer, more = paired[other]["fewer"], paired[other]["more"]
        p = stats.binomtest(fewer, fewer + more, 0.5).pvalue if fewer + more else 1.0
        word = "as many within chance" if p >= 0.05 else ("model fewer" if fewer > more else "model more")
        parts.append(f"{other} {counts[other]} (model fewer in {fewer} events, more in {more}: {word}, "
                     f"{p_value_text(p)})")
    if not parts:
        return ""
    return f" Fake segments in these {result['events']} events: model {ours}; {'; '.join(parts)}."


def p_value_text(p):
    """'p < 0.001', or p to 3 decimals (4 where 3 would show a p below 0.05 as 0.050)."""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.4f}" if p < 0.05 <= round(p, 3) else f"p = {p:.3f}"


def swept_tracking(result, other):
    """(the other method's tracking scores, [(threshold, the model's tracking scores)] over the sweep);
    (None, []) without a sweep carrying tracking or without that method."""
    methods, sweep = result["methods"], result.get("threshold_sweep", [])
    if other not in methods or not sweep or "tracking" not in sweep[0]:
        return None, []
    return methods[other]["tracking"]["scores"], [(s["threshold"], s["tracking"]["scores"]) for s in sweep]


def at_equal_tracks(result, other="CAE"):
    """' At the CAE's share of tracks ...': the model at the highest swept threshold keeping at least as many
    reconstructable tracks as the other method, and its fake segments there, or that none does ('' without a
    sweep, the method or a reconstructable track).

    The fair comparison of fake segments: a method that removes more tracks leaves fewer segments of any kind.
    """
    target, sweep = swept_tracking(result, other)
    if not sweep or math.isnan(target["kept_ge5"]):
        return ""
    text = f" At {other}'s share of tracks ({percent(target['kept_ge5'])} %) the model "
    enough = [(t, s) for t, s in sweep if s["kept_ge5"] >= target["kept_ge5"]]
    if not enough:
        return text + f"keeps fewer at every swept threshold (down to {min(t for t, _ in sweep):.2f})."
    t, at = max(enough, key=lambda ts: ts[0])
    return (text + f"(threshold {t:.2f}: {percent(at['kept_ge5'])} %) would leave "
            f"{shown(at['fake_segments_per_event'], 3)} fake segments per event "
            f"({other} {shown(target['fake_segments_per_event'], 3)}).")


def at_equal_fakes(result, other="CAE"):
    """' At the CAE's fake segments ...': the model at the lowest swept threshold leaving no more fake segments
    per event than the other method, and its share of tracks there ('' without a sweep or the method).

    The other side of at_equal_tracks: what the model keeps of the tracks when it is as clean as the other.
    """
    target, sweep = swept_tracking(result, other)
    if not sweep:
        return ""
    text = f" At {other}'s fake segments ({shown(target['fake_segments_per_event'], 3)} per event) the model "
    clean = [(t, s) for t, s in sweep if s["fake_segments_per_event"] <= target["fake_segments_per_event"]]
    if not clean:  # also when the other's figure is NaN
        return text + f"leaves more at every swept threshold (up to {max(t for t, _ in sweep):.2f})."
    t, at = min(clean, key=lambda ts: ts[0])
    return (text + f"(threshold {t:.2f}: {shown(at['fake_segments_per_event'], 3)}) would keep "
            f"{percent(at['kept_ge5'])} % of the tracks ({other} {percent(target['kept_ge5'])} %).")


def track_ids_note(result, lead=""):
    """What counted as a track when some events had no track ids ('' when all had them)."""
    without = result.get("track_ids", {}).get("without", 0)
    if not without:
        return ""
    return f"{lead}({without} events without track ids: the truth of each counts as one track.)"


TABLE_COLUMNS = {"efficiency": "efficiency", "rejection": "rejection", "purity": "purity", "f1": "F1",
                 "invented_per_event": "invented/event"}
TRACKING_COLUMNS = {"kept_ge5": "tracks >=5/6", "fake_segments_per_event": "fake seg/event",
                    "fake_beside_tracks_per_event": "beside tracks"}
SHARE_TOP = {c: 1 for c in ("efficiency", "rejection", "purity", "f1", "kept_ge5")}  # shares: never shown as 1 below it


def format_table(result):
    """The printed table: one row per method (tracking columns from tracking.py), then what they count."""
    cols = dict(TABLE_COLUMNS, **TRACKING_COLUMNS)
    lines = [f"{'method':<10}" + "".join(f"{title:>16}" for title in cols.values())]
    for m, e in result["methods"].items():
        scores = dict(e["scores"], **e.get("tracking", {}).get("scores", {}))
        lines.append(f"{m:<10}" + "".join(f"{shown(scores.get(c, math.nan), 4, SHARE_TOP.get(c)):>16}" for c in cols))
    first = next(iter(result["methods"].values()), {})
    if "tracking" in first:
        c, s = first["tracking"]["counts"], first["tracking"]["scores"]
        lines.append("tracks >=5/6: share of the tracks reconstructable in the raw event (segments in >= 5 of 6 "
                     "superlayers) that still are; fake seg/event: background segments left; beside tracks: "
                     f"those of them whose road comes within {tracking.BESIDE_TRACK_WIRES} wire of a track's raw hits "
                     "in their superlayer")
        lines.append(f"raw events: {c['tracks']} tracks, reconstructable from 6/6 {shown(s['raw_6'], 4, 1)}, "
                     f">=5/6 {shown(s['raw_ge5'], 4, 1)}, >=4/6 {shown(s['raw_ge4'], 4, 1)}; "
                     f"{shown(s['raw_fake_segments_per_event'], 4)} fake segments/event "
                     f"({shown(s['raw_fake_beside_tracks_per_event'], 4)} beside tracks)")
        note = track_ids_note(result)
        if note:
            lines.append(note)
    return "\n".join(lines)


def report_paths(prefix):
    """The three report files for a prefix."""
    prefix = str(prefix)
    return {"json": Path(prefix + ".json"), "png": Path(prefix + ".png"), "events": Path(prefix + ".events.png")}



# --- The report ------------------------------------------------------------------------------
def write_report(result, prefix, overwrite=False, meta=None):
    """Write PREFIX.json (every number), PREFIX.png (the plots) and PREFIX.events.png; return the paths."""
    paths = report_paths(prefix)
    for p in paths.values():
        check_output_path(p, overwrite)
    written = []
    try:  # all three files or none of them
        with warnings.catch_warnings():  # event names in scripts the font lacks: drawn as boxes, no warning
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from (current )?font")
            write_plots(paths["png"], result, overwrite)
            written.append(paths["png"])
            write_event_grid(paths["events"], result, overwrite)
            written.append(paths["events"])
        data = dict(result, **(meta or {}), report_files={k: str(v) for k, v in paths.items()})
        for key in ("worst_events", "best_events"):
            data[key] = [{"name": e["name"], "f1": e["f1"]} for e in result[key]]
        with atomic_output(paths["json"], overwrite) as tmp:
            tmp.write_text(json.dumps(json_ready(data), indent=1, allow_nan=False))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return paths


def finish_report(result, threshold, prefix, overwrite=False, meta=None):
    """Add the threshold, verdict and table to result, print the table and verdict, write the report."""
    result["threshold"] = threshold
    result["verdict"] = verdict(result)
    result["table"] = format_table(result)
    print(result["table"])
    print(result["verdict"])
    paths = write_report(result, prefix, overwrite, meta)
    print(f"report: {paths['json']}, {paths['png']}, {paths['events']}")
    return paths


# --- The baselines ---------------------------------------------------------------------------
def baseline_keeps(cae_data=None, **cae_settings):
    """{name: f(raw hit masks) -> kept masks} of the baselines: keep-all, SNR and, given cae_data, the CAE.

    cae_data: the HDF5 file the CAE trains on (trained and cached if missing); cae_settings go
    to baselines.get_cae (cae_cache=, epochs=, split_seed=; None = its default).
    """
    import baselines

    keep = {"keep-all": lambda raw: raw.copy(), "SNR": baselines.snr_keep}
    if cae_data is not None:
        settings = {k: v for k, v in cae_settings.items() if v is not None}
        cae = baselines.get_cae(cae_data, train_if_missing=True, **settings)
        keep["CAE"] = lambda raw: baselines.cae_keep(cae, raw)
    return keep
