"""report_plots.py: in every line panel a method whose figures equal another's stays visible; the events
picture colours each method's mistakes."""

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgb

import event_image as ei
import report_plots

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHODS = ("model", "keep-all", "SNR", "CAE")  # the report's order: the model drawn first


def a_bin(low, value):
    """One background-hit bin of 10 events whose every score is `value`."""
    scores = {"efficiency": value, "rejection": value, "kept_ge5": value, "kept_6": value,
              "fake_segments_per_event": value}
    return {"low": low, "high": low + 20, "counts": {"events": 10}, "scores": scores,
            "tracking": {"scores": scores}}


def a_result(values):
    """A report result in which method m has score values[m] in three bins and on each superlayer (the
    model's threshold sweep, which the trade-off panel draws for it, a line of its own)."""
    result = {"methods": {}, "vs_background_hits": {}, "per_superlayer": {}, "threshold_sweep": [
        {"threshold": t, "tracking": {"scores": {"fake_segments_per_event": values["model"] * t, "kept_ge5": 1 - t}}}
        for t in (0.25, 0.5, 0.75)]}
    for m, v in values.items():
        result["methods"][m] = {"tracking": {"scores": {"fake_segments_per_event": v, "kept_ge5": v}}}
        result["vs_background_hits"][m] = [a_bin(low, v) for low in (40, 60, 80)]
        result["per_superlayer"][m] = [a_bin(0, v) for _ in range(6)]
    return result


def bare(ax):
    """Only the lines left: no legend (it shows every colour whatever the lines do), no text (grey edges)."""
    ax.get_legend().remove()
    ax.set_axis_off()
    ax.set_title("")


def pixels_of(fig, color, tolerance=0.02):
    """Pixels of the drawn figure within tolerance of a colour."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
    return int((np.abs(image - np.array(to_rgb(color))).max(axis=-1) < tolerance).sum())


@pytest.mark.parametrize("panel", [report_plots.plot_fake_segments_vs_background, report_plots.plot_vs_background,
                                   report_plots.plot_tracks_vs_background, report_plots.plot_superlayers,
                                   report_plots.plot_tracking_tradeoff])
def test_a_method_with_the_same_figures_as_one_drawn_after_it_still_shows(panel):
    """The model and the CAE leave the same fake segments in every bin (it happens: 4 each in a demo's
    750 test events, in the same bin), keep-all and SNR too: each still shows in its own colour."""
    fig, ax = plt.subplots(figsize=(5, 4), dpi=80)
    panel(ax, a_result({"model": 0.02, "keep-all": 0.9, "SNR": 0.9, "CAE": 0.02}))
    bare(ax)
    shown = {m: pixels_of(fig, report_plots.COLORS[m]) for m in METHODS}
    plt.close(fig)
    assert all(n >= 10 for n in shown.values()), shown


def test_apart_each_method_shows_in_its_colour():
    """The same panels with four different figures: every colour shows (the check above is not about overlap)."""
    fig, ax = plt.subplots(figsize=(5, 4), dpi=80)
    report_plots.plot_fake_segments_vs_background(ax, a_result({"model": 0.005, "keep-all": 2.0, "SNR": 0.5,
                                                                 "CAE": 0.05}))
    bare(ax)
    assert all(pixels_of(fig, report_plots.COLORS[m]) >= 20 for m in METHODS)
    plt.close(fig)


def test_the_event_grid_shows_a_methods_mistakes_in_their_colours(tmp_path):
    """The grid PNG of a real file: a model that loses track hits and keeps noise shows red and amber; a
    perfect one shows neither."""
    from PIL import Image

    raw = np.zeros((36, 112), bool)
    raw[:, 40] = True
    truth = raw.copy()
    raw[10:16, 80] = True  # a noise segment
    perfect = truth.copy()
    wrong = raw.copy()
    wrong[:12, 40] = False

    def colour_pixels(kept):
        event = {"name": "e", "f1": 0.5, "raw": raw, "truth": truth, "keeps": {"model": kept}}
        result = {"methods": {"model": {}}, "worst_events": [event], "best_events": []}
        path = tmp_path / "grid.png"
        report_plots.write_event_grid(path, result, overwrite=True)
        image = np.asarray(Image.open(path).convert("RGB")).astype(int)
        return [int((np.abs(image - np.array(c)).max(axis=-1) < 30).sum())
                for c in (ei.LOST_TRACK_HIT, ei.KEPT_NOISE_HIT)]

    lost, noise = colour_pixels(wrong)
    assert lost > 100 and noise > 50
    assert colour_pixels(perfect) == [0, 0]


def test_the_trade_off_rings_the_models_own_point_and_labels_thresholds_apart():
    """The threshold used need not be a swept one (--threshold 0.72): the ring is the model's own figures.
    Threshold labels closer than 14 pixels to one already placed are left out (they printed on top of
    each other where the swept points bunch up)."""
    result = a_result({"model": 0.02, "keep-all": 0.9, "SNR": 0.9, "CAE": 0.05})
    result["threshold"] = 0.72
    result["threshold_sweep"] = [{"threshold": t, "tracking": {"scores": {
        "fake_segments_per_event": 0.02 * (1 - t), "kept_ge5": 1.0 if t < 0.9 else 1.9 - t}}}
        for t in np.round(np.arange(0.05, 0.995, 0.01), 2)]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=80)
    report_plots.plot_tracking_tradeoff(ax, result)
    ring = [line for line in ax.get_lines() if line.get_label() == "model, threshold used 0.72"]
    assert len(ring) == 1 and list(ring[0].get_xdata()) == [0.02] and list(ring[0].get_ydata()) == [0.02]
    fig.canvas.draw()
    spots = np.array([text.get_window_extent().p0 for text in ax.texts])
    assert 3 <= len(spots) < 95
    gaps = np.hypot(*(spots[:, None] - spots[None]).transpose(2, 0, 1)) + np.eye(len(spots)) * 1e9
    assert gaps.min() >= 14 - 1e-6
    plt.close(fig)


def test_bins_say_how_many_events_they_hold_and_undefined_scores_draw_no_bar():
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    result = a_result({"model": 0.9, "CAE": 0.5})
    report_plots.plot_vs_background(left, result)
    assert [t.get_text() for t in left.get_xticklabels()] == ["40-59\n10 ev.", "60-79\n10 ev.", "80-99\n10 ev."]
    for m, purity in (("model", 0.9), ("CAE", None)):  # the CAE kept nothing: its purity is undefined
        result["methods"][m]["scores"] = {"efficiency": 0.5, "rejection": 0.5, "purity": purity, "f1": 0.5}
    report_plots.plot_scores(right, result)
    heights = [p.get_height() for p in right.patches]  # model's four bars, then the CAE's
    assert heights[2] == 0.9 and np.isnan(heights[6]) and heights[4] == 0.5
    plt.close(fig)


def test_the_threshold_sweep_draws_the_model_in_its_colour_and_the_others_in_theirs():
    result = a_result({"model": 0.9, "SNR": 0.7, "CAE": 0.5})
    for m, e in result["methods"].items():
        e["scores"] = {"f1": result["methods"][m]["tracking"]["scores"]["kept_ge5"]}
    result["threshold_sweep"] = [{"threshold": t, "scores": {"efficiency": 1 - t, "rejection": t, "f1": 0.5}}
                                 for t in (0.25, 0.5, 0.75)]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=80)
    report_plots.plot_threshold_sweep(ax, result)
    colours = {line.get_label(): to_rgb(line.get_color()) for line in ax.get_lines()}
    assert {k for k, c in colours.items() if c == to_rgb(report_plots.COLORS["model"])} == {
        "model efficiency", "model rejection", "model F1"}
    assert colours["SNR F1"] == to_rgb(report_plots.COLORS["SNR"]) and colours["CAE F1"] == to_rgb(
        report_plots.COLORS["CAE"])
    plt.close(fig)
