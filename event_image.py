"""What every script needs to know about one drift-chamber event image.

One event of one CLAS12 sector is an RGB PNG 112 wires wide and 36 layers high
(numpy shape (36, 112, 3)): row = layer 0..35, column = wire 0..111, rows 0-11 are
region 1, 12-23 region 2, 24-35 region 3. A lit pixel is a hit.

The network works on 128x128x3 images. Nothing is rescaled: borders are added around
the image and between the three regions (the layout below); `crop_event` is the exact
inverse of `pad_event`.

This module also holds the hit mask of an image, PNG reading with the project's input
checks, and the hit-level scores physicists judge a denoiser by.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image

from script_utils import InputError, warn

# --- The event image -------------------------------------------------------------------
WIRES = 112  # columns
LAYERS = 36  # rows
CHANNELS = 3
REGIONS = 3
LAYERS_PER_REGION = 12
SUPERLAYERS = 6
LAYERS_PER_SUPERLAYER = 6
PNG_HIT_THRESHOLD = 127  # a PNG pixel is a hit where any channel is above this
SCALED_HIT_THRESHOLD = 0.5  # the same on images scaled to 0..1 (127/255 < 0.5 < 128/255)
HIT_VALUE = 255  # the value written for a hit (all channels)
PNG_COMPRESS_LEVEL = 1  # zlib level of written event PNGs: twice as fast to write as the default 6, ~500 bytes each

# --- The 128x128 layout ----------------------------------------------------------------
PADDED_SIZE = 128
PAD_LEFT = 8  # empty columns left of wire 0
PAD_RIGHT = 8  # empty columns right of wire 111
PAD_TOP = 44  # empty rows above region 1
REGION_GAP = 2  # empty rows between two regions
PAD_BOTTOM = 44  # empty rows below region 3
assert PAD_LEFT + WIRES + PAD_RIGHT == PADDED_SIZE
assert PAD_TOP + REGIONS * LAYERS_PER_REGION + (REGIONS - 1) * REGION_GAP + PAD_BOTTOM == PADDED_SIZE

# First padded row of each region: (44, 58, 72).
REGION_ROWS = tuple(PAD_TOP + r * (LAYERS_PER_REGION + REGION_GAP) for r in range(REGIONS))
# Padded row of each of the 36 layers, and the padded columns of the wires.
LAYER_ROWS = np.concatenate([np.arange(start, start + LAYERS_PER_REGION) for start in REGION_ROWS])
WIRE_COLUMNS = slice(PAD_LEFT, PAD_LEFT + WIRES)
# CLAS12's half-cell stagger, in cells, of each layer's wires (coatjava's DC geometry puts wire w of layer l = 1-6 of
# a superlayer at w - 1 + (l % 2) / 2 cells across the layer): rows 0, 2, 4, ... (layers 1, 3, 5) sit half a cell
# towards higher wires, so a track at x cells hits wire rint(x - STAGGER[row]) (0-based).
STAGGER = 0.5 * ((np.arange(LAYERS) + 1) % 2)
# Each cell's mirror along its layer (--mirror-average): wire 111 - w, and 110 - w in the staggered layers, so
# that a track's mirror has the same stagger; -1 for the staggered layers' wire 111 (none).
MIRROR_WIRE = (WIRES - 1 - 2 * STAGGER).astype(int)[:, None] - np.arange(WIRES)[None, :]

LAYOUT = {  # recorded in every HDF5 file the project writes
    "event_shape": (LAYERS, WIRES, CHANNELS),
    "padded_shape": (PADDED_SIZE, PADDED_SIZE, CHANNELS),
    "pad_left": PAD_LEFT,
    "pad_right": PAD_RIGHT,
    "pad_top": PAD_TOP,
    "region_gap": REGION_GAP,
    "pad_bottom": PAD_BOTTOM,
    "region_rows": REGION_ROWS,
}

# The exported model's interface (Pix2Pix_export.py), as CLAS12 reconstruction feeds it: float32
# [B, 1, 36, 112] with 1.0 at (layer-1, wire-1) of a hit in, a hit probability per wire out.
MODEL_INPUT = "hits"
MODEL_OUTPUT = "probabilities"
MODEL_TENSOR_SHAPE = ("batch", 1, LAYERS, WIRES)


def pad_event(event):
    """Place event image(s) of shape (..., 36, 112, C) into the 128x128 layout.

    Works on one image or a batch; the dtype is kept and the borders are zero.
    """
    event = np.asarray(event)
    if event.shape[-3:-1] != (LAYERS, WIRES):
        raise ValueError(f"expected (..., {LAYERS}, {WIRES}, C), got {event.shape}")
    out = np.zeros(event.shape[:-3] + (PADDED_SIZE, PADDED_SIZE, event.shape[-1]), event.dtype)
    out[..., LAYER_ROWS, WIRE_COLUMNS, :] = event
    return out


def crop_event(padded):
    """Give back the (..., 36, 112, C) event image(s) from padded (..., 128, 128, C) ones."""
    padded = np.asarray(padded)
    if padded.shape[-3:-1] != (PADDED_SIZE, PADDED_SIZE):
        raise ValueError(f"expected (..., {PADDED_SIZE}, {PADDED_SIZE}, C), got {padded.shape}")
    return padded[..., LAYER_ROWS, WIRE_COLUMNS, :]


def event_region_mask():
    """Boolean (128, 128) map of the padded pixels that hold a detector cell."""
    mask = np.zeros((PADDED_SIZE, PADDED_SIZE), bool)
    mask[LAYER_ROWS, WIRE_COLUMNS] = True
    return mask


def hit_mask(image, threshold=PNG_HIT_THRESHOLD):
    """Boolean (...) mask, True where any channel of image(s) (..., C) exceeds threshold."""
    image = np.asarray(image)
    brightest = image[..., 0]
    for c in range(1, image.shape[-1]):  # several times faster than np.any(image > t, axis=-1)
        brightest = np.maximum(brightest, image[..., c])
    return brightest > threshold


def truth_outside_raw(raw_hits, truth_hits):
    """(events, hits) of truth hit masks that are not raw hits: what swapped raw and truth inputs give."""
    stray = np.asarray(truth_hits) & ~np.asarray(raw_hits)
    return int(stray.any(axis=(1, 2)).sum()), int(stray.sum())


def network_input(images):
    """float32 images (..., 3) as the model sees them: 1 on all channels where any channel of the uint8 images
    (..., C) exceeds PNG_HIT_THRESHOLD, else 0 (numpy or JAX arrays; data_management does the same in TensorFlow)."""
    hits = images.max(axis=-1, keepdims=True) > PNG_HIT_THRESHOLD
    return hits.repeat(CHANNELS, axis=-1).astype("float32")


def mask_to_image(mask):
    """uint8 RGB image(s) (..., 3): HIT_VALUE where the mask is set, 0 elsewhere."""
    return np.repeat(np.asarray(mask, bool)[..., None], CHANNELS, axis=-1).astype(np.uint8) * HIT_VALUE


# --- PNG input and output ----------------------------------------------------------------
def list_pngs(folder, role="input"):
    """Sorted names of the .png files in folder (hidden files skipped, others named in a warning).

    A missing folder, a file, an unreadable folder or one without PNGs is an InputError that
    names the folder by its role ("raw", "truth", "input", ...).
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: {role} folder does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder}: {role} folder is not a folder")
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise InputError(f"{folder}: cannot list the {role} folder ({exc.strerror})") from None
    names, others, broken = [], [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() and not os.path.exists(entry.path):
            broken.append(entry.name)
            continue
        if not entry.is_file():
            continue
        (names if entry.name.lower().endswith(".png") else others).append(entry.name)
    if broken:
        warn(f"{folder}: ignoring {len(broken)} broken symbolic link(s): {', '.join(sorted(broken)[:3])}")
    if not names:
        raise InputError(f"{folder}: {role} folder holds no .png files")
    if others:
        warn(f"{folder}: ignoring {len(others)} file(s) not named *.png: {', '.join(sorted(others)[:3])}")
    return sorted(names)


def read_event_png(path):
    """Read one event PNG as uint8 (36, 112, 3), checking what the project accepts.

    Grayscale, palette and fully opaque RGBA images are converted to RGB. Anything else
    (not a readable PNG, 16-bit, transparent, animated, wrong size) raises InputError naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise InputError(f"{path}: not a PNG image (it is {im.format})")
            if getattr(im, "n_frames", 1) > 1:  # an animated PNG: Pillow would read its first frame alone
                raise InputError(f"{path}: animated PNG of {im.n_frames} frames: an event is one image")
            if any(";16" in str(tile.args) for tile in im.tile):  # Pillow would keep only the high byte
                raise InputError(f"{path}: 16-bit PNG: more than 8 bits per channel is not supported; "
                                 "save it as 8-bit (hits 255)")
            im.load()
            mode, size = im.mode, im.size
            if size != (WIRES, LAYERS):
                raise InputError(f"{path}: image is {size[0]}x{size[1]}, expected {WIRES}x{LAYERS} (wires x layers)")
            if mode in ("I", "I;16", "I;16B", "I;16L", "F") or im.info.get("bits", 8) > 8:
                raise InputError(f"{path}: {mode} image with more than 8 bits per channel is not supported")
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                rgba = np.asarray(im.convert("RGBA"))
                if (rgba[..., 3] != 255).any():
                    raise InputError(f"{path}: image has transparent pixels")
                return np.ascontiguousarray(rgba[..., :3])
            if mode not in ("RGB", "L", "P", "1"):
                raise InputError(f"{path}: unsupported image mode {mode}")
            return np.asarray(im if mode == "RGB" else im.convert("RGB"))  # RGB: no extra copy
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # PIL raises many kinds for broken files
        raise InputError(f"{path}: not a readable PNG ({type(exc).__name__}: {exc})") from None


def write_event_png(path, image):
    """Write a uint8 (36, 112, 3) event image as an RGB PNG."""
    image = np.asarray(image, np.uint8)
    if image.shape != (LAYERS, WIRES, CHANNELS):
        raise ValueError(f"expected ({LAYERS}, {WIRES}, {CHANNELS}), got {image.shape}")
    Image.fromarray(image, "RGB").save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def write_track_ids_png(path, track_ids):
    """Write uint8 (36, 112) track ids (1..k per track, 0 = no track hit) as a grayscale PNG of those values."""
    track_ids = np.asarray(track_ids)
    if track_ids.shape != (LAYERS, WIRES) or track_ids.min(initial=0) < 0 or track_ids.max(initial=0) > 255:
        raise ValueError(f"expected ({LAYERS}, {WIRES}) track ids in 0..255, got {track_ids.shape}")
    Image.fromarray(track_ids.astype(np.uint8), "L").save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


# The PNG layouts of make_events.py and Pix2Pix_data.py: folders (DIR/raw, DIR/truth and DIR/tracks, the track-id
# PNGs, one name in each) or tagged (one folder: dc_all_N.png, dc_truth_N.png, dc_tracks_N.png; the tags' defaults).
PAIR_LAYOUTS = ("folders", "tagged")
TRACKS_FOLDER = "tracks"
RAW_TAG, TRUTH_TAG, TRACKS_TAG = "_all_", "_truth_", "_tracks_"


def default_tracks_dir(truth_dir):
    """The track-id folder beside a truth folder (DIR/tracks for DIR/truth), or None when there is none."""
    folder = Path(truth_dir).parent / TRACKS_FOLDER
    return folder if folder.is_dir() and folder.resolve() != Path(truth_dir).resolve() else None


def read_track_ids_png(path):
    """Track ids uint8 (36, 112) of a track-id PNG: the pixel value (largest channel; grayscale or RGB).

    Checked as read_event_png checks an event image (InputError naming the file).
    """
    return read_event_png(path).max(axis=-1)


# --- Hit-level scores ----------------------------------------------------------------------
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # output thresholds tried: 0.05 .. 0.95
SWEEP_THRESHOLDS = THRESHOLDS + (0.97, 0.98, 0.99)  # the report's sweep and the tracks criterion (past 0.95)
COUNT_KEYS = ("track_hits", "track_kept", "noise_hits", "noise_removed", "kept", "invented", "events")


def hit_counts(raw, truth, kept):
    """Count what a denoiser did, summed over a batch of events.

    raw, truth, kept: boolean hit masks of the same shape (..., rows, cols), one event per
    leading index. Only raw hits are judged: a kept pixel where the raw image had no hit is
    counted as invented, not as kept.
    """
    raw, truth, kept = (np.asarray(a, bool) for a in (raw, truth, kept))
    track = raw & truth
    noise = raw & ~truth
    kept_raw = kept & raw
    events = int(np.prod(raw.shape[:-2])) if raw.ndim > 2 else 1
    return {
        "track_hits": int(track.sum()),
        "track_kept": int((kept_raw & track).sum()),
        "noise_hits": int(noise.sum()),
        "noise_removed": int((noise & ~kept_raw).sum()),
        "kept": int(kept_raw.sum()),
        "invented": int((kept & ~raw).sum()),
        "events": events,
    }


def add_counts(a, b):
    """Sum two count dictionaries from hit_counts."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in COUNT_KEYS}


def scores_from_counts(c):
    """Efficiency, rejection, purity, F1 and invented hits per event from summed counts.

    A ratio with nothing to count (no track hits, say) is NaN rather than a made-up number.
    """
    def ratio(num, den):
        return num / den if den else float("nan")

    eff = ratio(c["track_kept"], c["track_hits"])
    pur = ratio(c["track_kept"], c["kept"])
    # F1 = 2TP / (2TP + FP + FN): defined (0) even when nothing was kept.
    f1 = ratio(2 * c["track_kept"], c["track_hits"] + c["kept"])
    return {
        "efficiency": eff,
        "rejection": ratio(c["noise_removed"], c["noise_hits"]),
        "purity": pur,
        "f1": f1,
        "invented_per_event": ratio(c["invented"], c["events"]),
    }


def padded_hits(raw, truth, output):
    """(raw hits, truth hits, output's brightest channel) of padded (N, 128, 128, 3) images scaled to
    0..1 and a network output, on the detector cells only (the borders cropped away): the output is a
    hit at a threshold where brightest > threshold. Worked out once for a sweep of thresholds."""
    raw, truth, output = (crop_event(np.asarray(a)) for a in (raw, truth, output))
    return hit_mask(raw, SCALED_HIT_THRESHOLD), hit_mask(truth, SCALED_HIT_THRESHOLD), output.max(axis=-1)


def counts_from_padded(raw, truth, output, threshold):
    """hit_counts of padded images and a network output at one threshold (padded_hits)."""
    raw_hits, truth_hits, brightest = padded_hits(raw, truth, output)
    return hit_counts(raw_hits, truth_hits, brightest > threshold)


def hit_scores(raw, truth, kept):
    """Scores of hit_counts(raw, truth, kept) in one call."""
    return scores_from_counts(hit_counts(raw, truth, kept))


# --- Pictures a person can look at --------------------------------------------------------
# The event grid's colours for one method's decisions on the raw hits (removed noise hits stay black).
KEPT_TRACK_HIT, LOST_TRACK_HIT, KEPT_NOISE_HIT = (255, 255, 255), (230, 30, 30), (255, 190, 0)
DECISIONS_KEY = "track hit kept white, removed red; noise hit kept amber, removed black"  # the pictures' key


def decisions_image(raw, truth, kept):
    """(36, 112, 3) uint8 picture of one method's decisions on an event's raw hits: a track hit kept white,
    a track hit removed red, a noise hit kept amber (the hits a fake segment is made of), a noise hit
    removed black; raw, truth, kept: (36, 112) bool."""
    raw, truth, kept = (np.asarray(a, bool) for a in (raw, truth, kept))
    image = np.zeros(raw.shape + (3,), np.uint8)
    image[raw & truth & kept] = KEPT_TRACK_HIT
    image[raw & truth & ~kept] = LOST_TRACK_HIT
    image[raw & ~truth & kept] = KEPT_NOISE_HIT
    return image


def save_event_grid(path, columns, row_labels=None, title=None):
    """Write a PNG grid of event images, one event per row, enlarged for the eye.

    columns: {column title: list of (36, 112, 3) images or (36, 112) masks}, all lists of
    the same length. Regions are separated by thin lines so that superlayers are easy to find.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(columns)
    rows = len(columns[names[0]])
    fig, axes = plt.subplots(rows, len(names), figsize=(3.4 * len(names), 1.35 * rows + 0.6), squeeze=False)
    for c, name in enumerate(names):
        for r, img in enumerate(columns[name]):
            img = np.asarray(img)
            if img.ndim == 2:
                img = mask_to_image(img)
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest", aspect="auto")
            for boundary in (LAYERS_PER_REGION - 0.5, 2 * LAYERS_PER_REGION - 0.5):
                ax.axhline(boundary, color="tab:blue", lw=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
