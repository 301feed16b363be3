"""Where Pix2Pix_denoise.py reads events and writes them back: a folder of event PNGs or the project's
HDF5 file's test split in, a PNG folder or a new HDF5 file out (HIPO files: hipo_denoise.py).

Readers give batches of (names, raw hit masks, truth hit masks or None, track ids or None); writers are
used as `with writer:` then writer.write(names, kept hit masks) batch by batch, and writer.discard()
removes what a run that failed after writing left.
"""

import contextlib
import shutil
from pathlib import Path

import h5py
import numpy as np

import data_management
import event_image as ei
import pairs_h5
from script_utils import InputError, atomic_output, can_write_in, check_not_an_input, progress, warn


# --- Readers: batches of (names, raw hit masks, truth hit masks or None) --------------------
def check_not_tagged(folder, names):
    """Refuse a folder of Pix2Pix_data's tagged layout (dc_all_N.png beside dc_truth_N.png or dc_tracks_N.png):
    its truth and track-id images would be denoised as raw events. Names that carry a tag but have no raw
    file beside them are an ordinary folder's names."""
    present = set(names)
    for name in names:
        for tag in (ei.TRUTH_TAG, ei.TRACKS_TAG):
            if name.count(tag) == 1 and name.replace(tag, ei.RAW_TAG) in present:
                raise InputError(f"{folder}: holds the tagged layout's truth or track-id PNGs ({name} beside "
                                 f"{name.replace(tag, ei.RAW_TAG)}), which would be denoised as events: "
                                 f"convert it with Pix2Pix_data.py --layout tagged --raw-dir {folder} and denoise the "
                                 "HDF5 file's test split with --data, or move the raw PNGs to a folder of their own")


class PngFolderReader:
    """Event PNGs of a folder, with the truth PNGs of the same names from truth_dir and the track-id
    PNGs (each truth hit's track number) from tracks_dir, if given."""

    keep_bytes = 256 * 2**20  # the batches check() reads are kept for the run, up to this size

    def __init__(self, input_dir, truth_dir, batch_size, tracks_dir=None):
        self.folder = Path(input_dir)
        self.names = ei.list_pngs(self.folder)
        check_not_tagged(self.folder, self.names)
        self.truth_dir = Path(truth_dir) if truth_dir else None
        self.tracks_dir = Path(tracks_dir) if tracks_dir else None
        for folder, what in ((self.truth_dir, "truth"), (self.tracks_dir, "track-id")):
            if folder and not folder.is_dir():
                raise InputError(f"{folder}: {what} folder not found")
            if folder and folder.samefile(self.folder):  # a symbolic link to it too
                raise InputError(f"{folder}: the {what} folder is the input folder (--input-dir): the events would be "
                                 f"scored against themselves; give the {what} PNGs in a folder of their own")
        self.batch_size = batch_size
        self.checked = []  # the first batches, as check() read them (none: read as the run goes)

    def __len__(self):
        return len(self.names)

    def check(self):
        """Read every PNG (and its truth) once: a bad file stops the run before anything is written
        (the first batches, up to keep_bytes, are kept for the run rather than read twice)."""
        bar, size, self.checked = progress(total=len(self), desc="checking inputs", unit="event"), 0, []
        stray = np.zeros(2, np.int64)  # events with truth hits that are not raw hits, and those hits
        for start in range(0, len(self.names), self.batch_size):
            batch = self.read(self.names[start:start + self.batch_size])
            size += sum(a.nbytes for a in batch[1:] if a is not None)
            if size <= self.keep_bytes:
                self.checked.append(batch)
            if batch[2] is not None:
                stray += ei.truth_outside_raw(batch[1], batch[2])
            bar.update(len(batch[0]))
        bar.close()
        if stray[0]:
            warn(f"{stray[0]} event(s) have truth hits that are not raw hits ({stray[1]} in all): are --input-dir "
                 "and --truth-dir swapped? (the scores count raw hits only)")

    def read(self, names):
        """(names, raw hit masks, truth hit masks or None, track ids or None) of these events."""
        raw = ei.hit_mask(np.stack([ei.read_event_png(self.folder / n) for n in names]))
        truth = ids = None
        if self.truth_dir:
            truth = ei.hit_mask(np.stack([ei.read_event_png(self.truth_dir / n) for n in names]))
        if self.tracks_dir:
            ids = np.stack([ei.read_track_ids_png(self.tracks_dir / n) for n in names])
        return names, raw, truth, ids

    def __iter__(self):
        for i, start in enumerate(range(0, len(self.names), self.batch_size)):
            yield self.checked[i] if i < len(self.checked) else self.read(self.names[start:start + self.batch_size])


class H5SplitReader:
    """The test split of the project's HDF5 file, in file order (names from its `names`, else indices),
    with the track ids of its optional `track_ids` dataset (else None)."""

    def __init__(self, data, split_seed=data_management.SPLIT_SEED, *, batch_size):
        self.data, self.batch_size = data, batch_size
        self.indices = np.asarray(data_management.load_split(data, split_seed=split_seed)["test"], np.int64)
        if len(self.indices) == 0:
            raise InputError(f"{data}: the test split is empty")
        with h5py.File(data, "r") as f:
            names = f["names"][self.indices] if "names" in f else [str(i) for i in self.indices]
        self.names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        start = 0
        batches = pairs_h5.iterate_uint8(self.data, self.indices, self.batch_size, data_management.SHUFFLE_WINDOW)
        for raw, truth in batches:
            stop = start + len(raw)
            ids = pairs_h5.read_track_ids(self.data, self.indices[start:stop])
            yield self.names[start:stop], ei.hit_mask(ei.crop_event(raw)), ei.hit_mask(ei.crop_event(truth)), ids
            start = stop
        if start != len(self):
            raise InputError(f"{self.data}: read {start} test events, expected {len(self)}")


# --- Writers: `with writer:` then writer.write(names, kept hit masks) batch by batch ------------
class PngFolderWriter:
    """One PNG per event (hits = HIT_VALUE) named like its input.

    A new folder is filled under a temporary name beside it and renamed into place when the run
    succeeds (an atomic rename of each file costs three times the file's own writing); into an
    existing folder (new names, or --overwrite) each file is written atomically.
    """

    def __init__(self, folder, overwrite=False):
        self.folder, self.overwrite = Path(folder), overwrite

    def check(self, names, inputs):
        """Refuse an output folder that is, is inside or holds an input, is not a folder or not writable,
        and existing outputs."""
        check_not_an_input(self.folder, inputs)
        out = self.folder.resolve()
        if out.exists() and not out.is_dir():
            raise InputError(f"{self.folder}: exists and is not a folder")
        if not out.parent.is_dir():
            raise InputError(f"{self.folder}: its folder {out.parent} does not exist")
        writes_in = out if out.is_dir() else out.parent
        if not can_write_in(writes_in):
            raise InputError(f"{self.folder}: folder {writes_in} is not writable")
        for name in names:
            if (self.folder / name).exists() and not self.overwrite:
                raise InputError(f"{self.folder / name}: already exists (use --overwrite to replace it)")

    def __enter__(self):
        self.written, self.stack = [], contextlib.ExitStack()
        self.new_folder = not self.folder.exists()
        self.staging = self.stack.enter_context(atomic_output(self.folder, folder=True)) if self.new_folder else None
        return self

    def __exit__(self, *exc):
        self.stack.__exit__(*exc)  # a new folder: renamed into place, or (a failed run) removed
        self.placed = self.new_folder and exc[0] is None
        return False

    def write(self, names, kept):
        for name, image in zip(names, ei.mask_to_image(kept), strict=True):
            if self.staging is not None:
                ei.write_event_png(self.staging / name, image)
                continue
            with atomic_output(self.folder / name, self.overwrite, suffix=".png") as tmp:
                ei.write_event_png(tmp, image)
            self.written.append(self.folder / name)

    def discard(self):
        """Remove what this run wrote (a run that failed after writing)."""
        if getattr(self, "placed", False):
            shutil.rmtree(self.folder, ignore_errors=True)  # made by this run and renamed into place
        for path in getattr(self, "written", ()):
            path.unlink(missing_ok=True)


class H5Writer:
    """An HDF5 file (written atomically) of datasets denoised (N,36,112,3) uint8, indices and names, and attrs."""

    def __init__(self, path, indices, names, attrs, overwrite=False):
        self.path, self.indices, self.names, self.attrs, self.overwrite = path, indices, names, attrs, overwrite

    def __enter__(self):
        n, shape = len(self.indices), (ei.LAYERS, ei.WIRES, ei.CHANNELS)
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(self.path, self.overwrite, suffix=".h5"))
            out = stack.enter_context(h5py.File(tmp, "w"))
            self.denoised = out.create_dataset("denoised", (n, *shape), np.uint8, chunks=(min(n, 256), *shape),
                                               compression="gzip", compression_opts=1)
            out.create_dataset("indices", data=self.indices)
            out.create_dataset("names", data=self.names, dtype=h5py.string_dtype())
            pairs_h5.write_attrs(out, created_by="Pix2Pix_denoise.py", **self.attrs)
            self.done, self.stack = 0, stack.pop_all()
        return self

    def __exit__(self, *exc):
        self.stack.__exit__(*exc)
        self.finished = exc[0] is None
        return False

    def discard(self):
        """Remove the file this run wrote (a run that failed after writing it)."""
        if getattr(self, "finished", False):
            Path(self.path).unlink(missing_ok=True)

    def write(self, names, kept):
        self.denoised[self.done:self.done + len(kept)] = ei.mask_to_image(kept)
        self.done += len(kept)
