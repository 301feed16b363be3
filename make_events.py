"""Make synthetic CLAS12 drift-chamber events: raw and truth PNG pairs, seeded and deterministic.

One event is one sector, 36 layers (rows) x 112 wires (columns): 1-3 tracks that cross all
layers, plus background hits that scale with --luminosity (the README describes the model).
The raw image holds every hit, the truth image only the track hits. Event i of a set uses its
own generator np.random.default_rng([seed, i]), so any slice of a set can be made on its own
(generate_events(n, seed, luminosity, start) gives them as arrays, with no files). --format hipo
writes the same events as one CLAS12 HIPO file, SECTORS sector images per HIPO event.

    python make_events.py --output data/synth                     # 1000 pairs, seed 0, luminosity 1
    python make_events.py --output data/synth -n 20000 --seed 1 --preview
    python make_events.py --format hipo --output data/synth.hipo -n 20000 --seed 1
    python make_events.py --output data/hard --preset hard -n 3000 --seed 1   # the harder world
"""

import math
import os
import time
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np

import clas12_hipo as ch
import event_image as ei
import event_worlds
import hipo_writer
from event_worlds import (  # the geometry, the stereo angle, double hits and background rates: every world's
    CROSSTALK_PER_EVENT,
    DOUBLE_HIT,
    LAYER,
    NOISE_OCCUPANCY,
    REGION_TWO_CURVE,
    SEGMENT_REGION_WEIGHTS,
    SEGMENT_SLOPE_MAX,
    SEGMENTS_PER_EVENT,
    STAGGER,
    STEREO_MAX,
    STEREO_SIGN,
)
from script_utils import (
    ArgumentParser,
    InputError,
    atomic_output,
    check_output_folder,
    check_output_path,
    progress,
    run_main,
    warn,
)
from worker_pools import submit_task, task_result, worker_pool

# --- Settings (each one has a command-line option) ------------------------------------------
EVENTS = 1000  # raw/truth pairs to make
SEED = 0
LUMINOSITY = 1.0  # background scale: 2 = about twice the background hits
WORKERS = min(4, os.cpu_count() or 1)  # processes writing PNGs
LAYOUT = "folders"  # folders: DIR/raw/NAME.png + DIR/truth/NAME.png; tagged: DIR/dc_all_N.png + DIR/dc_truth_N.png
FORMAT = "png"  # png: PNG pairs in a folder; hipo: one CLAS12 HIPO file (DC::tdc, TBHits, RUN::config)
SECTORS = 2  # hipo: sectors per HIPO event (event i of the set is one sector of HIPO event i // SECTORS)
PREVIEW_EVENTS = 6  # raw|truth pairs shown by --preview
OVERWRITE = False
PRESET = "default"  # default: today's events, bit for bit; hard: event_worlds.WORLDS["hard"]
# The world's options: None = the preset's value (any of them given makes a non-default world).
TRACKS = None  # MIN MAX tracks per event
TRACK_SPAN = None  # at most this many wires crossed over the 36 layers
BEND = None  # |change of slope| across region 2, wires per layer, either direction
INEFFICIENCY = None  # each layer's inefficiency drawn in 0..this, per event
SEGMENT_RATE = None  # background segments per event, x today's
OCCUPANCY_SCALE = None  # LO HI: each region's uncorrelated hits x a factor drawn in LO..HI per event
CROSSTALK_RATE = None  # cross-talk runs per event, x today's
UNWANTED_FRACTION = None  # share of tracks that are unwanted (curling, ending before region 3; raw only)
WIRE_GRADIENT = None  # uncorrelated hits 1 + G times the mean at wire 1 falling to 1 - G at wire 112
BACKGROUND_LEAN = None  # background segments slope, unwanted tracks curl towards higher wires with this probability

# --- Fixed ----------------------------------------------------------------------------------
PREVIEW_NAME = "preview.png"  # the preview's file name when --preview gives none
CHUNK_EVENTS = 1024  # events generated at once (bounds the memory of generate_events)
JOB_EVENTS = 1000  # at most this many events per job handed to a worker
JOBS_PER_WORKER = 4  # jobs handed to each worker process (fewer when that would exceed JOB_EVENTS)

# --- Tracks ---------------------------------------------------------------------------------
TRACK_COUNT_PROBS = (0.50, 0.35, 0.15)  # probability of 1, 2, 3 tracks in an event
MAX_TRACKS = len(TRACK_COUNT_PROBS)
ENTRY_SLOPE_MAX = 0.30  # |wires per layer| of the straight part in region 1
BEND_MAX = 0.35  # |change of slope| across region 2 (torus field)
SLOPE_LIMIT = 0.45  # |slope| never above this, so the staggered wire steps by 0 or 1
LAYER_MISS = 0.03  # chance that a layer misses a track's hit (default preset)
# STEREO_MAX and DOUBLE_HIT: event_worlds.py, shared by every world

# --- Background (at luminosity 1; every kind scales with the luminosity) ---------------------
# NOISE_OCCUPANCY, SEGMENTS_PER_EVENT, SEGMENT_REGION_WEIGHTS, SEGMENT_SLOPE_MAX, CROSSTALK_PER_EVENT: event_worlds.py
SEGMENT_LAYERS = (3, 6)  # a segment spans this many layers (min, max)
CROSSTALK_WIRES = (2, 4)  # a run lights this many adjacent wires in one layer (min, max)
SLOTS = 32  # candidate segments and cross-talk runs drawn per event (bounds the luminosity)
assert max(SEGMENTS_PER_EVENT, CROSSTALK_PER_EVENT) * event_worlds.MAX_LUMINOSITY <= SLOTS
assert max(NOISE_OCCUPANCY) * event_worlds.MAX_LUMINOSITY <= 1

# --- The uniform draws of one event: name -> shape (one block of float32 per event) ----------
TRACK_FIELDS = 4 + 2 * ei.LAYERS  # position, entry slope, bend, stereo, per-layer miss and double
DRAWS = {
    "noise": (ei.LAYERS, ei.WIRES),
    "track_count": (1,),
    "track": (MAX_TRACKS, TRACK_FIELDS),
    "segment": (SLOTS, 7),  # on, region, superlayer, length, first layer, wire, slope
    "crosstalk": (SLOTS, 5),  # on, region, layer, length, first wire
}
DRAW_SIZES = {name: math.prod(shape) for name, shape in DRAWS.items()}
N_DRAWS = sum(DRAW_SIZES.values())


def split_draws(u):
    """Cut blocks of uniforms (E, N_DRAWS) into named arrays (E, *shape) as listed in DRAWS."""
    out, at = {}, 0
    for name, shape in DRAWS.items():
        out[name] = u[:, at:at + DRAW_SIZES[name]].reshape((len(u),) + shape)
        at += DRAW_SIZES[name]
    return out


def uniform(u, low, high):
    """Map uniforms in [0, 1) onto [low, high)."""
    return low + u * (high - low)


def track_paths(d):
    """Tracks of a batch: wire (E, T, 36) hit per layer, whether it fired, and the adjacent wire.

    Returns (wire, fired, second, second_fired); all int/bool arrays (E, MAX_TRACKS, 36).
    """
    t = d["track"].astype(np.float64)
    n_tracks = 1 + (d["track_count"] >= TRACK_COUNT_PROBS[0]) + (d["track_count"] >= sum(TRACK_COUNT_PROBS[:2]))
    active = np.arange(MAX_TRACKS) < n_tracks  # (E, T)
    entry = uniform(t[..., 1], -ENTRY_SLOPE_MAX, ENTRY_SLOPE_MAX)
    exit_slope = uniform(t[..., 2], np.maximum(entry - BEND_MAX, -SLOPE_LIMIT),
                         np.minimum(entry + BEND_MAX, SLOPE_LIMIT))
    stereo = uniform(t[..., 3], -STEREO_MAX, STEREO_MAX)
    # Position (in wire units, even-layer cells) with the first layer at 0, then shifted inside.
    shape = (entry[..., None] * LAYER + (exit_slope - entry)[..., None] * REGION_TWO_CURVE
             + stereo[..., None] * STEREO_SIGN / 2 - STAGGER)
    low = -shape.min(axis=-1)
    high = ei.WIRES - 1 - shape.max(axis=-1)
    position = shape + uniform(t[..., 0], low, high)[..., None]
    wire = np.clip(np.rint(position), 0, ei.WIRES - 1).astype(np.int64)
    fired = active[..., None] & (t[..., 4:4 + ei.LAYERS] >= LAYER_MISS)
    second = np.clip(wire + np.where(position > wire, 1, -1), 0, ei.WIRES - 1)
    second_fired = fired & (t[..., 4 + ei.LAYERS:] < DOUBLE_HIT)
    return wire, fired, second, second_fired


def background_segments(d, luminosity):
    """Low-energy segments: (layer, wire, lit) arrays (E, SLOTS, 6), each segment in one superlayer."""
    s = d["segment"].astype(np.float64)
    on = s[..., 0] < SEGMENTS_PER_EVENT * luminosity / SLOTS
    region = np.searchsorted(np.cumsum(SEGMENT_REGION_WEIGHTS), s[..., 1] * sum(SEGMENT_REGION_WEIGHTS), side="right")
    region = np.minimum(region, ei.REGIONS - 1)
    superlayer = 2 * region + (s[..., 2] >= 0.5)
    lo, hi = SEGMENT_LAYERS
    length = lo + np.minimum((s[..., 3] * (hi - lo + 1)).astype(np.int64), hi - lo)
    first = (s[..., 4] * (ei.LAYERS_PER_SUPERLAYER - length + 1)).astype(np.int64)
    step = np.arange(hi)
    layer = superlayer[..., None] * ei.LAYERS_PER_SUPERLAYER + np.minimum(first[..., None] + step, 5)
    slope = uniform(s[..., 6], -SEGMENT_SLOPE_MAX, SEGMENT_SLOPE_MAX)
    wire = np.rint(uniform(s[..., 5], 0, ei.WIRES - 1)[..., None] + slope[..., None] * step - STAGGER[layer])
    lit = on[..., None] & (step < length[..., None]) & (wire >= 0) & (wire < ei.WIRES)
    return layer, np.clip(wire, 0, ei.WIRES - 1).astype(np.int64), lit


def crosstalk_runs(d, luminosity):
    """Cross-talk: (layer, wire, lit) arrays (E, SLOTS, 4), runs of adjacent wires in one layer."""
    c = d["crosstalk"].astype(np.float64)
    on = c[..., 0] < CROSSTALK_PER_EVENT * luminosity / SLOTS
    region = np.searchsorted(np.cumsum(NOISE_OCCUPANCY), c[..., 1] * sum(NOISE_OCCUPANCY), side="right")
    region = np.minimum(region, ei.REGIONS - 1)
    layer = region * ei.LAYERS_PER_REGION + (c[..., 2] * ei.LAYERS_PER_REGION).astype(np.int64)
    lo, hi = CROSSTALK_WIRES
    length = lo + np.minimum((c[..., 3] * (hi - lo + 1)).astype(np.int64), hi - lo)
    first = (c[..., 4] * (ei.WIRES - length + 1)).astype(np.int64)
    step = np.arange(hi)
    wire = np.minimum(first[..., None] + step, ei.WIRES - 1)
    lit = on[..., None] & (step < length[..., None])
    return np.broadcast_to(layer[..., None], wire.shape), wire, lit


def light(masks, layer, wire, lit):
    """Set masks[e, layer, wire] for every lit entry of (E, ...) index arrays."""
    event = np.broadcast_to(np.arange(len(masks)).reshape((-1,) + (1,) * (lit.ndim - 1)), lit.shape)
    masks[event[lit], layer[lit], wire[lit]] = True


def render_events(u, luminosity=LUMINOSITY, track_ids=False):
    """Raw and truth hit masks (E, 36, 112) of events from their uniform blocks (E, N_DRAWS).

    track_ids: also return the track number (1..k, uint8; 0 = no track hit) of each truth hit;
    where two tracks share a wire, the higher number."""
    event_worlds.check_luminosity(luminosity)
    d = split_draws(u)
    n = len(u)
    truth = np.zeros((n, ei.LAYERS, ei.WIRES), bool)
    wire, fired, second, second_fired = track_paths(d)
    layers = np.broadcast_to(LAYER, wire.shape)
    light(truth, layers, wire, fired)
    light(truth, layers, second, second_fired)

    occupancy = np.repeat(np.asarray(NOISE_OCCUPANCY), ei.LAYERS_PER_REGION)[:, None] * luminosity
    raw = truth | (d["noise"] < occupancy.astype(np.float32))
    light(raw, *background_segments(d, luminosity))
    light(raw, *crosstalk_runs(d, luminosity))
    if not track_ids:
        return raw, truth
    ids = np.zeros(truth.shape, np.uint8)
    for t in range(MAX_TRACKS):  # in increasing number: a shared wire keeps the higher one
        track = np.zeros_like(truth)
        light(track, layers[:, t], wire[:, t], fired[:, t])
        light(track, layers[:, t], second[:, t], second_fired[:, t])
        ids[track] = t + 1
    return raw, truth, ids


def generate_event(rng, luminosity=LUMINOSITY):
    """One event from a numpy Generator: (raw, truth) uint8 (36, 112, 3), hits = 255."""
    raw, truth = render_events(rng.random(N_DRAWS, dtype=np.float32)[None], luminosity)
    return ei.mask_to_image(raw[0]), ei.mask_to_image(truth[0])


def fill_events(outputs, seed, luminosity, start, convert, preset=PRESET):
    """Fill (raw, truth[, track ids]) output arrays with events start..start+len-1, chunk by chunk.

    convert maps the raw and truth masks to what their outputs hold; track ids go in as they are."""
    event_worlds.check_luminosity(luminosity)
    n = len(outputs[0])
    world = event_worlds.world_of(preset)
    if world is not None:
        return event_worlds.fill_world(outputs, seed, luminosity, start, convert, world, CHUNK_EVENTS)
    u = np.empty((min(n, CHUNK_EVENTS), N_DRAWS), np.float32)
    for at in range(0, n, CHUNK_EVENTS):
        size = min(CHUNK_EVENTS, n - at)
        for k in range(size):
            np.random.default_rng([seed, start + at + k]).random(dtype=np.float32, out=u[k])
        rendered = render_events(u[:size], luminosity, track_ids=len(outputs) > 2)
        for k, (out, mask) in enumerate(zip(outputs, rendered, strict=True)):
            out[at:at + size] = convert(mask) if k < 2 else mask
    return outputs


def generate_masks(n, seed=SEED, luminosity=LUMINOSITY, start=0, track_ids=False, preset=PRESET):
    """Raw and truth hit masks (n, 36, 112) of events start..start+n-1 of the set `seed`
    (and with track_ids their track ids, as generate_events gives them)."""
    shape = (n, ei.LAYERS, ei.WIRES)
    outputs = (np.empty(shape, bool), np.empty(shape, bool)) + ((np.empty(shape, np.uint8),) if track_ids else ())
    return fill_events(outputs, seed, luminosity, start, lambda m: m, preset)


def generate_events(n, seed=SEED, luminosity=LUMINOSITY, start=0, track_ids=False, preset=PRESET):
    """Events start..start+n-1 of the set `seed`: (raw, truth) uint8 (n, 36, 112, 3), hits = 255.

    Event i uses np.random.default_rng([seed, start + i]) and a fixed number of draws, exactly as
    generate_event does: a slice equals the same events of the whole set, and the same seed at a
    higher luminosity gives the same tracks with a background that holds the lower one's.
    track_ids: (raw, truth, ids) with ids uint8 (n, 36, 112), the track number 1..k of each truth
    hit (0 = no track hit; a wire two tracks share has the higher number).
    preset: "default" (the generator above), another name of event_worlds.WORLDS ("hard"), or a
    world's parameter dict (event_worlds.world_settings); those worlds' events come from event_worlds.
    """
    shape = (n, ei.LAYERS, ei.WIRES, ei.CHANNELS)
    outputs = (np.empty(shape, np.uint8), np.empty(shape, np.uint8))
    outputs += (np.empty(shape[:3], np.uint8),) if track_ids else ()
    return fill_events(outputs, seed, luminosity, start, ei.mask_to_image, preset)


def event_name(i):
    """File name of event i in the folders layout: event_000123.png."""
    return f"event_{i:06d}.png"


def tagged_names(i):
    """(raw, truth) file names of event i in the tagged layout: dc_all_000123.png, dc_truth_000123.png."""
    return f"dc{ei.RAW_TAG}{i:06d}.png", f"dc{ei.TRUTH_TAG}{i:06d}.png"


def pair_paths(folder, layout, i):
    """Where the raw, truth and track-id PNGs of event i go inside the output folder."""
    if layout == "tagged":
        raw_name, truth_name = tagged_names(i)
        return folder / raw_name, folder / truth_name, folder / f"dc{ei.TRACKS_TAG}{i:06d}.png"
    return folder / "raw" / event_name(i), folder / "truth" / event_name(i), folder / ei.TRACKS_FOLDER / event_name(i)


def write_chunk(job):
    """Worker: generate events start..start+count-1 and write their PNGs; return their hit_sums."""
    folder, layout, seed, luminosity, start, count, preset = job
    raw, truth, ids = generate_masks(count, seed, luminosity, start, track_ids=True, preset=preset)
    raw_img, truth_img = ei.mask_to_image(raw), ei.mask_to_image(truth)
    for k in range(count):
        raw_path, truth_path, tracks_path = pair_paths(Path(folder), layout, start + k)
        ei.write_event_png(raw_path, raw_img[k])
        ei.write_event_png(truth_path, truth_img[k])
        ei.write_track_ids_png(tracks_path, ids[k])
    return hit_sums(raw, truth)


def hit_sums(raw, truth):
    """(events, raw hits, truth hits, background hits per region (3,)) of hit masks [N,36,112]."""
    background = (raw & ~truth).sum(axis=(0, 2)).reshape(ei.REGIONS, -1).sum(axis=1)
    return len(raw), int(raw.sum()), int(truth.sum()), background


def write_events(folder, args):
    """Write the PNG pairs of args into folder on args.workers processes; return the set's hit_sums."""
    if args.layout == "folders":
        (folder / "raw").mkdir()
        (folder / "truth").mkdir()
        (folder / ei.TRACKS_FOLDER).mkdir()
    n, workers = args.events, min(args.workers, args.events)
    size = max(1, min(JOB_EVENTS, math.ceil(n / (JOBS_PER_WORKER * workers))))
    jobs = [(str(folder), args.layout, args.seed, args.luminosity, s, min(size, n - s), args.world)
            for s in range(0, n, size)]
    totals = [0, 0, 0, np.zeros(ei.REGIONS, np.int64)]
    # Workers ignore Ctrl-C: the main process stops them and cleans up.
    with progress(total=n, unit="event", desc="events") as bar, \
            worker_pool(workers) as pool:
        results = (map(task_result, as_completed([submit_task(pool, write_chunk, job) for job in jobs])) if pool
                   else map(write_chunk, jobs))
        for result in results:
            totals = [a + b for a, b in zip(totals, result, strict=True)]
            bar.update(result[0])
    return totals


def hipo_chunks(n, seed, luminosity, sectors, totals, preset=PRESET):
    """The set's events as (start, raw, truth, track ids) chunks of whole HIPO events (hipo_writer.hipo_events);
    adds their hit counts to totals."""
    step = sectors * max(1, CHUNK_EVENTS // sectors)
    for at in range(0, n, step):
        raw, truth, ids = generate_masks(min(step, n - at), seed, luminosity, at, track_ids=True, preset=preset)
        totals[:] = [a + b for a, b in zip(totals, hit_sums(raw, truth), strict=True)]
        yield at, raw, truth, ids


def write_hipo(path, args):
    """Write the set as one HIPO file (atomically) at path; return the set's hit_sums."""
    totals = [0, 0, 0, np.zeros(ei.REGIONS, np.int64)]
    with progress(total=args.events, unit="event", desc="events") as bar:
        def counted(events):
            for event in events:
                bar.update(len(event["sectors"]))
                yield event

        chunks = hipo_chunks(args.events, args.seed, args.luminosity, args.sectors, totals, args.world)
        hipo_writer.write_events(path, counted(hipo_writer.hipo_events(chunks, args.seed, args.sectors)),
                                 overwrite=args.overwrite)
    return totals


def write_preview(path, seed, luminosity, count, preset=PRESET):
    """Write a PNG grid of the first count raw|truth pairs, enlarged for the eye."""
    raw, truth = generate_events(count, seed, luminosity, preset=preset)
    with open(path, "wb") as f:  # an open file: the grid is written as PNG whatever the name
        ei.save_event_grid(f, {"raw": list(raw), "truth (track hits)": list(truth)},
                           row_labels=[f"event {i}" for i in range(count)],
                           title=f"make_events: seed {seed}, luminosity {luminosity:g}, "
                                 f"{event_worlds.preset_label(preset)}")


def preview_path(args):
    """Where --preview writes (None without it), and whether that is inside the output folder."""
    if args.preview is None:
        return None, False
    out = args.output  # in the tagged layout the folder holds only tagged event PNGs (Pix2Pix_data refuses others)
    default = out / PREVIEW_NAME if args.layout == "folders" else out.parent / f"{out.name}_{PREVIEW_NAME}"
    if args.format == "hipo":
        default = out.parent / f"{out.stem}_{PREVIEW_NAME}"
    preview = Path(args.preview or default)
    if preview.suffix.lower() != ".png":
        raise InputError(f"{preview}: the preview must be a .png file")
    where, folder = preview.resolve(), out.resolve()
    if where == folder:
        raise InputError(f"{preview}: is the output itself; name the preview another file")
    inside = where.parent == folder  # the folders layout's OUT/NAME.png: beside raw/ and truth/
    if folder in where.parents and (not inside or args.layout == "tagged"):
        raise InputError(f"{preview}: the event folders hold only event PNGs (the preview would join or replace "
                         "one); put it beside them")
    if not inside:
        check_output_path(preview, args.overwrite)
    return preview, inside


def summary_line(args, seconds, totals, preview):
    """The one line a run ends with: pairs, hits per event, occupancy by region."""
    count, raw_hits, truth_hits, background = totals
    cells = count * ei.LAYERS * ei.WIRES
    per_region = background / (cells / ei.REGIONS)
    where = (f"{count} pairs to {args.output} ({args.layout})" if args.format == "png" else
             f"{count} events to {args.output} ({-(-count // args.sectors)} HIPO events of {args.sectors} sectors)")
    return (f"wrote {where} ({event_worlds.preset_label(args.world)}) in {seconds:.1f} s: "
            f"mean {raw_hits / count:.1f} raw / {truth_hits / count:.1f} truth hits per event, "
            f"occupancy {100 * raw_hits / cells:.2f} %, background {100 * background.sum() / cells:.2f} % "
            f"(R1 {100 * per_region[0]:.2f}, R2 {100 * per_region[1]:.2f}, R3 {100 * per_region[2]:.2f} %)"
            + (f", preview {preview}" if preview is not None else ""))


def build_parser():
    """The command line: every setting above, and the output folder."""
    p = ArgumentParser(description=__doc__)
    p.add_argument("--output", "--out", required=True, type=Path, metavar="OUT",
                   help="output folder (--format hipo: the .hipo file), made at the end; an existing non-empty "
                        "one needs --overwrite (--out: its old name)")
    p.add_argument("--format", choices=("png", "hipo"), default=FORMAT,
                   help="png: raw/truth PNG pairs in a folder; hipo: one CLAS12 HIPO file with DC::tdc, "
                        "TimeBasedTrkg::TBHits and RUN::config (default %(default)s)")
    p.add_argument("--sectors", type=int, default=SECTORS,
                   help="--format hipo: sectors per HIPO event, drawn from 1-6; event i of the set is a sector "
                        "of HIPO event i // SECTORS (default %(default)s)")
    p.add_argument("-n", "--events", type=int, default=EVENTS, help="number of raw/truth pairs (default %(default)s)")
    p.add_argument("--seed", type=int, default=SEED,
                   help="event i uses np.random.default_rng([seed, i]) (default %(default)s)")
    p.add_argument("--luminosity", type=float, default=LUMINOSITY,
                   help="background scale: 0 = tracks only, 2 = about twice the background hits, "
                        f"at most {event_worlds.MAX_LUMINOSITY:g} (default %(default)s)")
    p.add_argument("--workers", type=int, default=WORKERS, help="processes writing PNGs (default %(default)s)")
    p.add_argument("--layout", choices=ei.PAIR_LAYOUTS, default=LAYOUT,
                   help="folders: OUT/raw/event_000123.png + OUT/truth/event_000123.png + OUT/tracks/event_000123.png; "
                        "tagged: OUT/dc_all_000123.png + OUT/dc_truth_000123.png + OUT/dc_tracks_000123.png; the "
                        "tracks image holds each truth hit's track number 1..k (default %(default)s)")
    p.add_argument("--preview", nargs="?", const="", default=None, metavar="PNG",
                   help=f"write a grid of the first raw|truth pairs, enlarged, to PNG (default OUT/{PREVIEW_NAME}; "
                        f"tagged layout: OUT_{PREVIEW_NAME} beside OUT; hipo: NAME_{PREVIEW_NAME} beside the file)")
    p.add_argument("--preview-events", type=int, default=PREVIEW_EVENTS,
                   help="pairs shown by --preview (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", default=OVERWRITE,
                   help="replace an existing output folder or preview file")
    world_defaults = {name: globals()[name.upper()] for name in event_worlds.WORLD_OPTIONS}  # TRACKS, ... above
    event_worlds.add_world_options(p, preset=PRESET, **world_defaults)
    return p


def parse_args(argv=None):
    """The command line, with impossible settings refused (InputError)."""
    args = build_parser().parse_args(argv)
    if args.events < 1:
        raise InputError(f"-n {args.events}: need at least one event")
    if args.seed >= 2**32:  # numpy would split a larger seed into 32-bit words: another set's stream
        raise InputError(f"--seed {args.seed}: must be in 0..{2**32 - 1}")
    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: need at least one")
    if args.preview_events < 1:
        raise InputError(f"--preview-events {args.preview_events}: need at least one")
    if not 1 <= args.sectors <= ch.N_SECTORS:
        raise InputError(f"--sectors {args.sectors}: must be between 1 and {ch.N_SECTORS}")
    if args.format == "png" and args.sectors != SECTORS:
        raise InputError(f"--sectors {args.sectors}: for --format hipo (a PNG pair is one sector)")
    if args.format == "hipo" and args.layout != LAYOUT:
        raise InputError(f"--layout {args.layout}: a PNG layout; --format hipo writes one file")
    for flag, given, unused, why in (
            ("--workers", args.workers != WORKERS, args.format == "hipo", "one process writes HIPO"),
            ("--preview-events", args.preview_events != PREVIEW_EVENTS, args.preview is None, "no --preview")):
        if given and unused:
            warn(f"{flag} has nothing to act on here ({why})")
    event_worlds.check_luminosity(args.luminosity)
    args.world = event_worlds.world_settings(args)
    return args


def main(argv=None):
    """Make the events as the command line says and print the one-line summary."""
    args = parse_args(argv)
    if args.format == "hipo":
        if args.output.is_dir():
            raise InputError(f"{args.output}: is a folder; --format hipo writes one file")
        if args.output.suffix != ".hipo":
            raise InputError(f"{args.output}: --format hipo writes one file named .hipo")
        check_output_path(args.output, args.overwrite)
    else:
        check_output_folder(args.output, args.overwrite)
    preview, preview_inside = preview_path(args)
    replace = args.output.exists()  # checked above; a folder another run makes meanwhile is never replaced
    shown = min(args.preview_events, args.events)
    t0 = time.perf_counter()
    if args.format == "hipo":
        totals = write_hipo(args.output, args)  # atomically, by clas12_hipo
    else:
        with atomic_output(args.output, overwrite=replace, folder=True) as tmp:  # replaced only when complete
            totals = write_events(tmp, args)
            if preview_inside:
                write_preview(tmp / preview.name, args.seed, args.luminosity, shown, args.world)
    if preview is not None and not preview_inside:
        with atomic_output(preview, args.overwrite) as tmp:
            write_preview(tmp, args.seed, args.luminosity, shown, args.world)
    print(summary_line(args, time.perf_counter() - t0, totals, preview))
    return 0


if __name__ == "__main__":
    run_main(main)
