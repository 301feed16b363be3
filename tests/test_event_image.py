"""The 128x128 layout, hit masks, PNG checks and hit-level scores of event_image."""

import numpy as np
import pytest
from PIL import Image

import event_image as ei
import make_events
from script_utils import InputError


def test_layout_constants_add_up():
    assert ei.REGION_ROWS == (44, 58, 72)
    assert len(ei.LAYER_ROWS) == 36 and ei.LAYER_ROWS[0] == 44 and ei.LAYER_ROWS[-1] == 83
    assert ei.event_region_mask().sum() == 36 * 112


def test_round_trip_many_images_edge_pixels_included():
    rng = np.random.default_rng(1)
    events = rng.integers(0, 256, size=(200, 36, 112, 3), dtype=np.uint8)
    events[0] = 255  # every pixel lit, edges included
    padded = ei.pad_event(events)
    assert padded.shape == (200, 128, 128, 3) and padded.dtype == np.uint8
    np.testing.assert_array_equal(ei.crop_event(padded), events)
    # Nothing outside the detector cells, and the regions land where the layout says.
    assert not padded[:, ~ei.event_region_mask()].any()
    np.testing.assert_array_equal(padded[:, 44, 8:120], events[:, 0])
    np.testing.assert_array_equal(padded[:, 55, 8:120], events[:, 11])
    np.testing.assert_array_equal(padded[:, 58, 8:120], events[:, 12])
    np.testing.assert_array_equal(padded[:, 83, 119], events[:, 35, 111])
    assert not padded[:, 56:58].any() and not padded[:, 70:72].any()  # gaps between regions


def test_single_image_and_float_round_trip():
    img = np.random.default_rng(2).random((36, 112, 3)).astype(np.float32)
    np.testing.assert_array_equal(ei.crop_event(ei.pad_event(img)), img)
    with pytest.raises(ValueError):
        ei.pad_event(np.zeros((112, 36, 3)))


def test_hit_mask_any_channel_above_threshold():
    img = np.zeros((36, 112, 3), np.uint8)
    img[0, 0] = (128, 0, 0)
    img[1, 1] = (0, 0, 200)
    img[2, 2] = (127, 127, 127)  # not above the threshold
    mask = ei.hit_mask(img)
    assert mask[0, 0] and mask[1, 1] and not mask[2, 2] and mask.sum() == 2
    assert ei.hit_mask(img, threshold=150).sum() == 1


def test_hit_mask_matches_plain_definition_on_random_batches():
    images = np.random.default_rng(3).integers(0, 256, size=(5, 36, 112, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ei.hit_mask(images), np.any(images > 127, axis=-1))
    floats = images / 255.0
    np.testing.assert_array_equal(ei.hit_mask(floats, ei.SCALED_HIT_THRESHOLD), np.any(images > 127, axis=-1))


def test_atomic_output_gives_a_normal_file_mode_and_leaves_nothing_on_failure(tmp_path):
    import os
    import stat

    from script_utils import atomic_output

    with atomic_output(tmp_path / "out.txt") as tmp:
        tmp.write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "b.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with pytest.raises(InputError, match="already exists"), atomic_output(tmp_path / "out.txt"):
        pass


def test_png_round_trip_and_conversions(tmp_path):
    img = np.zeros((36, 112, 3), np.uint8)
    img[5, 7] = 255
    ei.write_event_png(tmp_path / "a.png", img)
    np.testing.assert_array_equal(ei.read_event_png(tmp_path / "a.png"), img)
    Image.fromarray(img[..., 0], "L").save(tmp_path / "gray.png")
    np.testing.assert_array_equal(ei.read_event_png(tmp_path / "gray.png"), img)
    rgba = np.dstack([img, np.full((36, 112), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(ei.read_event_png(tmp_path / "opaque.png"), img)
    Image.fromarray(img).convert("P").save(tmp_path / "palette.png")
    np.testing.assert_array_equal(ei.read_event_png(tmp_path / "palette.png"), img)


def test_rgb_png_is_read_exactly_without_conversion(tmp_path):
    img = np.random.default_rng(4).integers(0, 256, (36, 112, 3), dtype=np.uint8)
    Image.fromarray(img, "RGB").save(tmp_path / "rgb.png")
    out = ei.read_event_png(tmp_path / "rgb.png")
    assert out.dtype == np.uint8 and out.shape == (36, 112, 3)
    np.testing.assert_array_equal(out, img)
    with Image.open(tmp_path / "rgb.png") as im:
        np.testing.assert_array_equal(out, np.asarray(im.convert("RGB")))


@pytest.mark.parametrize("kind, word", [
    ("transparent", "transparent"), ("size", "expected 112x36"), ("truncated", "not a readable"),
    ("empty", "not a readable"), ("jpeg", "not a PNG"), ("16bit", "bits"), ("missing", "not found"),
])
def test_bad_pngs_raise_input_error(tmp_path, kind, word):
    path = tmp_path / "bad.png"
    img = np.zeros((36, 112, 3), np.uint8)
    if kind == "transparent":
        Image.fromarray(np.zeros((36, 112, 4), np.uint8), "RGBA").save(path)
    elif kind == "size":
        Image.fromarray(np.zeros((112, 36, 3), np.uint8)).save(path)
    elif kind == "truncated":
        ei.write_event_png(path, np.random.default_rng(0).integers(0, 255, (36, 112, 3), dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "jpeg":
        Image.fromarray(img).save(path, format="JPEG")
    elif kind == "16bit":
        Image.fromarray(np.zeros((36, 112), np.uint16)).save(path)
    with pytest.raises(InputError, match=word) as info:
        ei.read_event_png(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_scores_on_known_events():
    raw = np.zeros((2, 36, 112), bool)
    truth = np.zeros_like(raw)
    raw[:, 3, 10:20] = True  # 10 hits per event
    truth[:, 3, 10:16] = True  # 6 track hits, 4 noise hits per event
    perfect = ei.hit_scores(raw, truth, truth)
    assert perfect["efficiency"] == 1 and perfect["rejection"] == 1 and perfect["purity"] == 1
    assert perfect["f1"] == 1 and perfect["invented_per_event"] == 0
    empty = ei.hit_scores(raw, truth, np.zeros_like(raw))
    assert empty["efficiency"] == 0 and empty["rejection"] == 1 and empty["f1"] == 0
    keep_all = ei.hit_scores(raw, truth, raw)
    assert keep_all["efficiency"] == 1 and keep_all["rejection"] == 0 and keep_all["purity"] == 0.6
    kept = truth.copy()
    kept[:, 3, 10] = False  # lose one track hit per event
    kept[:, 30, 50] = True  # invent one hit per event (not counted as kept)
    c = ei.hit_counts(raw, truth, kept)
    assert c["events"] == 2 and c["invented"] == 2 and c["kept"] == 10
    s = ei.scores_from_counts(c)
    assert s["efficiency"] == pytest.approx(10 / 12) and s["invented_per_event"] == 1
    total = ei.add_counts(c, c)
    assert total["track_hits"] == 24 and total["events"] == 4


def test_counts_from_padded_crops_and_thresholds():
    raw = np.zeros((1, 36, 112, 3), np.float32)
    raw[0, 0, 0] = 1.0
    raw[0, 35, 111] = 128 / 255
    truth = raw.copy()
    truth[0, 35, 111] = 0
    out = ei.pad_event(truth * 0.7)
    out[0, 0, 0] = 0.9  # a lit border pixel is not judged
    c = ei.counts_from_padded(ei.pad_event(raw), ei.pad_event(truth), out, threshold=0.6)
    assert c["track_hits"] == 1 and c["track_kept"] == 1 and c["noise_removed"] == 1 and c["invented"] == 0
    assert ei.counts_from_padded(ei.pad_event(raw), ei.pad_event(truth), out, threshold=0.8)["track_kept"] == 0


def test_event_grid_is_written(tmp_path):
    img = np.zeros((36, 112, 3), np.uint8)
    img[10, 20] = 255
    ei.save_event_grid(tmp_path / "g.png", {"raw": [img, img], "mask": [img[..., 0] > 0] * 2}, row_labels=["a", "b"])
    with Image.open(tmp_path / "g.png") as im:
        assert im.size[0] > 300 and im.size[1] > 150


def write_raw_png(path, rows, depth, color_type):
    """A PNG written byte by byte (Pillow cannot write 16-bit RGB): rows of already packed pixel bytes."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 112, 36, depth, color_type, 0, 0, 0)
    data = zlib.compress(b"".join(b"\0" + r for r in rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.mark.parametrize("color_type, channels", [(2, 3), (6, 4), (0, 1), (4, 2)])
def test_16_bit_pngs_are_refused_not_read_as_their_high_byte(tmp_path, color_type, channels):
    """Pillow opens a 16-bit RGB PNG as 8-bit RGB of the high bytes: hits stored as 0/255 would vanish."""
    image = np.zeros((36, 112, channels), np.uint16)
    image[..., -1] = 65535 if color_type in (4, 6) else 0  # opaque where there is alpha
    image[5, 10, 0] = 255
    path = tmp_path / "deep.png"
    write_raw_png(path, [image[r].astype(">u2").tobytes() for r in range(36)], 16, color_type)
    with pytest.raises(InputError, match="16-bit"):
        ei.read_event_png(path)


def test_an_animated_png_is_refused_not_read_as_its_first_frame(tmp_path):
    """An APNG of two events (Pillow reads frame 1 unless asked) is one line's error, not half the events."""
    frames = [np.zeros((36, 112, 3), np.uint8) for _ in range(2)]
    frames[0][5, 10] = frames[1][20, 60] = 255
    path = tmp_path / "two.png"
    images = [Image.fromarray(f, "RGB") for f in frames]
    images[0].save(path, format="PNG", save_all=True, append_images=images[1:])
    with pytest.raises(InputError, match="animated PNG of 2 frames"):
        ei.read_event_png(path)
    images[0].save(path, format="PNG")  # the first frame alone reads
    assert np.argwhere(ei.hit_mask(ei.read_event_png(path))).tolist() == [[5, 10]]


def test_low_bit_depth_grayscale_is_scaled_to_full_hits(tmp_path):
    """A 4-bit grayscale PNG whose hits are 15 (its full scale) reads as hits of 255, not as dim pixels."""
    values = np.zeros((36, 112), np.uint8)
    values[5, 10] = 15
    path = tmp_path / "gray4.png"
    write_raw_png(path, [bytes(values[r, 0::2] << 4 | values[r, 1::2]) for r in range(36)], 4, 0)
    assert np.argwhere(ei.hit_mask(ei.read_event_png(path))).tolist() == [[5, 10]]


def test_decisions_image_colours_each_hit_by_what_the_method_did():
    """A track of 36 hits and 3 noise hits; the method removes one track hit and keeps one noise hit."""
    raw = np.zeros((36, 112), bool)
    truth = np.zeros_like(raw)
    raw[:, 50] = truth[:, 50] = True
    raw[5, 10] = raw[6, 11] = raw[7, 90] = True
    kept = raw.copy()
    kept[3, 50] = False  # a lost track hit
    kept[5, 10] = kept[7, 90] = False  # two noise hits removed, (6, 11) kept
    image = ei.decisions_image(raw, truth, kept)
    colour = {tuple(c) for c in image.reshape(-1, 3)}
    assert colour == {(0, 0, 0), ei.KEPT_TRACK_HIT, ei.LOST_TRACK_HIT, ei.KEPT_NOISE_HIT}
    assert tuple(image[3, 50]) == ei.LOST_TRACK_HIT and tuple(image[4, 50]) == ei.KEPT_TRACK_HIT
    assert tuple(image[6, 11]) == ei.KEPT_NOISE_HIT
    assert tuple(image[5, 10]) == tuple(image[7, 90]) == tuple(image[20, 20]) == (0, 0, 0)


def test_mirror_wire_is_the_wire_of_the_mirrored_position_in_every_layer():
    """A hit at position x across the layer (wire units, the staggered layers' cells half a cell over, as
    make_events draws them) mirrored to 111 - x lands on MIRROR_WIRE's wire, in every layer."""
    rng = np.random.default_rng(4)
    x = rng.uniform(0.6, 110.4, (500, ei.LAYERS))
    wire = lambda pos: np.rint(pos - ei.STAGGER).astype(int)  # noqa: E731
    layers = np.broadcast_to(np.arange(ei.LAYERS), x.shape)
    assert np.array_equal(ei.MIRROR_WIRE[layers, wire(x)], wire(ei.WIRES - 1 - x))
    assert (ei.MIRROR_WIRE[0::2, -1] == -1).all() and (ei.MIRROR_WIRE >= -1).all()
    assert sorted(ei.MIRROR_WIRE[1]) == list(range(ei.WIRES)) and sorted(ei.MIRROR_WIRE[0])[1:] == list(range(111))


def test_the_stagger_is_coatjavas_a_straight_track_zig_zags_as_in_clas12():
    """coatjava's DC geometry: wire w of layer l (1-6) at w - 1 + (l % 2) / 2 cells, so layers 1, 3, 5 (rows 0,
    2, 4) sit half a cell towards higher wires, and a track (less than half a cell a layer) steps by 0 or +1
    from such a layer to the next and by 0 or -1 from the next to the one after: make_events' tracks do."""
    assert list(ei.STAGGER[:6]) == [0.5, 0, 0.5, 0, 0.5, 0] and list(ei.STAGGER[6:12]) == list(ei.STAGGER[:6])
    _, _, ids = make_events.generate_masks(300, seed=6, luminosity=0, track_ids=True)
    steps = {}
    for event, k in zip(*np.nonzero([[(e == k).any() for k in range(1, 4)] for e in ids]), strict=True):
        rows, wires = np.nonzero(ids[event] == k + 1)  # one track's hits
        one = {r: w[0] for r in range(ei.LAYERS) if len(w := wires[rows == r]) == 1}
        for r in range(ei.LAYERS - 1):
            if r in one and r + 1 in one and r % 6 != 5:  # within a superlayer
                steps.setdefault(r % 2, set()).add(int(one[r + 1] - one[r]))
    assert steps[0] == {0, 1} and steps[1] == {-1, 0}
