"""The split and the tf.data pipelines of data_management, on small real HDF5 files."""

import os
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error

import data_management as dm
import event_image as ei
import pairs_h5
from event_image import PNG_HIT_THRESHOLD, crop_event, hit_mask
from script_utils import InputError

SHAPE = (128, 128, 3)
ID_BITS = 16  # write_pairs numbers its pairs in binary in the first 16 pixels of row 0


def write_pairs(path, n, chunk=8, seed=0, names=True, **overrides):
    """A file like Pix2Pix_data.py writes: sparse raw/truth, chunked and compressed, plus names.

    Pixels (0, 0..15) of both images hold the pair's index in binary (a hit for a set bit), so that a
    test can tell which pair a batch row came from.
    """
    rng = np.random.default_rng(seed)
    raw = (rng.random((n, 128, 128, 1)) < 0.004).repeat(3, axis=-1).astype(np.uint8) * 255
    truth = raw & ((rng.random((n, 128, 128, 1)) < 0.5).repeat(3, axis=-1).astype(np.uint8) * 255)
    bits = (np.arange(n)[:, None] >> np.arange(ID_BITS)) & 1
    for a in (raw, truth):
        a[:, 0, :ID_BITS] = bits[..., None] * 255
    data = {"raw": raw, "truth": truth}
    data.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if value is None:
                continue
            value = np.asarray(value)
            chunks = (min(chunk, len(value)),) + value.shape[1:] if value.ndim == 4 and len(value) else None
            f.create_dataset(key, data=value, chunks=chunks, compression="gzip" if chunks else None)
        if names:
            f.create_dataset("names", data=np.array([f"event_{i:05d}" for i in range(n)], dtype=h5py.string_dtype()))
    return raw, truth


def pair_ids(batch):
    """The pair indices stored in pixels (0, 0..15) of a float batch of 0/1 hits."""
    bits = np.asarray(batch)[:, 0, :ID_BITS, 0] > 0.5
    return (bits << np.arange(ID_BITS)).sum(axis=1)


def collect(ds):
    """All batches of one pass: list of (raw ids, truth ids, batch size)."""
    out = []
    for raw, truth in ds:
        out.append((pair_ids(raw), pair_ids(truth), raw.shape[0]))
    return out


# --- The split ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 4, 5, 7, 10, 33, 101, 1000])
def test_split_sizes_cover_every_pair_once(n):
    split = dm.make_split(n, split_seed=5)
    sizes = tuple(len(split[s]) for s in dm.SPLITS)
    assert sizes == dm.split_sizes(n) and min(sizes) >= 1 and sum(sizes) == n
    assert np.array_equal(np.sort(np.concatenate([split[s] for s in dm.SPLITS])), np.arange(n))
    for s in dm.SPLITS:
        assert split[s].dtype == np.int64 and np.all(np.diff(split[s]) > 0)
    if n == 1000:  # 56.25 / 18.75 / 25 %, rounded as train_test_split rounds
        assert sizes == (562, 188, 250)


def test_split_is_a_random_sample_that_depends_on_the_seed():
    a, b, c = dm.make_split(400, split_seed=1), dm.make_split(400, split_seed=1), dm.make_split(400, split_seed=2)
    assert all(np.array_equal(a[s], b[s]) for s in dm.SPLITS)
    assert not np.array_equal(a["test"], c["test"])
    # Not the first or last quarter of the file: pairs from all over it.
    assert a["test"].min() < 40 and a["test"].max() > 360


@pytest.mark.parametrize("n", [3, 7, 22])
def test_load_split_on_a_file_saves_it_beside_the_file(tmp_path, n):
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, n)
    split = dm.load_split(h5, split_seed=3)
    assert dm.split_path(h5) == tmp_path / "pairs.split.npz" and dm.split_path(h5).exists()
    assert all(np.array_equal(split[s], dm.make_split(n, 3)[s]) for s in dm.SPLITS)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_same_split_across_processes(tmp_path, script):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_pairs(tmp_path / folder / "pairs.h5", 50, seed=7)
        proc = script("data_management.py", "--data", tmp_path / folder / "pairs.h5", "--split-seed", "11",
                      "--no-timing")
        assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "a" / "pairs.split.npz") as a, np.load(tmp_path / "b" / "pairs.split.npz") as b:
        for s in dm.SPLITS:
            assert np.array_equal(a[s], b[s])
        assert int(a["seed"]) == 11 and str(a["fingerprint"]) == str(b["fingerprint"])


def test_saved_split_is_reused_without_rewriting(tmp_path):
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 40)
    first = dm.load_split(h5)
    # A saved split is trusted as it is: replace its test part to prove it is read, not recomputed.
    with np.load(dm.split_path(h5)) as z:
        saved = {k: z[k] for k in z.files}
    saved["test"], saved["train"] = first["test"][:-1], np.sort(np.r_[first["train"], first["test"][-1]])
    with open(dm.split_path(h5), "wb") as out:
        np.savez(out, **saved)
    stamp = dm.split_path(h5).stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = dm.load_split(h5)
    assert np.array_equal(again["test"], first["test"][:-1])
    assert dm.split_path(h5).stat().st_mtime_ns == stamp


@pytest.mark.parametrize("change", ["more pairs", "other contents", "other names", "other seed", "other fraction",
                                    "damaged split file"])
def test_changed_file_or_settings_give_a_new_split_with_a_warning(tmp_path, change):
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 40)
    dm.load_split(h5)
    kwargs = {}
    if change == "more pairs":
        write_pairs(h5, 44)
    elif change == "other contents":
        write_pairs(h5, 40, seed=99)  # same N, same names, other events
    elif change == "other names":
        with h5py.File(h5, "a") as f:
            f["names"][3] = "renamed"
    elif change == "other seed":
        kwargs["split_seed"] = dm.SPLIT_SEED + 1
    elif change == "other fraction":
        kwargs["test_fraction"] = 0.3
    else:
        dm.split_path(h5).write_bytes(b"not a split")
    with pytest.warns(dm.SplitChangedWarning, match="replacing the saved split"):
        split = dm.load_split(h5, **kwargs)
    n = 44 if change == "more pairs" else 40
    assert sum(len(v) for v in split.values()) == n
    with np.load(dm.split_path(h5)) as z:  # the new split was saved and now matches
        assert int(z["n"]) == n and np.array_equal(z["test"], split["test"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.load_split(h5, **kwargs)


def test_a_changed_sampled_event_changes_the_fingerprint(tmp_path):
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 40)
    before = dm.fingerprint(h5)
    with h5py.File(h5, "a") as f:
        f["raw"][0, 50, 50] = 255 - f["raw"][0, 50, 50]  # event 0 is always sampled
    assert dm.fingerprint(h5) != before


# --- The datasets ---------------------------------------------------------------------------
def test_batches_are_float_0_to_1_equal_to_the_file_in_file_order(tmp_path):
    h5 = tmp_path / "pairs.h5"
    raw, truth = write_pairs(h5, 45)
    idx = dm.load_split(h5)["train"]
    for budget in (0, 1024):  # streaming and in memory
        ds = dm.make_dataset(h5, idx, batch_size=4, memory_budget_mb=budget)
        got_raw, got_truth = [], []
        for r, t in ds:
            assert r.dtype.name == "float32" and t.dtype.name == "float32"
            assert r.shape[1:] == SHAPE and r.shape == t.shape
            got_raw.append(r.numpy())
            got_truth.append(t.numpy())
        got_raw, got_truth = np.concatenate(got_raw), np.concatenate(got_truth)
        assert got_raw.min() >= 0.0 and got_raw.max() <= 1.0
        np.testing.assert_array_equal(got_raw, raw[idx] / np.float32(255))
        np.testing.assert_array_equal(got_truth, truth[idx] / np.float32(255))


def test_a_hit_of_any_colour_is_1_on_every_channel_and_a_dim_pixel_0(tmp_path):
    """Training sees what the denoiser feeds the model (0/1 hit maps), not the file's colours."""
    h5 = tmp_path / "pairs.h5"
    raw, truth = write_pairs(h5, 8, chunk=4)
    colours = {(5, 50): (255, 0, 0), (6, 60): (0, 128, 0), (7, 70): (200, 200, 200), (8, 80): (127, 127, 127),
               (9, 90): (100, 0, 30)}
    for (row, col), colour in colours.items():
        raw[:, row, col] = truth[:, row, col] = colour
    with h5py.File(h5, "r+") as f:
        f["raw"][:], f["truth"][:] = raw, truth
    for budget in (0, 1024):  # streaming and in memory
        r, t = next(iter(dm.make_dataset(h5, np.arange(8), batch_size=8, memory_budget_mb=budget)))
        for got in (r.numpy(), t.numpy()):
            np.testing.assert_array_equal(got[:, 5:8, [50, 60, 70]].diagonal(axis1=1, axis2=2), 1.0)
            assert not got[:, [8, 9], [80, 90]].any()  # 127 and below: no hit
            assert set(np.unique(got)) <= {0.0, 1.0}
    np.testing.assert_array_equal(ei.network_input(raw), r.numpy())


@pytest.mark.parametrize("drop", [False, True])
def test_batch_shapes_and_last_short_batch(tmp_path, drop):
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 60)
    idx = dm.load_split(h5)["train"]  # 33 pairs
    ds = dm.make_dataset(h5, idx, batch_size=8, shuffle=True, drop_remainder=drop)
    sizes = [b for _, _, b in collect(ds)]
    assert len(idx) == 33
    assert sizes == ([8] * 4 if drop else [8] * 4 + [1])
    assert len(ds) == len(sizes)
    assert ds.element_spec[0].shape.as_list() == [8 if drop else None, 128, 128, 3]


def test_every_pair_once_per_pass_reshuffled_each_pass(tmp_path):
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 150, chunk=6)
    idx = dm.load_split(h5)["train"]
    ds = dm.make_dataset(h5, idx, batch_size=7, shuffle=True, window=20, memory_budget_mb=0)
    orders = []
    for _ in range(3):
        batches = collect(ds)
        order = np.concatenate([r for r, _, _ in batches])
        assert all(np.array_equal(r, t) for r, t, _ in batches)  # raw and truth of the same pair
        assert np.array_equal(np.sort(order), idx) and len(order) == len(idx)
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    assert not np.array_equal(orders[0], idx)  # shuffled, not file order
    # A batch mixes pairs from several chunks of the file.
    first = collect(ds)[0][0]
    assert len(np.unique(first // 6)) > 2


def test_resumed_dataset_repeats_the_epoch_order_in_memory_or_streaming(tmp_path):
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 90, chunk=5)
    idx = dm.load_split(h5)["train"]
    fresh = dm.make_dataset(h5, idx, batch_size=6, shuffle=True, seed=4, window=12, memory_budget_mb=0)
    passes = [collect(fresh) for _ in range(3)]
    for budget in (0, 1024):
        resumed = dm.make_dataset(h5, idx, batch_size=6, shuffle=True, seed=4, epoch=2, window=12,
                                  memory_budget_mb=budget)
        again = collect(resumed)
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(again, passes[2], strict=True))
    other_seed = collect(dm.make_dataset(h5, idx, batch_size=6, shuffle=True, seed=5, window=12))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(other_seed, passes[0], strict=True))


def test_datasets_sharing_a_memory_read_the_file_once(tmp_path):
    """The training makes one dataset per epoch: with one memory dict they read the pairs once, in each
    epoch's own order (the file's pixels changed after the first read show which pass read it)."""
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 40, chunk=5)
    idx = dm.load_split(h5)["train"]
    memory = {}
    first = collect(dm.make_dataset(h5, idx, batch_size=4, shuffle=True, seed=3, epoch=0, memory=memory))
    with h5py.File(h5, "r+") as f:
        f["raw"][:, 0, :ID_BITS] = 0  # every pair's id gone from the file
    shared = collect(dm.make_dataset(h5, idx, batch_size=4, shuffle=True, seed=3, epoch=1, memory=memory))
    own = collect(dm.make_dataset(h5, idx, batch_size=4, shuffle=True, seed=3, epoch=1))
    assert all((r == 0).all() for r, _, _ in own)  # read from the file now: the ids are gone
    assert [list(r) for r, _, _ in shared] == [list(t) for _, t, _ in own]  # from memory: the ids, in epoch 1's order
    assert [list(r) for r, _, _ in shared] != [list(r) for r, _, _ in first]  # (not epoch 0's)


@pytest.mark.parametrize("drop", [False, True])
def test_batches_across_parts_smaller_and_larger_than_a_batch(drop):
    ids = np.arange(16)
    parts = [(ids[a:b], -ids[a:b]) for a, b in ((0, 3), (3, 5), (5, 15), (15, 16))]
    batches = list(pairs_h5._batches(parts, 4, drop))
    assert [len(r) for r, _ in batches] == [4] * 4
    assert np.array_equal(np.concatenate([r for r, _ in batches]), ids)
    assert all(np.array_equal(r, -t) for r, t in batches)
    short = list(pairs_h5._batches(parts[:3], 4, drop))  # 15 pairs: the last 3 are a short batch
    assert [len(r) for r, _ in short] == ([4] * 3 if drop else [4, 4, 4, 3])


def test_load_datasets_gives_the_three_splits(tmp_path):
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 70)
    split = dm.load_split(h5)
    train, validation, test = dm.load_datasets(h5, batch_size=16, drop_remainder=True)
    assert len(split["train"]) == 39 and len(train) == 2  # 39 // 16, the short batch dropped
    seen_train = np.concatenate([r for r, _, _ in collect(train)])
    assert len(seen_train) == 32 and set(seen_train) <= set(split["train"])
    for ds, name in ((validation, "validation"), (test, "test")):  # every pair, file order
        assert np.array_equal(np.concatenate([r for r, _, _ in collect(ds)]), split[name])


def test_drop_remainder_with_fewer_pairs_than_a_batch_is_refused(tmp_path):
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 10)
    with pytest.raises(InputError, match="fewer than one batch"):
        dm.load_datasets(h5, batch_size=32, drop_remainder=True)


def test_unchunked_uncompressed_file_reads_the_same(tmp_path):
    h5 = tmp_path / "pairs.h5"
    raw, _ = write_pairs(h5, 30)
    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as f:
        f["raw"], f["truth"] = raw, raw
    idx = dm.load_split(flat)["test"]
    got = np.concatenate([r for r, _, _ in collect(dm.make_dataset(flat, idx, batch_size=4, memory_budget_mb=0))])
    assert np.array_equal(got, idx)


# --- Run as a script ------------------------------------------------------------------------
def test_script_prints_the_summary(tmp_path, script):
    h5 = tmp_path / "pairs.h5"
    raw, truth = write_pairs(h5, 64)
    proc = script("data_management.py", "--data", h5, "--batch-size", "8")
    assert proc.returncode == 0, proc.stderr
    split = dm.load_split(h5)
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    for name in dm.SPLITS:
        idx = split[name]
        cols = lines[name]
        assert int(cols[1]) == len(idx) and int(cols[3]) == -(-len(idx) // 8)
        raw_hits = hit_mask(crop_event(raw[idx]), PNG_HIT_THRESHOLD).sum(axis=(1, 2)).mean()
        truth_hits = hit_mask(crop_event(truth[idx]), PNG_HIT_THRESHOLD).sum(axis=(1, 2)).mean()
        assert float(cols[4]) == pytest.approx(raw_hits, abs=0.05)
        assert float(cols[7]) == pytest.approx(truth_hits, abs=0.05)
    assert f"one epoch of the training pipeline (in memory after the first pass): {len(split['train'])} pairs" \
        in proc.stdout
    assert "saved to" in proc.stdout
    assert "reused from" in script("data_management.py", h5, "--no-timing").stdout  # the old positional
    # A damaged split file is replaced: one warning line (no Python source line), and "saved to", not "reused".
    dm.split_path(h5).write_bytes(b"not a split")
    proc = script("data_management.py", "--data", h5, "--no-timing")
    assert proc.returncode == 0 and "saved to" in proc.stdout and "reused from" not in proc.stdout
    assert [line.split(":")[0] for line in proc.stderr.splitlines() if line.strip()] == ["warning"], proc.stderr
    assert "replacing the saved split" in proc.stderr


def test_help_lists_the_settings(script):
    proc = script("data_management.py", "--help")
    assert proc.returncode == 0
    for flag in ("--data", "--batch-size", "--test-fraction", "--validation-fraction", "--split-seed",
                 "--memory-budget-mb"):
        assert flag in proc.stdout


# --- Bad input ------------------------------------------------------------------------------
def bad_file(tmp_path, kind):
    """Write one kind of bad input; return its path and words the error must contain."""
    h5 = tmp_path / "pairs.h5"
    if kind == "missing":
        return h5, ["not found"]
    if kind == "not hdf5":
        h5.write_text("hello")
        return h5, ["not a readable HDF5"]
    if kind == "no raw":
        write_pairs(h5, 10, raw=None)
        return h5, ["no 'raw' dataset"]
    if kind == "no truth":
        write_pairs(h5, 10, truth=None)
        return h5, ["no 'truth' dataset"]
    if kind == "lengths differ":
        write_pairs(h5, 10, truth=np.zeros((9,) + SHAPE, np.uint8), names=False)
        return h5, ["10 pairs", "truth", "9"]
    if kind == "wrong shape":
        write_pairs(h5, 10, raw=np.zeros((10, 36, 112, 3), np.uint8))
        return h5, ["shape", "(10, 36, 112, 3)"]
    if kind == "wrong dtype":
        write_pairs(h5, 10, truth=np.zeros((10,) + SHAPE, np.float32))
        return h5, ["dtype float32", "uint8"]
    if kind == "too few pairs":
        write_pairs(h5, 2)
        return h5, ["only 2 pairs", "at least 3"]
    if kind == "names length":
        write_pairs(h5, 10, names=False)
        with h5py.File(h5, "a") as f:
            f["names"] = np.array([b"a", b"b"])
        return h5, ["'names' has 2 entries"]
    raise AssertionError(kind)


BAD = ["missing", "not hdf5", "no raw", "no truth", "lengths differ", "wrong shape", "wrong dtype", "too few pairs",
       "names length"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_raises_input_error_when_imported(tmp_path, kind):
    h5, words = bad_file(tmp_path, kind)
    with pytest.raises(InputError) as err:
        dm.load_split(h5)
    for word in [str(h5), *words]:
        assert word in str(err.value)
    assert not dm.split_path(h5).exists()


@pytest.mark.parametrize("kind", ["missing", "no truth", "wrong dtype", "lengths differ", "too few pairs"])
def test_bad_input_is_one_line_exit_2_from_the_script(tmp_path, script, kind):
    h5, words = bad_file(tmp_path, kind)
    proc = script("data_management.py", "--data", h5)
    assert_one_line_error(proc, str(h5), *words)
    assert not dm.split_path(h5).exists()


@pytest.mark.parametrize("args", [["--test-fraction", "1.5"], ["--validation-fraction", "0"], ["--split-seed", "-1"],
                                  ["--test-fraction", "0.99999999"]])  # (counted the fewest pairs for minutes)
def test_bad_settings_are_one_line_exit_2(tmp_path, script, args):
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 10)
    assert_one_line_error(script("data_management.py", "--data", h5, *args), args[0].strip("-").split("-")[0])
    assert not dm.split_path(h5).exists()


@pytest.mark.parametrize("args", [[""], ["--data", ""], ["--data", " "]])
def test_an_empty_data_path_is_one_line(script, args):
    """Was a traceback (ValueError: PosixPath('.') has an empty name) from the old positional and --data."""
    assert_one_line_error(script("data_management.py", *args, "--no-timing"), "--data", "empty")


@pytest.mark.parametrize("data", ["other.h5", dm.DATA])
def test_the_old_positional_and_data_together_are_one_line(script, data):
    """Both named a file: one was used without a word (the positional when --data was given its default)."""
    assert_one_line_error(script("data_management.py", "--data", data, "pairs.h5", "--no-timing"),
                          f"two HDF5 files, --data {data} and pairs.h5: give one")


def test_fewest_pairs_follows_the_fractions(tmp_path):
    assert dm.min_pairs() == 3
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 5)
    assert dm.check_h5(h5) == 5
    need = dm.min_pairs(0.9, 0.5)
    assert need == 20  # 20 - ceil(18) = 2 -> 1 + 1; 19 - ceil(17.1) = 1 -> 0 train
    for n in (need, need + 7):  # the sizes are those train_test_split makes
        split = dm.make_split(n, 1, 0.9, 0.5)
        assert tuple(len(split[s]) for s in dm.SPLITS) == dm.split_sizes(n, 0.9, 0.5)
    with pytest.raises(InputError, match=f"at least {need}"):
        dm.check_h5(h5, 0.9, 0.5)
    for t, v in ((0.25, 0.25), (0.9, 0.5), (0.5, 0.9), (0.97, 0.93), (0.999, 0.99)):  # the count starts late enough
        assert dm.min_pairs(t, v) == next(n for n in range(3, 10**6) if min(dm.split_sizes(n, t, v)) >= 1)


def merged_file(folder):
    """folder/merged.h5 mapping 12 synthetic pairs from two part files of 6 (part0.h5, part1.h5) as --merge does:
    (merged path, the padded raw and truth images)."""
    import make_events
    from event_image import pad_event

    raw, truth = (pad_event(a) for a in make_events.generate_events(12, seed=4))
    merged = folder / "merged.h5"
    with h5py.File(merged, "w") as f:
        for key, images in (("raw", raw), ("truth", truth)):
            layout = h5py.VirtualLayout((12, 128, 128, 3), np.uint8)
            for k in range(2):
                with h5py.File(folder / f"part{k}.h5", "a") as part:
                    part[key] = images[6 * k:6 * (k + 1)]
                layout[6 * k:6 * (k + 1)] = h5py.VirtualSource(f"part{k}.h5", key, (6, 128, 128, 3))
            f.create_virtual_dataset(key, layout)
    return merged, raw, truth


def test_a_merged_file_moved_away_from_its_parts_is_refused_not_read_as_zeros(tmp_path, script):
    """A virtual (merged) dataset whose part files are missing reads as zeros in h5py: one-line error instead."""
    import shutil

    merged, _, _ = merged_file(tmp_path)
    assert dm.check_h5(merged) == 12  # beside its parts: fine
    elsewhere = tmp_path / "moved"
    elsewhere.mkdir()
    shutil.move(merged, elsewhere / "merged.h5")
    with pytest.raises(InputError, match="part0.h5 is missing"):
        dm.check_h5(elsewhere / "merged.h5")
    assert_one_line_error(script("data_management.py", "--data", elsewhere / "merged.h5", "--no-timing"),
                          "merged.h5", "missing")
    assert_one_line_error(script("Pix2Pix_training.py", "--data", elsewhere / "merged.h5", "--output-dir",
                                 tmp_path / "run", "--base-filters", 4), "merged.h5", "missing")


@pytest.mark.parametrize("pairs", [5, 7])
def test_a_part_rewritten_since_the_merge_is_refused(tmp_path, script, pairs):
    """A part of another length under a merged file read other events under the merged names (more pairs) or
    failed with a traceback (fewer): one-line error instead."""
    merged, raw, truth = merged_file(tmp_path)
    assert dm.check_h5(merged) == 12
    with h5py.File(tmp_path / "part0.h5", "w") as f:  # the part converted again, with another number of pairs
        f["raw"], f["truth"] = raw[:pairs], truth[:pairs]
    with pytest.raises(InputError, match=f"part0.h5 holds {pairs} pairs where the merged file maps 6"):
        dm.check_h5(merged)
    assert_one_line_error(script("data_management.py", "--data", merged, "--no-timing"), "merge again")


def damage_chunks(h5, chunks):
    """Overwrite part of the given compressed chunks of raw: they no longer decompress (the header stays whole)."""
    with h5py.File(h5, "r") as f:
        infos = [f["raw"].id.get_chunk_info(i) for i in chunks]
    with open(h5, "r+b") as fh:
        for info in infos:
            fh.seek(info.byte_offset + 10)
            fh.write(b"\xff" * 40)


def test_a_damaged_file_is_one_line_for_every_reader(tmp_path, script):
    """A chunk that does not decompress: h5py's OSError traceback (TensorFlow's 60 lines in training) became
    a line naming the file, whichever script reads it."""
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 64, chunk=2)
    damage_chunks(h5, [2, 10, 20])  # pairs 4-5, 20-21, 40-41: none of the fingerprint's samples
    dm.fingerprint(h5)
    with pytest.raises(InputError, match="pairs.h5: damaged HDF5 file"):
        list(pairs_h5.iterate_uint8(h5, np.arange(64), 8, dm.SHUFFLE_WINDOW))
    words = ("pairs.h5", "damaged HDF5 file")
    assert_one_line_error(script("data_management.py", "--data", h5), *words)
    assert_one_line_error(script("baselines.py", "--data", h5, "--methods", "snr"), *words)
    assert_one_line_error(script("Pix2Pix_training.py", "--data", h5, "--output-dir", tmp_path / "run",
                                 "--base-filters", 4, "--epochs", 1), *words)


def test_without_tensorflow_the_script_saves_the_split_and_skips_the_timing(tmp_path):
    """A GPU machine with JAX alone runs it before bench/train_jax.py (it ended in a ModuleNotFoundError)."""
    h5 = tmp_path / "pairs.h5"
    write_pairs(h5, 16)
    (tmp_path / "block/tensorflow").mkdir(parents=True)  # first on the path: `import tensorflow` fails as if absent
    (tmp_path / "block/tensorflow/__init__.py").write_text("raise ModuleNotFoundError(\"no tensorflow\")")
    proc = subprocess.run([sys.executable, ROOT / "data_management.py", "--data", h5], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "block")})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "no TensorFlow here: the split is saved, the pipeline's timing skipped" in proc.stdout
    assert dm.split_path(h5).is_file()


def test_scikit_learn_is_imported_only_when_a_split_is_made():
    """It takes a second to import: denoising a PNG folder, which needs no split, does not pay it."""
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys, Pix2Pix_denoise, data_management\n"
            "before = any(m.split('.')[0] == 'sklearn' for m in sys.modules)\n"
            "data_management.make_split(20)\n"
            "print(before, 'sklearn' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "True"]
