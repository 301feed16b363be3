"""What tracking would make of a denoiser's output: reconstructable tracks and fake segments (plain NumPy).

CLAS12 drift-chamber tracking builds a segment in a superlayer from hits in at least 4 of its
6 layers, and a track from segments in at least 5 of the 6 superlayers. On boolean hit masks
(N, 36, 112) and optional track ids (N, 36, 112) (1..k per track, 0 = no track):

    counts = event_counts(raw, truth, kept, track_ids)   # {name: (N,) int}, names in COUNT_KEYS
    scores = scores_from_counts({k: int(v.sum()) for k, v in counts.items()})

Without track ids the truth hits of one event count as one track. Fake segments are found with
SNR's segment candidates (baselines.snr_segments) on the kept background hits alone; the
README's evaluation section gives the definitions.
"""

import numpy as np

from baselines import SNR_SHIFTS, snr_segments
from event_image import LAYERS_PER_SUPERLAYER, SUPERLAYERS

SEGMENT_LAYERS = 4  # a superlayer segment needs hits in at least this many of its 6 layers
LEVELS = {"6": 6, "ge5": 5, "ge4": 4}  # reconstructable from 6/6, >= 5/6, >= 4/6 superlayers with a segment
BESIDE_TRACK_WIRES = 1  # a fake segment whose road comes this close (wires) to a track hit in its superlayer
COUNT_KEYS = ("events", "tracks", *(f"{when}_{name}" for when in ("raw", "after") for name in LEVELS),
              "fake_segments", "raw_fake_segments", "fake_beside_tracks", "raw_fake_beside_tracks")


def layers_per_superlayer(mask):
    """Layers with at least one hit, per superlayer: (..., 36, 112) bool -> (..., 6) int."""
    mask = np.asarray(mask, bool)
    per_layer = mask.any(axis=-1).reshape(mask.shape[:-2] + (SUPERLAYERS, LAYERS_PER_SUPERLAYER))
    return per_layer.sum(axis=-1)


def segments(mask):
    """Superlayers whose hits cover at least SEGMENT_LAYERS of their 6 layers: (..., 36, 112) -> (..., 6) bool."""
    return layers_per_superlayer(mask) >= SEGMENT_LAYERS


def track_labels(raw, truth, track_ids=None):
    """(ids, labels): the track id of every track hit (0 elsewhere) and the distinct ids present.

    ids are int (N, 36, 112), nonzero only on raw & truth hits; without track_ids every truth
    hit gets id 1 (one track per event).
    """
    track = np.asarray(raw, bool) & np.asarray(truth, bool)
    if track_ids is None:
        ids = track.astype(np.int64)
    else:
        ids = np.where(track, np.asarray(track_ids, np.int64), 0)
    return ids, np.unique(ids[ids > 0])


def segments_per_track(hits, ids, labels):
    """(N, len(labels)) int: superlayers in which each track's hits (of `hits`) form a segment."""
    out = np.zeros((len(ids), len(labels)), np.int64)
    for j, k in enumerate(labels):
        out[:, j] = segments(hits & (ids == k)).sum(axis=-1)
    return out


def fake_segments(background, shifts=SNR_SHIFTS, min_layers=SEGMENT_LAYERS):
    """Fake segments per superlayer among background hits: (..., 36, 112) bool -> (..., 6) int.

    A candidate is SNR's: a start wire s in the superlayer's first layer and a leaning direction;
    layer i supports it with a hit in s..s+shifts[i] (rising) or s-shifts[i]..s (falling), and it
    survives when at least min_layers layers do. A surviving candidate's road is the wires its
    buckets span (s..s+max(shifts), or s-max(shifts)..s); roads that overlap or touch make one
    fake segment, so the count is the number of separate runs of road in the superlayer.
    """
    return fake_segment_counts(background, None, shifts, min_layers)[0]


def fake_segment_counts(background, tracks=None, shifts=SNR_SHIFTS, min_layers=SEGMENT_LAYERS):
    """(fake segments, those beside a track) per superlayer, each (..., 6) int (the second None without tracks).

    A fake segment (fake_segments' definition) is beside a track when its road comes within
    BESIDE_TRACK_WIRES wires of a hit of `tracks` (the events' track hits, (..., 36, 112) bool) in
    the same superlayer: background lying along a real segment, which tracking would cluster with
    it, rather than apart, where it could seed a ghost track.
    """
    rising, falling, pad = snr_segments(background, shifts, LAYERS_PER_SUPERLAYER - min_layers)
    road = rising | falling
    for k in range(1, int(max(shifts)) + 1):
        road[..., k:] |= rising[..., :-k]  # rising at q covers q..q+width
        road[..., :-k] |= falling[..., k:]  # falling at q covers q-width..q
    starts = road.copy()
    starts[..., 1:] &= ~road[..., :-1]
    if tracks is None:
        return starts.sum(axis=-1), None
    tracks = np.asarray(tracks, bool)
    wires = tracks.reshape(tracks.shape[:-2] + (SUPERLAYERS, LAYERS_PER_SUPERLAYER, -1)).any(axis=-2)
    near = np.zeros_like(road)
    near[..., pad:pad + wires.shape[-1]] = wires
    on = near.copy()
    for k in range(1, BESIDE_TRACK_WIRES + 1):
        near[..., k:] |= on[..., :-k]
        near[..., :-k] |= on[..., k:]
    run = np.where(road & near, np.cumsum(starts, axis=-1), 0)  # the run (1, 2, ...) of each road wire near a track
    beside = np.zeros(road.shape, bool)
    np.put_along_axis(beside, run, True, axis=-1)  # beside[..., k]: run k has a wire near a track (0: none)
    return starts.sum(axis=-1), beside[..., 1:].sum(axis=-1)


def event_counts(raw, truth, kept, track_ids=None):
    """Per-event tracking counts {name: (N,) int} of one denoiser's kept hits; names in COUNT_KEYS.

    raw, truth, kept: boolean (N, 36, 112); only kept raw hits count (an invented hit is none).
    tracks: tracks with a raw hit; raw_X / after_X: tracks reconstructable (X = 6: 6/6, ge5:
    >= 5/6, ge4: >= 4/6 superlayers with a segment) from their raw hits / from their kept hits;
    fake_segments / raw_fake_segments: fake segments of the kept / of all background hits;
    fake_beside_tracks / raw_fake_beside_tracks: those of them beside a track (fake_segment_counts).
    """
    return counts_of_keeps(raw, truth, [kept], track_ids)[0]


def counts_of_keeps(raw, truth, keeps, track_ids=None):
    """event_counts of several kept masks of the same events (methods, thresholds): a list, one per mask.

    What depends on the raw event alone (its tracks' segments, its fake segments) is found once.
    """
    raw, truth = np.asarray(raw, bool), np.asarray(truth, bool)
    ids, labels = track_labels(raw, truth, track_ids)
    track = ids > 0
    before = segments_per_track(track, ids, labels)
    present = np.stack([(ids == k).any(axis=(-2, -1)) for k in labels], axis=-1) if len(labels) \
        else np.zeros((len(raw), 0), bool)
    background = raw & ~truth
    raw_fake, raw_beside = (c.sum(axis=-1) for c in fake_segment_counts(background, track))
    out = []
    for kept in keeps:
        kept = np.asarray(kept, bool)
        after = segments_per_track(track & kept, ids, labels)
        counts = {"events": np.ones(len(raw), np.int64), "tracks": present.sum(axis=-1)}
        for name, level in LEVELS.items():
            counts[f"raw_{name}"] = (present & (before >= level)).sum(axis=-1)
            counts[f"after_{name}"] = (present & (after >= level)).sum(axis=-1)
        fake, beside = fake_segment_counts(background & kept, track)
        counts["fake_segments"], counts["fake_beside_tracks"] = fake.sum(axis=-1), beside.sum(axis=-1)
        counts["raw_fake_segments"], counts["raw_fake_beside_tracks"] = raw_fake, raw_beside
        out.append(counts)
    return out


def add_counts(a, b):
    """Sum two dictionaries of tracking counts (plain ints)."""
    return {k: a.get(k, 0) + int(b.get(k, 0)) for k in COUNT_KEYS}


def scores_from_counts(c):
    """Fractions of tracks reconstructable and fake segments per event from summed counts (NaN: nothing counted).

    raw_X, after_X: share of all tracks reconstructable from the raw / kept hits; kept_X =
    after_X / raw_X, the share of the tracks reconstructable in the raw event that still are.
    """
    def ratio(num, den):
        return num / den if den else float("nan")

    scores = {}
    for name in LEVELS:
        scores[f"raw_{name}"] = ratio(c[f"raw_{name}"], c["tracks"])
        scores[f"after_{name}"] = ratio(c[f"after_{name}"], c["tracks"])
        scores[f"kept_{name}"] = ratio(c[f"after_{name}"], c[f"raw_{name}"])
    scores["fake_segments_per_event"] = ratio(c["fake_segments"], c["events"])
    scores["raw_fake_segments_per_event"] = ratio(c["raw_fake_segments"], c["events"])
    scores["fake_beside_tracks_per_event"] = ratio(c["fake_beside_tracks"], c["events"])
    scores["raw_fake_beside_tracks_per_event"] = ratio(c["raw_fake_beside_tracks"], c["events"])
    return scores
