"""The pictures of an evaluation report (evaluation.py's result): PREFIX.png's panels and PREFIX.events.png.

Matplotlib (Agg) only; each plot_* draws one panel of write_plots' figure from the result's numbers.
"""

import math
import textwrap

import numpy as np

import event_image as ei
from script_utils import atomic_output

COLORS = {"model": "tab:red", "keep-all": "tab:gray", "SNR": "tab:blue", "CAE": "tab:green"}  # one per method
# Marker sizes, in the order the report draws the methods: each smaller than the one drawn before, so that
# where two methods' figures are the same (SNR keeps every fake segment keep-all does) both still show.
MARKER_SIZES = {"model": 9, "keep-all": 7, "SNR": 5, "CAE": 3}


def look(method):
    """A method's colour, marker size and line width in the report's panels."""
    size = MARKER_SIZES.get(method, 3)
    return {"color": COLORS.get(method), "ms": size, "lw": 0.5 + size / 4}


def plot_efficiency_rejection(ax, x, groups, method):
    """One method's efficiency (solid) and rejection (dashed) over groups of events (bins, superlayers)."""
    ax.plot(x, [g["scores"]["efficiency"] for g in groups], "o-", **look(method), label=f"{method} efficiency")
    ax.plot(x, [g["scores"]["rejection"] for g in groups], "s--", **look(method), alpha=0.6,
            label=f"{method} rejection")


def finish_axes(ax, xlabel, title, low=0.0):
    """Label, score range and legend shared by the report's line panels: scores from low (zoomed in) to 1,
    the legend in a band above them, where it covers no point."""
    ax.set_xlabel(xlabel)
    span = 1.0 - low
    ax.set_ylim(low - 0.05 * span - 0.005, 1.0 + 0.4 * span + 0.005)
    ax.set_yticks([v for v in ax.get_yticks() if low - 0.05 * span - 0.005 <= v <= 1.0 + 1e-9])
    ax.set_title(title)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7, ncol=4, loc="upper center")


def bin_label(b):
    """A background-hit bin's tick label: its edges and how many events it holds (few: a few hits' worth)."""
    edges = f"{b['low']}-{b['high'] - 1}" if b["high"] else f"{b['low']}+"
    return f"{edges}\n{b['counts']['events']} ev."


def plot_scores(ax, result):
    """Score bars, the model next to the baselines."""
    methods = list(result["methods"])
    keys = ("efficiency", "rejection", "purity", "f1")
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [none_as_nan(result["methods"][m]["scores"][k]) for k in keys]  # undefined (nothing kept): no bar
        ax.bar(np.arange(len(keys)) + (i - (len(methods) - 1) / 2) * width, vals, width, label=m,
               color=COLORS.get(m))
    ax.set_xticks(range(len(keys)), ["efficiency", "rejection", "purity", "F1"])
    ax.set_ylim(0, 1.25)
    ax.set_yticks(np.arange(0, 1.01, 0.2))
    ax.set_title("hit-level scores")
    ax.legend(fontsize=8, loc="upper center", ncol=len(methods))


def none_as_nan(value):
    """A score as a float: an undefined one (None in a report read back, NaN in one made) is NaN."""
    return math.nan if value is None else float(value)


def plot_vs_background(ax, result):
    """Efficiency and rejection vs the background hits in the event (bins holding events only)."""
    for m in result["methods"]:
        bins = [b for b in result["vs_background_hits"][m] if b["counts"]["events"]]
        plot_efficiency_rejection(ax, [bin_label(b) for b in bins], bins, m)
    finish_axes(ax, "background hits in the event", "efficiency (solid) and rejection (dashed) vs background")


def plot_threshold_sweep(ax, result):
    """The model's scores vs its output threshold, the threshold used and the baselines' F1."""
    sweep = result["threshold_sweep"]
    if sweep:  # the model's colour, one marker and line style per score (the other colours are other methods')
        t = [s["threshold"] for s in sweep]
        for k, style, alpha in (("efficiency", "o-", 1.0), ("rejection", "s--", 0.6), ("f1", "^:", 1.0)):
            ax.plot(t, [none_as_nan(s["scores"][k]) for s in sweep], style, color=COLORS["model"], alpha=alpha,
                    ms=4, label=f"model {'F1' if k == 'f1' else k}")
    if result.get("threshold") is not None:
        ax.axvline(result["threshold"], color="k", ls=":", label=f"threshold used {result['threshold']:.2f}")
    for m in result["methods"]:
        f1 = none_as_nan(result["methods"][m]["scores"]["f1"])
        if m != "model" and math.isfinite(f1):
            ax.axhline(f1, color=COLORS.get(m), ls="--", lw=0.8, label=f"{m} F1")
    finish_axes(ax, "model output threshold", "model scores vs threshold")


def tracking_sweep(result):
    """The threshold sweep's entries that carry tracking figures."""
    return [s for s in result.get("threshold_sweep", []) if "tracking" in s]


def plot_tracking_tradeoff(ax, result):
    """Tracks still reconstructable (>= 5/6) against fake segments left: the model at each swept threshold
    (some labelled, the one used ringed), every other method as one point."""
    sweep = tracking_sweep(result)
    x = [s["tracking"]["scores"]["fake_segments_per_event"] for s in sweep]
    y = [s["tracking"]["scores"]["kept_ge5"] for s in sweep]
    if sweep:
        ax.plot(x, y, "o-", color=COLORS.get("model"), ms=3, label="model, threshold swept")
    for m, e in result["methods"].items():
        if "tracking" not in e:
            continue
        t = e["tracking"]["scores"]
        if m == "model":  # its own point, whether or not its threshold is a swept one
            used = f" {result['threshold']:.2f}" if result.get("threshold") is not None else ""
            ax.plot(t["fake_segments_per_event"], t["kept_ge5"], "o", ms=10, mfc="none", color="k",
                    label=f"model, threshold used{used}")
        else:
            ax.plot(t["fake_segments_per_event"], t["kept_ge5"], "s", **look(m), label=m)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("fake segments per event")
    ax.set_ylabel("tracks >= 5/6 still reconstructable")
    ax.set_title("tracking trade-off: up and left is better")
    ax.legend(fontsize=7)
    label_apart(ax, [f"{s['threshold']:.2f}" for s in sweep], x, y)


def label_apart(ax, labels, x, y, gap=14):
    """Label points where a label fits: one closer than gap pixels to a label already placed is left out."""
    ax.autoscale_view()
    placed = []
    for text, point in zip(labels, ax.transData.transform(np.column_stack([x, y])) if labels else [], strict=True):
        if all(np.hypot(*(point - p)) >= gap for p in placed):
            placed.append(point)
            ax.annotate(text, ax.transData.inverted().transform(point), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")


def plot_tracking_vs_threshold(ax, result):
    """The model's tracks still reconstructable (left axis) and fake segments (right axis) vs its threshold."""
    sweep = tracking_sweep(result)
    t = [s["threshold"] for s in sweep]
    color = COLORS.get("model")
    ax.plot(t, [s["tracking"]["scores"]["kept_ge5"] for s in sweep], "o-", color=color, label="tracks >= 5/6")
    ax.set_xlabel("model output threshold")
    ax.set_ylabel("tracks >= 5/6 still reconstructable")
    ax.set_ylim(-0.02, 1.05)
    right = ax.twinx()
    right.plot(t, [s["tracking"]["scores"]["fake_segments_per_event"] for s in sweep], "s--", color="tab:purple",
               label="fake segments / event")
    top = right.get_ylim()[1]
    right.set_ylim(-0.02 / 1.05 * top, top)  # its zero level with the left axis' zero
    right.set_ylabel("fake segments per event")
    if result.get("threshold") is not None:
        ax.axvline(result["threshold"], color="k", ls=":", label=f"threshold used {result['threshold']:.2f}")
    ax.set_title("model tracking vs threshold")
    lines = ax.get_legend_handles_labels(), right.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=7, loc="lower left")


def plot_superlayers(ax, result):
    """Efficiency and rejection per superlayer."""
    for m in result["methods"]:
        plot_efficiency_rejection(ax, np.arange(1, ei.SUPERLAYERS + 1), result["per_superlayer"][m], m)
    finish_axes(ax, "superlayer", "per superlayer")


def tracking_bins(result, method):
    """(labels, bins) of one method's background-hit bins holding events, each with its tracking scores."""
    bins = [b for b in result["vs_background_hits"][method] if b["counts"]["events"] and "tracking" in b]
    return [bin_label(b) for b in bins], bins


def plot_tracks_vs_background(ax, result):
    """Share of the raw-reconstructable tracks still reconstructable (>= 5/6 solid, 6/6 dotted) vs background."""
    shown = [1.0]
    for m in result["methods"]:
        x, bins = tracking_bins(result, m)
        for key, style, label in (("kept_ge5", "o-", ">=5/6"), ("kept_6", "s:", "6/6")):
            values = [b["tracking"]["scores"][key] for b in bins]
            shown += [v for v in values if math.isfinite(v)]
            ax.plot(x, values, style, **look(m), alpha=1.0 if key == "kept_ge5" else 0.6, label=f"{m} {label}")
    finish_axes(ax, "background hits in the event", "tracks still reconstructable (of those in the raw event)",
                low=min(shown))  # zoomed in: the differences that matter are a few per cent


def plot_fake_segments_vs_background(ax, result):
    """Fake segments per event left by each method vs the background hits in the event."""
    for m in result["methods"]:
        x, bins = tracking_bins(result, m)
        ax.plot(x, [b["tracking"]["scores"]["fake_segments_per_event"] for b in bins], "o-", **look(m), label=m)
    ax.set_yscale("symlog", linthresh=0.01)  # the denoisers' few hundredths beside the raw event's several
    ax.set_xlabel("background hits in the event")
    ax.set_title("fake segments per event (background, >= 4 of 6 layers in an SNR road)")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)


def write_plots(path, result, overwrite):
    """PREFIX.png: the eight panels, the verdict as title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(25, 9))
    plot_scores(axes[0, 0], result)
    plot_vs_background(axes[0, 1], result)
    plot_tracks_vs_background(axes[0, 2], result)
    plot_tracking_tradeoff(axes[0, 3], result)
    plot_threshold_sweep(axes[1, 0], result)
    plot_superlayers(axes[1, 1], result)
    plot_fake_segments_vs_background(axes[1, 2], result)
    plot_tracking_vs_threshold(axes[1, 3], result)
    fig.suptitle(textwrap.fill(result.get("verdict", ""), 200), fontsize=10)
    fig.tight_layout()
    with atomic_output(path, overwrite) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)


def write_event_grid(path, result, overwrite):
    """PREFIX.events.png: the worst and best events, raw, truth and each method's decisions
    (event_image.decisions_image's colours; none to draw: no file)."""
    worst, shown = result["worst_events"], result["worst_events"] + result["best_events"]
    if not shown:
        return
    columns = {"raw": [e["raw"] for e in shown], "truth": [e["truth"] for e in shown]}
    for m in result["methods"]:
        if m != "keep-all":
            columns[m] = [ei.decisions_image(e["raw"], e["truth"], e["keeps"][m]) for e in shown]
    labels = [f"{'worst' if i < len(worst) else 'best'} {e['name'][:18]}\nF1 {e['f1']:.3f}"
              for i, e in enumerate(shown)]
    with atomic_output(path, overwrite) as tmp, open(tmp, "wb") as fh:
        ei.save_event_grid(fh, columns, row_labels=labels,
                           title=f"worst and best events by model F1; each method on the raw hits: {ei.DECISIONS_KEY}")
