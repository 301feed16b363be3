"""baselines.py: SNR on hand-made events with known answers and against a plain-loop reference;
the CLAS12 auto-encoder's shape, training, caching and thresholding on tiny real HDF5 files; the script."""

import warnings

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error

import baselines as bl
import event_image as ei
from script_utils import InputError

SCRIPT = "baselines.py"


# --- Hand-made events ----------------------------------------------------------------------
def event(*tracks):
    """A (36, 112) hit mask from (first layer, wires) pairs: wires[k] is lit in layer first + k."""
    m = np.zeros((ei.LAYERS, ei.WIRES), bool)
    for first, wires in tracks:
        for k, w in enumerate(wires):
            if w is not None:
                m[first + k, w] = True
    return m


# --- SNR ------------------------------------------------------------------------------------
@pytest.mark.parametrize("wires", [
    (50, 51, 50, 51, 50, 51),  # straight (perpendicular) track: zig-zag between two wires
    (50, 50, 51, 51, 52, 53),  # slightly slanted, wire number rising
    (60, 60, 59, 59, 58, 57),  # slightly slanted, wire number falling
    (70, 69, 70, 69, 70, 69),  # straight, zig-zag to the other side
    (30, 31, 31, 32, 33, 34),  # rising at the largest slope the buckets allow
])
def test_snr_keeps_a_clean_track_whole_in_every_superlayer(wires):
    for sl in range(6):
        raw = event((6 * sl, wires))
        np.testing.assert_array_equal(bl.snr_keep(raw), raw)


def test_snr_removes_isolated_hits_and_keeps_the_track_beside_them():
    track = event((12, (40, 41, 40, 41, 40, 41)))
    noise = event((0, (5,)), (3, (100,)), (8, (60,)), (14, (90,)), (20, (10,)), (27, (70,)), (35, (111,)),
                  (30, (0,)))
    kept = bl.snr_keep(track | noise)
    np.testing.assert_array_equal(kept, track)


def test_snr_missing_layers_two_allowed_three_not():
    full = (50, 51, 51, 52, 53, 53)
    two_missing = event((6, (50, None, 51, None, 53, 53)))
    np.testing.assert_array_equal(bl.snr_keep(two_missing), two_missing)
    first_two_missing = event((6, (None, None, 51, 52, 53, 53)))  # the first layer may miss too
    np.testing.assert_array_equal(bl.snr_keep(first_two_missing), first_two_missing)
    three_missing = event((6, (50, None, None, None, 53, 53)))
    assert not bl.snr_keep(three_missing).any()
    # The allowance is a setting.
    np.testing.assert_array_equal(bl.snr_keep(three_missing, max_missing=3), three_missing)
    assert not bl.snr_keep(event((6, full)), max_missing=-1).any()


def test_snr_works_at_both_edges_of_the_chamber():
    for wires in [(0, 1, 0, 1, 0, 1), (0, 0, 1, 1, 2, 2), (1, 0, 1, 0, 1, 0),
                  (111, 110, 111, 110, 111, 110), (111, 111, 110, 110, 109, 109), (110, 111, 110, 111, 110, 111)]:
        raw = event((24, wires))
        np.testing.assert_array_equal(bl.snr_keep(raw), raw, err_msg=str(wires))
    # A track entering from beyond the edge: its first layer is off the chamber (one missing layer).
    entering = event((24, (None, 0, 0, 1, 1, 2)))
    np.testing.assert_array_equal(bl.snr_keep(entering), entering)
    entering = event((24, (None, 111, 111, 110, 110, 109)))
    np.testing.assert_array_equal(bl.snr_keep(entering), entering)


def test_snr_removes_steep_segments_and_does_not_mix_superlayers():
    steep = event((0, (10, 13, 16, 19, 22, 25)))  # a low-energy particle crossing at a steep angle
    assert not bl.snr_keep(steep).any()
    # Three hits in the last layers of superlayer 1 and three in the first of superlayer 2 line up
    # in the image, but each superlayer alone has 3 missing layers.
    split = event((3, (50, 50, 51, 51, 52, 52)))
    assert not bl.snr_keep(split).any()


def test_snr_shifts_set_the_bucket_widths():
    zigzag = event((0, (50, 51, 50, 51, 50, 51)))
    vertical = event((0, (50,) * 6))
    flat = (0, 0, 0, 0, 0, 0)
    assert not bl.snr_keep(zigzag, shifts=flat).any()  # three layers off by one: too many misses
    np.testing.assert_array_equal(bl.snr_keep(vertical, shifts=flat), vertical)
    with pytest.raises(ValueError):
        bl.snr_keep(vertical, shifts=(0, 1, 2))


# Answers worked out by hand from SNR's definition (README): in each superlayer a candidate segment starts
# at wire s of its first layer; layer i's bucket is s..s+shift_i (rising: the wire grows with the layer)
# or s-shift_i..s (falling); a candidate survives when at most max_missing buckets hold no hit, and the
# hits in a surviving candidate's buckets are kept. Shifts (0, 1, 2, 2, 4, 4).
SHIFTS = bl.SNR_SHIFTS


@pytest.mark.parametrize("direction", [+1, -1])
@pytest.mark.parametrize("layer", range(1, 6))
def test_snr_each_bucket_width_by_hand(direction, layer):
    """max_missing 0 and layer 1's hit at 50 pin the one candidate to s = 50. Hits at s +- shift_i (the far
    edge of every bucket) are all kept; moving one layer's hit a wire further (shift + 1) leaves that
    bucket empty: the only candidate dies and nothing is kept, in either leaning direction."""
    edge = [50 + direction * w for w in SHIFTS]
    raw = event((18, edge))
    np.testing.assert_array_equal(bl.snr_keep(raw, max_missing=0), raw)
    beyond = list(edge)
    beyond[layer] += direction
    assert not bl.snr_keep(event((18, beyond)), max_missing=0).any()
    # One missing layer allowed: the candidate at s = 50 + direction misses only layer 1's bucket (wire s), and
    # every other layer's hit, 50 + direction * shift_i (+ direction for the moved one), lies in its bucket
    # s..s+shift_i (falling: s-shift_i..s): the whole segment is kept, the moved hit included.
    np.testing.assert_array_equal(bl.snr_keep(event((18, beyond)), max_missing=1), event((18, beyond)))


@pytest.mark.parametrize("missing", [(), (5,), (0,), (0, 5), (2, 3), (1, 2, 3), (0, 4, 5)])
def test_snr_missing_layers_by_hand(missing):
    """A straight track at wire 50 (all buckets of s = 50 hold it) with 0..3 layers emptied: kept whole while
    at most 2 layers miss; with 3 missing, every candidate misses at least 3 buckets: nothing kept."""
    raw = event((30, [None if i in missing else 50 for i in range(6)]))
    kept = bl.snr_keep(raw)
    if len(missing) <= 2:
        np.testing.assert_array_equal(kept, raw)
    else:
        assert not kept.any()


def test_snr_noise_beside_a_track_by_hand():
    """Beside a straight track at wire 50: a hit in layer 6 at 54 lies in s = 50's rising bucket 50..54 and is
    kept; at 55 no surviving candidate's bucket reaches it (rising ones starting at 51..55 miss layers 1-3,
    falling ones reach at most wire s <= 52 there), so it is dropped. Layer 2 (bucket 50..51): 51 kept."""
    track = event((0, (50,) * 6))
    for layer, wire, kept in [(5, 54, True), (5, 55, False), (1, 51, True), (5, 46, True), (5, 45, False)]:
        noise = event((layer, (wire,)))
        np.testing.assert_array_equal(bl.snr_keep(track | noise), track | (noise if kept else False),
                                      err_msg=f"layer {layer + 1} wire {wire}")


def test_snr_a_segment_leaving_the_chamber_by_hand():
    """Rising from wire 109 at the widest slope: layers 5 and 6 (113) are off the chamber, two missing layers:
    the four hits inside are kept; allowing only one missing layer, no candidate survives."""
    raw = event((6, (109, 110, 111, 111, None, None)))
    np.testing.assert_array_equal(bl.snr_keep(raw), raw)
    assert not bl.snr_keep(raw, max_missing=1).any()
    np.testing.assert_array_equal(bl.snr_keep(raw), bl.snr_keep_plain(raw))


def test_snr_single_and_batch_agree_and_match_the_plain_reference():
    rng = np.random.default_rng(5)
    raw = rng.random((12, 36, 112)) < np.repeat([0.01, 0.04, 0.12], 4)[:, None, None]
    raw[0] |= event((0, (50, 51, 51, 52, 53, 53)), (18, (20, 20, 19, 19, 18, 17)))
    kept = bl.snr_keep(raw)
    assert kept.shape == raw.shape and kept.dtype == bool
    assert not (kept & ~raw).any()
    for i in range(len(raw)):
        np.testing.assert_array_equal(bl.snr_keep(raw[i]), kept[i])
        np.testing.assert_array_equal(kept[i], bl.snr_keep_plain(raw[i]), err_msg=f"event {i}")
    assert 0 < kept.sum() < raw.sum()
    with pytest.raises(ValueError):
        bl.snr_keep(np.zeros((112, 36), bool))


def test_snr_on_synthetic_events_keeps_tracks_and_removes_most_noise():
    import make_events

    raw, truth = make_events.generate_masks(300, seed=11)
    s = ei.hit_scores(raw, truth, bl.snr_keep(raw))
    assert s["efficiency"] > 0.98 and s["rejection"] > 0.6, s
    assert s["invented_per_event"] == 0


# --- Tiny HDF5 files -------------------------------------------------------------------------
def toy_masks(n, seed):
    """(raw, truth) bool (n, 36, 112): one gently slanted track over all layers plus random noise hits."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 36, 112), bool)
    for i in range(n):
        start, slope = rng.uniform(20, 90), rng.uniform(-0.4, 0.4)
        wires = np.round(start + slope * np.arange(36) + 0.5 * (np.arange(36) % 2)).astype(int)
        truth[i, np.arange(36), np.clip(wires, 0, 111)] = True
    raw = truth | (rng.random(truth.shape) < 0.03)
    return raw, truth


def write_h5(path, raw, truth):
    """A project HDF5 file: raw and truth uint8 (N, 128, 128, 3) in the 128x128 layout."""
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=ei.pad_event(ei.mask_to_image(raw)), chunks=(8, 128, 128, 3))
        f.create_dataset("truth", data=ei.pad_event(ei.mask_to_image(truth)), chunks=(8, 128, 128, 3))
    return path


@pytest.fixture(scope="module")
def tiny_h5(tmp_path_factory):
    """40 toy events: 22 train, 8 validation, 10 test with data_management's split."""
    return write_h5(tmp_path_factory.mktemp("tiny") / "tiny.h5", *toy_masks(40, seed=1))


@pytest.fixture(scope="module")
def trained(tiny_h5):
    """A CAE trained for 4 epochs on the tiny file (shared: TensorFlow's first step is the slow part)."""
    return bl.train_cae(tiny_h5, epochs=4, batch_size=8)


def test_read_masks_gives_back_the_event_masks(tmp_path):
    raw, truth = toy_masks(30, seed=2)
    path = write_h5(tmp_path / "t.h5", raw, truth)
    idx = np.array([0, 3, 4, 17, 29])
    old_chunk, bl.READ_CHUNK = bl.READ_CHUNK, 4  # several blocks, some holding no wanted event
    try:
        r, t = bl.read_masks(path, idx)
    finally:
        bl.READ_CHUNK = old_chunk
    np.testing.assert_array_equal(r, raw[idx])
    np.testing.assert_array_equal(t, truth[idx])


# --- The auto-encoder --------------------------------------------------------------------------
def test_cae_architecture_follows_the_recipe():
    import keras

    model = bl.build_cae()
    assert model.input_shape == (None, 36, 112, 1) and model.output_shape == (None, 36, 112, 1)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    hidden = convs[:-1]
    assert len(hidden) == 8 and all(c.filters == 54 and c.kernel_size == (4, 3) for c in hidden)
    assert convs[-1].filters == 1 and convs[-1].activation.__name__ == "sigmoid"
    pools = [layer.pool_size for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    ups = [layer.size for layer in model.layers if isinstance(layer, keras.layers.UpSampling2D)]
    assert pools == [(2, 2), (3, 2)] and ups == [(3, 2), (2, 2)]
    assert isinstance(model.optimizer, keras.optimizers.Nadam)
    out = model.predict(np.zeros((2, 36, 112, 1), np.float32), verbose=0)
    assert out.shape == (2, 36, 112, 1) and ((out >= 0) & (out <= 1)).all()


def test_train_cae_on_a_tiny_file_loss_falls(trained):
    loss = trained.history.history["loss"]
    assert len(loss) == 4 and loss[-1] < 0.5 * loss[0], loss
    assert len(trained.history.history["val_loss"]) == 4


def test_get_cae_caches_reloads_and_retrains_when_the_file_changes(tmp_path, monkeypatch):
    h5 = write_h5(tmp_path / "ev.h5", *toy_masks(24, seed=3))
    assert bl.cae_cache_path(h5).parent == tmp_path  # the default cache folder: beside the file
    cache = tmp_path / "cache"
    cache.mkdir()
    model = bl.get_cae(h5, cae_cache=cache, epochs=1, max_train_pairs=8)
    cached = sorted(cache.glob("*"))
    assert len(cached) == 1 and cached == [bl.cae_cache_path(h5, cache, epochs=1, max_train_pairs=8)]
    assert cached[0].name.startswith("ev.cae-") and cached[0].suffix == ".keras"  # no temporary left behind
    raw, _ = bl.read_masks(h5, np.arange(5))
    before = model.predict(raw[..., None].astype(np.float32), verbose=0)

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although a cached model exists")

    monkeypatch.setattr(bl, "train_cae", no_training)
    again = bl.get_cae(h5, cae_cache=cache, epochs=1, max_train_pairs=8)
    np.testing.assert_allclose(again.predict(raw[..., None].astype(np.float32), verbose=0), before, atol=1e-6)
    # Other settings, another folder or a changed file (same N) are other cache entries.
    with pytest.raises(AssertionError, match="retrained"):
        bl.get_cae(h5, cae_cache=cache, epochs=2, max_train_pairs=8)
    with pytest.raises(AssertionError, match="retrained"):
        bl.get_cae(h5, epochs=1, max_train_pairs=8)
    with pytest.raises(InputError, match="no trained CAE"):
        bl.get_cae(h5, cae_cache=cache, train_if_missing=False, epochs=3)
    write_h5(h5, *toy_masks(24, seed=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # data_management says the split was replaced
        with pytest.raises(AssertionError, match="retrained"):
            bl.get_cae(h5, cae_cache=cache, epochs=1, max_train_pairs=8)
    assert sorted(cache.glob("*")) == cached  # the old entry is left alone
    # A damaged cache file is reported, not silently retrained over.
    write_h5(h5, *toy_masks(24, seed=3))
    whole = cached[0].read_bytes()
    for damaged in (b"garbage", whole[:len(whole) // 2], whole[:-100]):  # cut short: Keras said "File not found"
        cached[0].write_bytes(damaged)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(InputError, match="unreadable CAE cache file") as err:
                bl.get_cae(h5, cae_cache=cache, epochs=1, max_train_pairs=8)
        assert "not found" not in str(err.value).lower() and "\n" not in str(err.value)


def test_cae_keep_thresholds_the_output_in_batches(trained, tiny_h5):
    raw, _ = bl.read_masks(tiny_h5, np.arange(7))
    prob = trained.predict(raw[..., None].astype(np.float32), verbose=0)[..., 0]
    mid = float(np.median(prob))
    for threshold in (0.5, mid):
        kept = bl.cae_keep(trained, raw, threshold=threshold, batch_size=3)
        assert kept.shape == (7, 36, 112) and kept.dtype == bool
        np.testing.assert_array_equal(kept, prob > threshold)
    assert 0 < bl.cae_keep(trained, raw, threshold=mid).sum() < raw.size
    np.testing.assert_array_equal(bl.cae_keep(trained, raw[2], threshold=mid), prob[2] > mid)
    with pytest.raises(ValueError):
        bl.cae_keep(trained, np.zeros((3, 112, 36), bool))


# --- The script --------------------------------------------------------------------------------
@pytest.mark.slow  # a fresh process that imports TensorFlow and trains: ~20 s, more on a busy machine
def test_script_scores_snr_and_a_tiny_cae(tiny_h5, script, tmp_path):
    (tmp_path / "cache").mkdir()
    proc = script(SCRIPT, "--data", tiny_h5, "--cae-epochs", "1", "--cae-max-train-pairs", "8", "--cae-cache",
                  tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "10 test events" in lines[0]
    scores = [line for line in lines if line.startswith(("SNR", "CAE"))]
    assert [line[:3] for line in scores] == ["SNR", "CAE"]
    assert all("efficiency" in line and "rejection" in line for line in scores)
    assert len(list((tmp_path / "cache").glob("*.keras"))) == 1
    # --no-train with another recipe: nothing cached, so a one-line error.
    proc = script(SCRIPT, "--data", tiny_h5, "--methods", "cae", "--cae-epochs", "2", "--no-train", "--cae-cache",
                  tmp_path / "cache")
    assert_one_line_error(proc, "tiny.h5", "no trained CAE")


def test_a_method_named_twice_is_scored_once(tmp_path, capsys):
    good = write_h5(tmp_path / "good.h5", *toy_masks(12, seed=0))
    assert bl.main(["--data", str(good), "--methods", "snr", "snr"]) == 0
    assert [line[:3] for line in capsys.readouterr().out.splitlines() if line.startswith("SNR")] == ["SNR"]


def test_script_bad_inputs_are_one_line_errors(tmp_path, script):
    assert_one_line_error(script(SCRIPT, "--data", tmp_path / "missing.h5"), "missing.h5", "not found")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    assert_one_line_error(script(SCRIPT, bad), "bad.h5", "HDF5")  # the old positional
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f.create_dataset("raw", data=np.zeros((10, 36, 112, 3), np.uint8))
        f.create_dataset("truth", data=np.zeros((10, 36, 112, 3), np.uint8))
    assert_one_line_error(script(SCRIPT, "--data", wrong), "wrong.h5", "shape")
    # Bad settings, checked in this process (the same InputError path).
    good = write_h5(tmp_path / "good.h5", *toy_masks(12, seed=0))
    (tmp_path / "a_file").write_text("a regular file")
    for args, words in [(["--max-events", "0"], "max-events"), (["--cae-cache", str(tmp_path / "nowhere")], "nowhere"),
                        (["--cae-cache", str(tmp_path / "a_file")], "a_file: CAE cache folder is a file"),
                        (["--data", ""], "empty"), (["--cae-cache", str(good)], "is a file"),
                        (["--cae-threshold", "1.5"], "threshold"), (["--snr-max-missing", "7"], "missing")]:
        with pytest.raises(InputError, match=words):
            bl.main(["--data", str(good), *args])
