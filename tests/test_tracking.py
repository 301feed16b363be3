"""tracking.py and its place in the evaluation: segments, reconstructable tracks and fake segments on
hand-made events with known answers; track ids carried from make_events through Pix2Pix_data to the
evaluation."""

import json
import math

import h5py
import numpy as np
import pytest

import evaluation
import event_image as ei
import make_events
import Pix2Pix_data
import tracking
from baselines import snr_keep
from data_management import check_h5, load_split
from pairs_h5 import read_track_ids
from script_utils import InputError

WIRE = 50  # where the hand-made tracks run


def straight_track(layers_per_superlayer=6, wire=WIRE):
    """One event (1, 36, 112) bool: a straight track with hits in the first layers_per_superlayer layers of each."""
    mask = np.zeros((1, ei.LAYERS, ei.WIRES), bool)
    for s in range(ei.SUPERLAYERS):
        rows = s * ei.LAYERS_PER_SUPERLAYER + np.arange(layers_per_superlayer)
        mask[0, rows, wire] = True
    return mask


def scores(raw, truth, kept, track_ids=None):
    counts = tracking.event_counts(raw, truth, kept, track_ids)
    return tracking.scores_from_counts({k: int(v.sum()) for k, v in counts.items()}), counts


# --- Segments and reconstructable tracks -------------------------------------------------------------
@pytest.mark.parametrize("layers, has_segment", [(3, False), (4, True), (5, True), (6, True)])
def test_a_segment_needs_hits_in_four_of_six_layers(layers, has_segment):
    track = straight_track(layers)
    assert tracking.segments(track).tolist() == [[has_segment] * 6]
    s, c = scores(track, track, track)
    assert c["tracks"].tolist() == [1]
    assert s["raw_6"] == s["raw_ge5"] == s["raw_ge4"] == float(has_segment)
    double = track.copy()
    double[0, :, WIRE + 1] = track[0, :, WIRE]  # a second hit in the same layers adds no layer
    assert tracking.segments(double).tolist() == [[has_segment] * 6]


def test_removing_one_superlayer_moves_a_track_from_six_to_five():
    track = straight_track()
    kept = track.copy()
    kept[0, 12:18] = False  # superlayer 3 lost
    s, c = scores(track, track, kept)
    assert (c["raw_6"], c["after_6"], c["after_ge5"], c["after_ge4"]) == (1, 0, 1, 1)
    assert s["kept_6"] == 0 and s["kept_ge5"] == 1 and s["kept_ge4"] == 1
    kept[0, 24:30] = False  # and superlayer 5: 4 of 6 left
    s, _ = scores(track, track, kept)
    assert (s["after_6"], s["after_ge5"], s["after_ge4"]) == (0, 0, 1)
    kept = track.copy()
    kept[0, [12, 13]] = False  # two layers of superlayer 3 lost: 4 left, still a segment
    assert scores(track, track, kept)[0]["kept_6"] == 1
    kept[0, 14] = False  # a third: 3 left, the segment is gone
    assert scores(track, track, kept)[0]["kept_6"] == 0


def test_track_ids_score_each_track_and_without_them_the_truth_is_one_track():
    a, b = straight_track(wire=20), straight_track(wire=80)
    truth = a | b
    ids = np.where(a, 1, 0) + np.where(b, 2, 0)
    raw = truth.copy()
    raw[0, 3, 60] = True  # a noise hit
    kept = truth.copy()
    kept[0, :6, 80] = False  # track 2 loses superlayer 1
    s, c = scores(raw, truth, kept, ids.astype(np.uint8))
    assert c["tracks"].tolist() == [2] and (c["raw_6"][0], c["after_6"][0], c["after_ge5"][0]) == (2, 1, 2)
    assert s["kept_6"] == 0.5 and s["kept_ge5"] == 1
    s, c = scores(raw, truth, kept)  # no ids: one track, whose superlayer 1 still has track 1's hits
    assert c["tracks"].tolist() == [1] and s["kept_6"] == 1
    s, c = scores(raw, truth, kept, np.zeros_like(ids))  # ids that name no track: no track
    assert c["tracks"].tolist() == [0] and np.isnan(s["kept_ge5"])


def test_only_kept_raw_track_hits_count():
    track = straight_track()
    raw = track.copy()
    raw[0, 12:18] = False  # the truth names hits that are not in the raw event
    invented = np.ones_like(track)  # a denoiser lighting every cell invents what raw lacks
    for ids in (None, track.astype(np.uint8)):
        s, c = scores(raw, track, invented, ids)
        assert (c["raw_6"][0], c["after_6"][0], c["after_ge5"][0]) == (0, 0, 1)


# --- Fake segments ----------------------------------------------------------------------------------
def background(cells):
    """One event (1, 36, 112) bool with hits at (layer, wire) cells."""
    mask = np.zeros((1, ei.LAYERS, ei.WIRES), bool)
    for layer, wire in cells:
        mask[0, layer, wire] = True
    return mask


CLUSTER = [(12, 30), (13, 30), (14, 31), (15, 31)]  # superlayer 3, layers 1-4, leaning like a track


def test_a_background_cluster_over_four_layers_in_the_road_is_one_fake_segment():
    assert tracking.fake_segments(background(CLUSTER)).tolist() == [[0, 0, 1, 0, 0, 0]]
    leaning_back = [(12, 30), (13, 30), (14, 29), (16, 27)]  # the other direction, one layer missing
    assert tracking.fake_segments(background(leaning_back)).sum() == 1
    spread = [(12, 10), (13, 40), (14, 70), (15, 100)]  # the same layers, hits across the chamber
    assert tracking.fake_segments(background(spread)).sum() == 0
    three = CLUSTER[:3]  # three layers: no segment
    assert tracking.fake_segments(background(three)).sum() == 0
    too_wide = [(12, 30), (13, 30), (14, 34), (15, 35)]  # layers 3-4 outside their 2-wire bucket
    assert tracking.fake_segments(background(too_wide)).sum() == 0
    two = CLUSTER + [(layer, wire + 40) for layer, wire in CLUSTER] + [(0, 5), (1, 5), (2, 6), (3, 6)]
    assert tracking.fake_segments(background(two)).tolist() == [[1, 0, 2, 0, 0, 0]]
    crossing = CLUSTER + [(16, 32), (17, 33)]  # one cluster over six layers: still one
    assert tracking.fake_segments(background(crossing)).sum() == 1


def test_fake_segments_are_counted_on_the_kept_background_hits_only():
    track = straight_track()
    raw = track | background(CLUSTER)
    s, c = scores(raw, track, raw)  # keep-all: the cluster stays
    assert c["fake_segments"].tolist() == [1] and c["raw_fake_segments"].tolist() == [1]
    kept = raw.copy()
    kept[0, 15, 31] = False  # one of its hits removed: three layers left
    s, c = scores(raw, track, kept)
    assert c["fake_segments"].tolist() == [0] and s["raw_fake_segments_per_event"] == 1
    near_track = background([(12, WIRE + 1), (13, WIRE + 1), (14, WIRE + 2)])  # 3 noise hits beside the track
    s, c = scores(raw | near_track, track, raw | near_track)
    assert c["fake_segments"].tolist() == [1]  # track hits are not background: they make no fake segment


def test_a_fake_segment_is_beside_a_track_when_its_road_comes_within_a_wire_of_the_track_s_hits():
    track = straight_track(wire=30)  # wire 30 in every layer
    apart = [(layer, wire + 40) for layer, wire in CLUSTER]  # a second cluster, far from the track
    # CLUSTER moved to start at wire c: its road spans wires c..c+4 (rising, SNR_SHIFTS' widest bucket)
    for start, beside in ((31, 1), (32, 0), (25, 1), (24, 0)):
        cluster = background([(layer, wire - 30 + start) for layer, wire in CLUSTER] + apart)
        total, near = tracking.fake_segment_counts(cluster, track)
        assert total.tolist() == [[0, 0, 2, 0, 0, 0]] and near.sum() == beside, (start, near)
        raw = track | cluster
        s, c = scores(raw, track, raw)
        got = (c["fake_segments"][0], c["fake_beside_tracks"][0], c["raw_fake_beside_tracks"][0])
        assert got == (2, beside, beside)
        assert s["fake_beside_tracks_per_event"] == beside
        s, c = scores(raw, track, raw & ~cluster)  # the denoiser removes both: none left, beside or not
        assert (c["fake_segments"][0], c["fake_beside_tracks"][0]) == (0, 0)
    near_cluster = background(CLUSTER)  # road 30..34
    assert tracking.fake_segment_counts(near_cluster, straight_track(wire=35))[1].sum() == 1
    assert tracking.fake_segment_counts(near_cluster, straight_track(wire=36))[1].sum() == 0
    only_elsewhere = straight_track(wire=30) & ~background([(row, 30) for row in range(12, 18)])
    assert tracking.fake_segment_counts(near_cluster, only_elsewhere)[1].sum() == 0  # other superlayers' hits


def test_the_road_finds_the_segments_of_real_tracks():
    """The road is SNR's, sized for the slope and stagger of tracks: it finds (almost) every true segment."""
    raw, truth, ids = make_events.generate_masks(400, seed=11, track_ids=True)
    found = total = 0
    for k in (1, 2, 3):
        hits = raw & truth & (ids == k)
        segment = tracking.segments(hits)
        total += segment.sum()
        found += (segment & (tracking.fake_segments(hits) == 1)).sum()
    assert total > 3000 and found / total > 0.999


# --- In the evaluation --------------------------------------------------------------------------------
def test_evaluation_columns_bins_and_batches():
    raw, truth, ids = make_events.generate_masks(40, seed=12, luminosity=2, track_ids=True)
    kept = truth.copy()
    kept[::4, 12:18] = False  # every 4th event loses superlayer 3 of all its tracks
    keeps = {"model": kept, "keep-all": raw, "SNR": snr_keep(raw)}
    bins = (0, int(np.median((raw & ~truth).sum(axis=(1, 2)))))  # two bins holding events
    one = evaluation.evaluate(raw, truth, keeps, track_ids=ids, background_bins=bins)
    ev = evaluation.HitEvaluation(keeps, background_bins=bins)
    for sl in (slice(0, 13), slice(13, 40)):
        ev.add(raw[sl], truth[sl], {m: k[sl] for m, k in keeps.items()}, track_ids=ids[sl])
    batched = ev.result()
    assert batched["methods"] == one["methods"] and batched["track_ids"] == {"with": 40, "without": 0}
    t = one["methods"]["model"]["tracking"]
    assert t["counts"]["tracks"] == sum(len(np.unique(e[e > 0])) for e in ids)
    six_in_cut_events = int(tracking.event_counts(raw[::4], truth[::4], raw[::4], ids[::4])["raw_6"].sum())
    assert six_in_cut_events > 0 and t["counts"]["after_6"] == t["counts"]["raw_6"] - six_in_cut_events
    assert one["methods"]["keep-all"]["tracking"]["scores"]["kept_ge5"] == 1
    assert t["scores"]["fake_segments_per_event"] == 0
    for m in keeps:  # the bins add up to the whole
        per_bin = one["vs_background_hits"][m]
        assert min(b["tracking"]["counts"]["events"] for b in per_bin) > 0
        for key in tracking.COUNT_KEYS:
            assert sum(b["tracking"]["counts"][key] for b in per_bin) == one["methods"][m]["tracking"]["counts"][key]
    table = evaluation.format_table(one)
    assert all(title in table.splitlines()[0] for title in ("tracks >=5/6", "fake seg/event", "beside tracks"))
    assert "without track ids" not in table
    assert f"whose road comes within {tracking.BESIDE_TRACK_WIRES} wire of a track's raw hits" in table
    n = t["counts"]["raw_ge5"]  # all kept: the exact 95 % interval runs from 0.025 ** (1 / n) to 1
    assert ("Tracking: the model keeps 100.00 % of the tracks reconstructable (>= 5 of 6 superlayers) in the raw "
            f"events ({n} of {n}, {100 * 0.025 ** (1 / n):.2f}-100.00 % with 95 % confidence; SNR 100.00 %) and "
            "leaves 0.000 fake segments per event, 0.000 of them beside a track (raw ") in one["verdict"]
    snr = one["methods"]["SNR"]["tracking"]["counts"]  # SNR keeps every hit of a candidate: all fake segments stay
    assert snr["fake_segments"] == snr["raw_fake_segments"] > 0
    no_ids = evaluation.evaluate(raw, truth, keeps)
    assert no_ids["track_ids"] == {"with": 0, "without": 40}
    assert "40 events without track ids: the truth of each counts as one track" in evaluation.format_table(no_ids)
    assert "without track ids" in no_ids["verdict"]


def test_the_share_of_tracks_kept_comes_with_its_count_and_interval():
    """One of the two reconstructable tracks kept: 1 of 2, and the exact interval's ends solve
    1 - (1 - p)^2 = 0.025 and p^2 = 0.025."""
    raw = np.concatenate([straight_track(), straight_track(), straight_track(layers_per_superlayer=3)])
    kept = raw.copy()  # the third event's track has no segment: not reconstructable, not counted
    kept[1, :12] = False  # the second event's track loses superlayers 1 and 2: 4 of 6 left
    res = evaluation.evaluate(raw, raw, {"model": kept, "SNR": raw})  # the verdict compares with a baseline
    low, high = 100 * (1 - 0.975 ** 0.5), 100 * 0.975 ** 0.5
    assert (f"the model keeps 50.00 % of the tracks reconstructable (>= 5 of 6 superlayers) in the raw events "
            f"(1 of 2, {low:.2f}-{high:.2f} % with 95 % confidence; SNR 100.00 %) and leaves") in res["verdict"]


def test_threshold_sweep_carries_tracking_and_the_model_is_compared_at_the_cae_s_tracks_and_fakes(tmp_path):
    track = straight_track()
    raw = track | background(CLUSTER)
    prob = np.where(track, 0.9, 0.0) + np.where(background(CLUSTER), 0.4, 0.0)
    prob[0, 30:36] = np.where(track[0, 30:36], 0.6, 0.0)  # superlayer 6's track hits are less certain
    # a CAE-like method: keeps the track in five superlayers only, and the background cluster
    cae = raw.copy()
    cae[0, 30:36] = False
    res = evaluation.evaluate(raw, track, {"model": raw & (prob > 0.5), "CAE": cae}, prob.astype(np.float32),
                              thresholds=(0.3, 0.5, 0.7, 0.95))
    got = [(s["threshold"], s["tracking"]["scores"]["kept_ge5"], s["tracking"]["scores"]["kept_6"],
            s["tracking"]["counts"]["fake_segments"]) for s in res["threshold_sweep"]]
    assert got == [(0.3, 1, 1, 1), (0.5, 1, 1, 0), (0.7, 1, 0, 0), (0.95, 0, 0, 0)]
    # the highest threshold that keeps the CAE's share of tracks (1.0): 0.7, with no fake segment
    assert ("At CAE's share of tracks (100.00 %) the model (threshold 0.70: 100.00 %) would leave 0.000 fake "
            "segments per event (CAE 1.000).") in res["verdict"]
    # the lowest threshold as clean as the CAE (1 fake segment per event): 0.3, every track kept
    assert ("At CAE's fake segments (1.000 per event) the model (threshold 0.30: 1.000) would keep 100.00 % of the "
            "tracks (CAE 100.00 %).") in res["verdict"]
    clean_cae = evaluation.evaluate(raw, track, {"model": raw & (prob > 0.5), "CAE": cae & track},
                                    prob.astype(np.float32), thresholds=(0.3, 0.5, 0.7, 0.95))
    assert ("At CAE's fake segments (0.000 per event) the model (threshold 0.50: 0.000) would keep 100.00 % of the "
            "tracks (CAE 100.00 %).") in clean_cae["verdict"]
    sure = np.where(raw, 0.99, 0.0).astype(np.float32)  # the background cluster kept at every threshold
    never = evaluation.evaluate(raw, track, {"model": raw, "CAE": cae & track}, sure, thresholds=(0.3, 0.5, 0.7, 0.95))
    assert "At CAE's fake segments (0.000 per event) the model leaves more at every swept threshold (up to 0.95)." \
        in never["verdict"]
    unsure = np.where(raw, 0.2, 0.0).astype(np.float32)  # every hit dropped at every swept threshold
    short = evaluation.evaluate(raw, track, {"model": raw, "CAE": cae}, unsure, thresholds=(0.3, 0.5, 0.7, 0.95))
    assert "At CAE's share of tracks (100.00 %) the model keeps fewer at every swept threshold (down to 0.30)." \
        in short["verdict"]
    res["threshold"] = 0.5
    paths = evaluation.write_report(res, tmp_path / "r")
    sweep = json.loads(paths["json"].read_text())["threshold_sweep"]
    assert [s["tracking"]["counts"]["after_ge5"] for s in sweep] == [1, 1, 1, 0]
    no_sweep = evaluation.evaluate(raw, track, {"model": raw & (prob > 0.5), "CAE": cae})
    assert "At CAE's share" not in no_sweep["verdict"] and no_sweep["threshold_sweep"] == []
    assert "At CAE's fake segments" not in no_sweep["verdict"]


def test_events_without_a_reconstructable_track_or_without_track_hits_say_so_in_the_verdict():
    stub = straight_track(layers_per_superlayer=3)  # track hits in 3 layers of each superlayer: no segment
    raw = stub | background(CLUSTER)
    res = evaluation.evaluate(raw, stub, {"model": stub, "SNR": raw})
    assert ("Tracking: no track is reconstructable (>= 5 of 6 superlayers) in the raw events; the model leaves "
            "0.000 fake segments per event") in res["verdict"]
    assert "nan" not in res["verdict"]
    no_track = background(CLUSTER)  # nothing to find: F1 is 0 for a method keeping something, not a comparison
    res = evaluation.evaluate(no_track, np.zeros_like(no_track), {"model": no_track, "SNR": no_track})
    assert res["verdict"] == "not enough track hits to compare"


def verdict_with_fakes(model_events, cae_events, events=20, cae_start=0):
    """The verdict on `events` events with a track and a background cluster, the model keeping the cluster in
    the first model_events of them, the CAE in cae_events from event cae_start on."""
    raw = np.repeat(straight_track() | background(CLUSTER), events, axis=0)
    truth = np.repeat(straight_track(), events, axis=0)
    event = np.arange(events)[:, None, None]
    with_cluster = [event < model_events, (event >= cae_start) & (event < cae_start + cae_events)]
    model, cae = (np.where(c, raw, truth) for c in with_cluster)
    return evaluation.evaluate(raw, truth, {"model": model, "CAE": cae, "SNR": raw})["verdict"]


def test_the_verdict_says_whether_the_fake_segment_counts_differ_by_more_than_chance():
    # a sign test on the events where the two differ, by hand: 0 of 6: 2 / 2^6 = 0.031; 0 of 4: 2 / 2^4 = 0.125;
    # 0 of 14: 2 / 2^14 < 0.001; 1 of 2: 1
    assert ("Fake segments in these 20 events: model 0; SNR 20 (model fewer in 20 events, more in 0: model fewer, "
            "p < 0.001); CAE 6 (model fewer in 6 events, more in 0: model fewer, p = 0.031).") \
        in verdict_with_fakes(0, 6)
    assert ("model 1; SNR 20 (model fewer in 19 events, more in 0: model fewer, p < 0.001); "
            "CAE 5 (model fewer in 4 events, more in 0: as many within chance, p = 0.125).") in verdict_with_fakes(1, 5)
    assert ("model 6; SNR 20 (model fewer in 14 events, more in 0: model fewer, p < 0.001); "
            "CAE 0 (model fewer in 0 events, more in 6: model more, p = 0.031).") in verdict_with_fakes(6, 0)
    assert "CAE 0 (model fewer in 0 events, more in 0: as many within chance, p = 1.000)." in verdict_with_fakes(0, 0)
    # The same events matter, not only the totals: 12 against 6 in the same 6 events and 6 more is a difference
    # (the totals alone, 12 of 18, would be p = 0.238); 1 against 1 in different events is none.
    assert "CAE 6 (model fewer in 0 events, more in 6: model more, p = 0.031)." in verdict_with_fakes(12, 6)
    assert ("model 1; SNR 20 (model fewer in 19 events, more in 0: model fewer, p < 0.001); "
            "CAE 1 (model fewer in 1 events, more in 1: as many within chance, p = 1.000).") \
        in verdict_with_fakes(1, 1, cae_start=1)


def test_figures_are_printed_with_the_decimals_that_keep_them_apart_from_0_and_1():
    assert evaluation.percent(1 - 1 / 31900) == "99.997" and evaluation.percent(0.9953) == "99.53"
    assert evaluation.percent(1.0) == "100.00" and evaluation.percent(0.0) == "0.00"
    assert evaluation.shown(7 / 16000, 3) == "0.0004" and evaluation.shown(0.0, 3) == "0.000"
    assert evaluation.shown(0.99999, 4, 1) == "0.99999" and evaluation.shown(math.nan, 4, 1) == "nan"
    raw, truth = straight_track() | background(CLUSTER), straight_track()
    res = evaluation.evaluate(raw, truth, {"model": truth, "SNR": raw})
    model = res["methods"]["model"]
    model["tracking"]["scores"].update(kept_ge5=1 - 1 / 31900, fake_segments_per_event=7 / 16000)
    model["scores"].update(f1=res["methods"]["SNR"]["scores"]["f1"] + 1e-6)
    text = evaluation.verdict(res)
    assert "the model keeps 99.997 % of the tracks" in text and "leaves 0.0004 fake segments per event" in text
    assert "the model is EQUAL (to 4 decimals) to the best CLAS12 baseline (SNR)" in text and "(+0.0000)" in text
    model_row = evaluation.format_table(res).splitlines()[1].split()
    assert model_row[0] == "model" and model_row[6:8] == ["0.99997", "0.0004"]


def test_p_values_are_printed_so_that_their_side_of_0_05_shows():
    assert evaluation.p_value_text(0.0498) == "p = 0.0498"  # not 0.050 beside "model fewer"
    assert evaluation.p_value_text(0.0502) == "p = 0.050"
    assert evaluation.p_value_text(0.2191) == "p = 0.219" and evaluation.p_value_text(1.0) == "p = 1.000"
    assert evaluation.p_value_text(0.0009) == "p < 0.001" and evaluation.p_value_text(0.001) == "p = 0.001"


def test_report_json_and_png_carry_the_tracking(tmp_path):
    raw, truth, ids = make_events.generate_masks(30, seed=13, track_ids=True)
    res = evaluation.evaluate(raw, truth, {"model": truth, "keep-all": raw}, track_ids=ids)
    res["threshold"] = 0.5
    paths = evaluation.write_report(res, tmp_path / "r")
    data = json.loads(paths["json"].read_text())
    t = data["methods"]["model"]["tracking"]
    assert set(t["counts"]) == set(tracking.COUNT_KEYS) and t["scores"]["kept_ge5"] == 1
    assert "tracking" in data["vs_background_hits"]["keep-all"][0] and data["track_ids"]["with"] == 30
    assert paths["png"].stat().st_size > 10000


# --- Track ids from make_events through Pix2Pix_data to the evaluation ------------------------------------
@pytest.mark.parametrize("layout", ["folders", "tagged"])
def test_track_ids_survive_make_events_pix2pix_data_and_the_evaluation(tmp_path, layout):
    import Pix2Pix_denoise

    out = tmp_path / "events"
    assert make_events.main(["--output", str(out), "-n", "40", "--seed", "21", "--workers", "1",
                             "--layout", layout]) == 0
    h5 = tmp_path / "events.h5"
    if layout == "folders":
        Pix2Pix_data.convert(out / "raw", out / "truth", h5, workers=1, chunk_events=8)
    else:
        Pix2Pix_data.convert(out, None, h5, layout="tagged", workers=1, chunk_events=8)
    check_h5(h5)
    raw, truth, ids = make_events.generate_masks(40, seed=21, track_ids=True)
    test = load_split(h5)["test"]
    np.testing.assert_array_equal(read_track_ids(h5, test), ids[test])
    ev = evaluation.HitEvaluation(["keep-all"])
    for names, r, t, i in Pix2Pix_denoise.H5SplitReader(h5, batch_size=3):
        ev.add(r, t, {"keep-all": r}, names=names, track_ids=i)
    res = ev.result()
    expected = evaluation.evaluate(raw[test], truth[test], {"keep-all": raw[test]}, track_ids=ids[test])
    assert res["track_ids"] == {"with": len(test), "without": 0}
    assert res["methods"]["keep-all"]["tracking"] == expected["methods"]["keep-all"]["tracking"]
    assert res["methods"]["keep-all"]["tracking"]["counts"]["tracks"] == sum(len(np.unique(e[e > 0]))
                                                                             for e in ids[test])
    if layout == "folders":  # the PNG reader finds the tracks folder beside the truth folder
        reader = Pix2Pix_denoise.PngFolderReader(out / "raw", out / "truth", 16, ei.default_tracks_dir(out / "truth"))
        batches = list(reader)
        np.testing.assert_array_equal(np.concatenate([b[3] for b in batches]), ids)


def test_pairs_without_track_ids_stay_as_they_were_and_missing_ones_are_named(tmp_path):
    out = tmp_path / "events"
    assert make_events.main(["--output", str(out), "-n", "6", "--seed", "2", "--workers", "1"]) == 0
    (out / "tracks" / make_events.event_name(4)).unlink()
    with pytest.raises(InputError, match="no track-id file"):
        Pix2Pix_data.convert(out / "raw", out / "truth", tmp_path / "a.h5", workers=1)
    summary = Pix2Pix_data.convert(out / "raw", out / "truth", tmp_path / "b.h5", workers=1, skip_bad=True)
    assert summary["pairs"] == 5
    for p in (out / "tracks").iterdir():
        p.unlink()
    (out / "tracks").rmdir()
    Pix2Pix_data.convert(out / "raw", out / "truth", tmp_path / "c.h5", workers=1)
    with h5py.File(tmp_path / "c.h5") as f:
        assert "track_ids" not in f and not f.attrs["track_ids"] and len(f["raw"]) == 6
    with h5py.File(tmp_path / "b.h5", "a") as f:  # a damaged track_ids dataset is refused
        del f["track_ids"]
        f.create_dataset("track_ids", data=np.zeros((5, 36, 111), np.uint8))
    with pytest.raises(InputError, match="track_ids"):
        check_h5(tmp_path / "b.h5", test_fraction=0.2, validation_fraction=0.25)
