"""The configurable synthetic worlds of make_events.py (every preset but `default`).

`default` is make_events' own vectorised generator, bit for bit. Any other world is a dict of
the parameters below (WORLDS["hard"], or a preset with make_events' options over it) and is
drawn event by event from np.random.default_rng([WORLD_STREAM, seed, i]): deterministic and
sliceable like the default. Tracks are wire-vs-layer curves; a layer a steep track crosses more
than one cell of lights the run of wires it crosses. "Unwanted" tracks (low momentum: curling,
ending before region 3) are in the raw image only, never in the truth. make_events' world options
(--preset, --tracks, ...) are checked and put together here too (world_settings, world_of).
"""

import numpy as np

import event_image as ei
from script_utils import InputError

WORLD_STREAM = 0x3A7D  # seeds event i of a set: default_rng([WORLD_STREAM, seed, i])

# Default-like values (used when an option is given with --preset default) and the hard world.
WORLDS = {
    "default": {"tracks": (1, 3), "track_span": 16.0, "bend": 0.35, "inefficiency": 0.06, "segment_rate": 1.0,
                "occupancy_scale": (1.0, 1.0), "crosstalk_rate": 1.0, "unwanted_fraction": 0.0, "wire_gradient": 0.0,
                "background_lean": 0.0},
    "hard": {"tracks": (1, 5), "track_span": 45.0, "bend": 0.6, "inefficiency": 0.05, "segment_rate": 4.0,
             "occupancy_scale": (1.0, 3.0), "crosstalk_rate": 2.0, "unwanted_fraction": 0.5,
             "wire_gradient": 0.0, "background_lean": 0.0},
}
PRESETS = tuple(WORLDS)
MAX_TRACK_ID = 127  # most tracks per event: a track id is TBHits.trkID, one signed byte
MAX_LUMINOSITY = 10.0  # every world's limit (make_events' default generator draws slots for up to this)
WORLD_OPTIONS = ("tracks", "track_span", "bend", "inefficiency", "segment_rate", "occupancy_scale", "crosstalk_rate",
                 "unwanted_fraction", "wire_gradient", "background_lean")
# Shared by every world, make_events' default generator included (it imports them from here).
STEREO_MAX = 2.0  # the two superlayers of a region see a track up to +-this many wires apart
DOUBLE_HIT = 0.06  # chance that the adjacent wire fires too
NOISE_OCCUPANCY = np.array((0.025, 0.012, 0.008))  # uncorrelated hits at luminosity 1: fraction of cells lit in R1-R3
SEGMENTS_PER_EVENT = 1.5  # low-energy background segments per event at luminosity 1, each inside one superlayer
SEGMENT_REGION_WEIGHTS = np.array((0.60, 0.25, 0.15))  # where the segments are
SEGMENT_SLOPE_MAX = 1.2  # |wires per layer|: low-energy particles cross at steeper angles
CROSSTALK_PER_EVENT = 2.0  # cross-talk runs per event at luminosity 1 (the uncorrelated hits' regional weights)
UNWANTED_CURVATURE = (0.04, 0.15)  # |change of slope per layer| of an unwanted (curling) track
UNWANTED_LAST_LAYER = (5, 23)  # an unwanted track ends in this layer range: never reaches region 3

# The geometry, shared with make_events' default generator.
LAYER = np.arange(ei.LAYERS)
STAGGER = ei.STAGGER  # CLAS12's half-cell stagger (event_image)
STEREO_SIGN = np.where((LAYER // ei.LAYERS_PER_SUPERLAYER) % 2 == 0, 1.0, -1.0)  # +6 / -6 degree superlayers
N = ei.LAYERS_PER_REGION
# The bend's shape per layer: 0 in region 1, quadratic in region 2, straight in region 3; its slope goes
# from 0 to 1 across region 2, so bend * curve changes a track's slope by bend.
REGION_TWO_CURVE = np.clip(LAYER - N, 0, N) ** 2 / (2 * N) + np.clip(LAYER - 2 * N, 0, None)
REGION_TWO_SLOPE = np.clip(LAYER - N, 0, N) / N  # derivative of REGION_TWO_CURVE


def light_runs(mask, layers, position, slope):
    """Light, in each layer, the run of cells a track at position with local slope crosses.

    Inside one layer the track moves |slope| wires: every cell of [position - |slope|/2,
    position + |slope|/2] is lit, so consecutive layers' runs join up however steep the track."""
    half = np.abs(slope) / 2
    first, last = np.rint(position - half).astype(int), np.rint(position + half).astype(int)
    for layer, a, b in zip(layers, first, last, strict=True):
        a, b = max(a, 0), min(b, ei.WIRES - 1)
        if a <= b:
            mask[layer, a:b + 1] = True


def wanted_track(rng, w):
    """Positions and local slopes (36,) of a track crossing all layers, inside the chamber."""
    s_max = w["track_span"] / (ei.LAYERS - 1)
    entry = rng.uniform(-s_max, s_max)
    exit_slope = np.clip(entry + rng.uniform(-w["bend"], w["bend"]), -s_max, s_max)
    shape = (entry * LAYER + (exit_slope - entry) * REGION_TWO_CURVE
             + rng.uniform(-STEREO_MAX, STEREO_MAX) * STEREO_SIGN / 2 - STAGGER)
    low, high = -shape.min(), ei.WIRES - 1 - shape.max()
    position = shape + (rng.uniform(low, high) if high > low else (low + high) / 2)
    return LAYER, position, entry + (exit_slope - entry) * REGION_TWO_SLOPE


def leaning(rng, value, lean):
    """value, its sign made + with probability lean (else as drawn): background leaning one way along the wires,
    as CLAS12's torus field curls low-momentum particles of one charge one way. No draw when lean is 0."""
    return abs(value) if lean and rng.random() < lean else value


def unwanted_track(rng, lean=0.0):
    """A low-momentum track: from layer 0, curling ever more steeply (towards higher wires with probability
    lean, else either way), ending before region 3."""
    last = rng.integers(UNWANTED_LAST_LAYER[0], UNWANTED_LAST_LAYER[1] + 1)
    layers = LAYER[:last + 1]
    curvature = leaning(rng, rng.uniform(*UNWANTED_CURVATURE) * rng.choice((-1.0, 1.0)), lean)
    slope = rng.uniform(-0.5, 0.5) + curvature * layers
    position = rng.uniform(10, ei.WIRES - 11) + rng.uniform(-0.5, 0.5) * layers + curvature * layers**2 / 2 - STAGGER[
        layers]
    inside = (position > -0.5) & (position < ei.WIRES - 0.5)
    end = len(layers) if inside.all() else int(np.argmin(inside))  # it leaves the chamber: it ends there
    return layers[:end], position[:end], slope[:end]


def render_track(rng, w, layers, position, slope):
    """The hit mask (36, 112) of one track: per-layer inefficiency, double hits, runs of crossed wires."""
    mask = np.zeros((ei.LAYERS, ei.WIRES), bool)
    miss = rng.random(ei.LAYERS) < rng.uniform(0, w["inefficiency"], ei.LAYERS)  # each layer its own inefficiency
    double = rng.random(ei.LAYERS) < DOUBLE_HIT
    keep = ~miss[layers]
    light_runs(mask, layers[keep], position[keep], slope[keep])
    for layer, x in zip(layers[keep & double[layers]], position[keep & double[layers]], strict=True):
        neighbour = int(np.rint(x)) + (1 if x > np.rint(x) else -1)
        if 0 <= neighbour < ei.WIRES:
            mask[layer, neighbour] = True
    return mask


def wire_profile(gradient):
    """Uncorrelated hits' density along the wires, mean 1: 1 + gradient at the first wire, 1 - gradient at the last."""
    return 1 + gradient * (1 - 2 * np.arange(ei.WIRES) / (ei.WIRES - 1))


def background(rng, w, luminosity):
    """Uncorrelated hits (regional scale drawn per event), background segments and cross-talk runs."""
    scale = rng.uniform(*w["occupancy_scale"], ei.REGIONS)
    occupancy = np.repeat(NOISE_OCCUPANCY * scale, ei.LAYERS_PER_REGION)[:, None] * luminosity
    occupancy = occupancy * wire_profile(w["wire_gradient"])
    raw = rng.random((ei.LAYERS, ei.WIRES)) < occupancy
    for _ in range(rng.poisson(SEGMENTS_PER_EVENT * w["segment_rate"] * luminosity)):
        region = rng.choice(ei.REGIONS, p=SEGMENT_REGION_WEIGHTS)
        superlayer = 2 * region + rng.integers(2)
        length = rng.integers(3, 7)
        first = superlayer * ei.LAYERS_PER_SUPERLAYER + rng.integers(0, ei.LAYERS_PER_SUPERLAYER - length + 1)
        layers = np.arange(first, first + length)
        slope = leaning(rng, rng.uniform(-SEGMENT_SLOPE_MAX, SEGMENT_SLOPE_MAX), w["background_lean"])
        light_runs(raw, layers, rng.uniform(0, ei.WIRES - 1) + slope * (layers - first) - STAGGER[layers],
                   np.full(length, slope))
    p = NOISE_OCCUPANCY / NOISE_OCCUPANCY.sum()
    for _ in range(rng.poisson(CROSSTALK_PER_EVENT * w["crosstalk_rate"] * luminosity)):
        layer = rng.choice(ei.REGIONS, p=p) * ei.LAYERS_PER_REGION + rng.integers(ei.LAYERS_PER_REGION)
        length = rng.integers(2, 5)
        first = rng.integers(0, ei.WIRES - length + 1)
        raw[layer, first:first + length] = True
    return raw


def world_event(rng, w, luminosity):
    """One event of world w: raw, truth (bool (36, 112)) and the wanted tracks' ids (uint8, 1..k).

    The tracks are drawn before the background, so the same seed at another luminosity has the
    same tracks."""
    lo, hi = w["tracks"]
    n_tracks = rng.integers(lo, hi + 1)
    unwanted = rng.random(n_tracks) < w["unwanted_fraction"]
    truth = np.zeros((ei.LAYERS, ei.WIRES), bool)
    junk = np.zeros_like(truth)
    ids = np.zeros(truth.shape, np.uint8)
    k = 0
    for is_unwanted in unwanted:
        path = unwanted_track(rng, w["background_lean"]) if is_unwanted else wanted_track(rng, w)
        hits = render_track(rng, w, *path)
        if is_unwanted:
            junk |= hits
        else:
            k += 1
            truth |= hits
            ids[hits] = k
    raw = truth | junk | background(rng, w, luminosity)
    return raw, truth, ids


def render_world(seed, start, count, w, luminosity):
    """Raw, truth and ids of events start..start+count-1 of world w (stacked, (count, 36, 112))."""
    events = [world_event(np.random.default_rng([WORLD_STREAM, seed, start + i]), w, luminosity)
              for i in range(count)]
    return tuple(np.stack(a) for a in zip(*events, strict=True))


def fill_world(outputs, seed, luminosity, start, convert, world, chunk_events):
    """make_events.fill_events for a world: the (raw, truth[, ids]) outputs, chunk by chunk of render_world.

    convert maps the raw and truth masks to what their outputs hold; track ids go in as they are."""
    n = len(outputs[0])
    for at in range(0, n, chunk_events):
        size = min(chunk_events, n - at)
        rendered = render_world(seed, start + at, size, world, luminosity)
        for out, mask, k in zip(outputs, rendered, range(3), strict=False):
            out[at:at + size] = convert(mask) if k < 2 else mask
    return outputs


# --- make_events' world options ------------------------------------------------------------
def check_luminosity(luminosity):
    """Refuse a luminosity the generator cannot make (InputError)."""
    if not 0 <= luminosity <= MAX_LUMINOSITY:
        raise InputError(f"luminosity {luminosity} is outside 0..{MAX_LUMINOSITY:g}")


def world_of(preset):
    """None for the default preset (make_events' vectorised generator), else the world's parameter dict.

    preset: a name of WORLDS or a dict of its parameters."""
    if isinstance(preset, dict):
        return preset
    if preset not in PRESETS:
        raise InputError(f"preset {preset!r}: not one of {', '.join(PRESETS)}")
    return None if preset == "default" else WORLDS[preset]


def preset_label(preset):
    """How a preset (a name or a world's parameter dict) is named in make_events' summary and preview."""
    return f"preset {preset}" if isinstance(preset, str) else "world options over a preset"


def add_world_options(parser, preset, **defaults):
    """make_events' --preset (default: preset) and world options (defaults: each of WORLD_OPTIONS -> its default)."""
    parser.add_argument("--preset", choices=PRESETS, default=preset,
                        help="default: today's events, bit for bit; hard: steep and bending tracks, 1-5 per event, "
                             "half of them unwanted, more background (default %(default)s)")
    w = parser.add_argument_group("world options (each overrides the preset's value; any of them gives a "
                                  "non-default world)")
    w.add_argument("--tracks", type=int, nargs=2, metavar=("MIN", "MAX"), default=defaults["tracks"],
                   help="tracks per event, drawn uniformly in MIN..MAX (hard: 1 5)")
    w.add_argument("--track-span", type=float, default=defaults["track_span"], metavar="WIRES",
                   help="a track crosses at most this many wires over the 36 layers (hard: 45)")
    w.add_argument("--bend", type=float, default=defaults["bend"],
                   help="|change of slope| across region 2, wires per layer, either direction (hard: 0.6)")
    w.add_argument("--inefficiency", type=float, default=defaults["inefficiency"],
                   help="each layer's inefficiency, drawn in 0..this for each track (hard: 0.05)")
    w.add_argument("--segment-rate", type=float, default=defaults["segment_rate"],
                   help=f"background segments per event, x today's {SEGMENTS_PER_EVENT:g} (hard: 4)")
    w.add_argument("--occupancy-scale", type=float, nargs=2, metavar=("LO", "HI"), default=defaults["occupancy_scale"],
                   help="each region's uncorrelated hits x a factor drawn in LO..HI per event and region (hard: 1 3)")
    w.add_argument("--crosstalk-rate", type=float, default=defaults["crosstalk_rate"],
                   help=f"cross-talk runs per event, x today's {CROSSTALK_PER_EVENT:g} (hard: 2)")
    w.add_argument("--unwanted-fraction", type=float, default=defaults["unwanted_fraction"],
                   help="share of tracks that are unwanted: curling, ending before region 3, raw hits only (hard: 0.5)")
    w.add_argument("--wire-gradient", type=float, default=defaults["wire_gradient"], metavar="G",
                   help="uncorrelated hits fall linearly along the wires, from 1 + G times the mean at wire 1 to "
                        "1 - G at wire 112, as CLAS12's fall with the polar angle; G in 0..1 (hard: 0)")
    w.add_argument("--background-lean", type=float, default=defaults["background_lean"], metavar="L",
                   help="background segments slope and unwanted tracks curl towards higher wires with probability "
                        "L, else either way (1: all one way, as one charge in CLAS12's torus field); L in 0..1 "
                        "(hard: 0)")


def world_settings(args):
    """The preset's name when no world option is given, else its parameter dict with the options over it."""
    given = {k: getattr(args, k) for k in WORLD_OPTIONS if getattr(args, k) is not None}
    if not given:
        return args.preset
    world = {**WORLDS[args.preset], **given}
    lo, hi = world["tracks"]
    if not 0 <= lo <= hi <= MAX_TRACK_ID:
        raise InputError(f"--tracks {lo} {hi}: need 0 <= MIN <= MAX <= {MAX_TRACK_ID} (a track id is one signed byte "
                         "in HIPO's TBHits.trkID)")
    lo, hi = world["occupancy_scale"]
    if not 0 <= lo <= hi:
        raise InputError(f"--occupancy-scale {lo:g} {hi:g}: need 0 <= LO <= HI")
    densest = max(NOISE_OCCUPANCY) * hi * args.luminosity * (1 + world["wire_gradient"])
    if densest > 1:
        raise InputError(f"the densest wire would need {densest:.0%} occupancy (region 1's {max(NOISE_OCCUPANCY):g} x "
                         f"occupancy scale {hi:g} x --luminosity {args.luminosity:g} x (1 + wire gradient "
                         f"{world['wire_gradient']:g})): at most 100 %")
    for name in ("inefficiency", "unwanted_fraction", "wire_gradient", "background_lean"):
        if not 0 <= world[name] <= 1:
            raise InputError(f"--{name.replace('_', '-')} {world[name]:g}: must be in 0..1")
    for name in ("track_span", "bend", "segment_rate", "crosstalk_rate"):
        if not 0 <= world[name] <= 100:
            raise InputError(f"--{name.replace('_', '-')} {world[name]:g}: must be in 0..100")
    return world
