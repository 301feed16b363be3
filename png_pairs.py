"""Finding raw/truth event PNG pairs by name (and their track-id PNGs), never by sort order.

Two layouts: two folders of equal file names (pair_folders: RAW/NAME + TRUTH/NAME, track ids in
a third folder) or one folder whose names carry a raw, a truth and a track-id tag (pair_tagged:
dc_all_N.png + dc_truth_N.png + dc_tracks_N.png). find_pairs gives the sorted pairs and the
problems (unpaired files, unusable names) as (path, reason); describe_problems puts them on one
line. The folders and tags are Pix2Pix_data.py's settings, passed in by its convert.

    import png_pairs
    pairs, problems = png_pairs.find_pairs("data/raw", "data/truth", "folders", "_all_", "_truth_", None, "_tracks_")
"""

import os
from collections import namedtuple
from pathlib import Path

import event_image as ei
from script_utils import InputError

PROBLEMS_SHOWN = 3  # files named in a one-line error before "and N more"

Pair = namedtuple("Pair", "raw_name truth_name raw_path truth_path tracks_path", defaults=(None,))


def case_hint(name, others_by_lower):
    """' (X differs only in case)' when a file of the other kind has name in another case."""
    other = others_by_lower.get(name.lower())
    return f" ({other} differs only in case)" if other is not None else ""


def with_tracks(pairs, tracks, key, where):
    """Each pair with its track-id PNG, and the problems: a pair without one, a track-id file without a pair.

    tracks: {key: path} ({} or None: the pairs as they are); key(pair) finds a pair's entry, where(pair)
    names the file it lacks."""
    if not tracks:
        return pairs, []
    keys = {key(p) for p in pairs}
    problems = [(Path(p.raw_path), f"no track-id file {where(p)}") for p in pairs if key(p) not in tracks]
    problems += [(Path(path), "track-id file without a raw/truth pair") for k, path in tracks.items() if k not in keys]
    return [p._replace(tracks_path=tracks[key(p)]) for p in pairs if key(p) in tracks], problems


def pair_folders(raw_dir, truth_dir, tracks_dir=None):
    """Pairs of equal file names in two folders (with their track-id PNG from a third, if given), and the
    unpaired files as (path, reason)."""
    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    raw_str, truth_str = str(raw_dir), str(truth_dir)
    if raw_dir.resolve() == truth_dir.resolve():
        raise InputError(f"{raw_dir}: raw and truth folders are the same (for one folder use --layout tagged)")
    raw, truth = ei.list_pngs(raw_dir, "raw"), ei.list_pngs(truth_dir, "truth")
    raw_set, truth_set = set(raw), set(truth)
    raw_lower = {n.lower(): n for n in raw if n not in truth_set}
    truth_lower = {n.lower(): n for n in truth if n not in raw_set}
    problems = [(raw_dir / n, f"no truth file {truth_dir / n}{case_hint(n, truth_lower)}")
                for n in raw if n not in truth_set]
    problems += [(truth_dir / n, f"no raw file {raw_dir / n}{case_hint(n, raw_lower)}")
                 for n in truth if n not in raw_set]
    pairs = [Pair(n, n, os.path.join(raw_str, n), os.path.join(truth_str, n)) for n in raw if n in truth_set]
    if tracks_dir is not None:
        tracks_dir = Path(tracks_dir)
        if tracks_dir.resolve() in (raw_dir.resolve(), truth_dir.resolve()):
            raise InputError(f"{tracks_dir}: the track-id folder is the raw or truth folder")
        tracks = {n: os.path.join(str(tracks_dir), n) for n in ei.list_pngs(tracks_dir, "track-id")}
        pairs, more = with_tracks(pairs, tracks, lambda p: p.raw_name, lambda p: tracks_dir / p.raw_name)
        problems += more
    return pairs, problems


def pair_tagged(folder, raw_tag, truth_tag, tracks_tag):
    """Pairs in one folder whose names differ only by the raw and truth tags, and the problems.

    Files carrying tracks_tag instead are the pairs' track-id PNGs (optional: none, or one per pair)."""
    if not raw_tag or not truth_tag or raw_tag == truth_tag or tracks_tag in (raw_tag, truth_tag):
        raise InputError(f"raw tag {raw_tag!r}, truth tag {truth_tag!r} and tracks tag {tracks_tag!r} must be "
                         "different non-empty strings")
    folder = Path(folder)
    raw, truth, tracks, problems = {}, {}, {}, []  # key (the name with its tag cut out) -> file name
    for name in ei.list_pngs(folder, "tagged"):
        n_raw, n_truth, n_tracks = name.count(raw_tag), name.count(truth_tag), name.count(tracks_tag or "\0")
        if n_raw + n_truth + n_tracks == 0:
            problems.append((folder / name, f"name carries neither tag {raw_tag!r} nor {truth_tag!r}"))
        elif n_raw + n_truth + n_tracks > 1:
            problems.append((folder / name, "name carries more than one tag: raw or truth?"))
        elif n_raw:
            raw[name.replace(raw_tag, "\0")] = name
        elif n_truth:
            truth[name.replace(truth_tag, "\0")] = name
        else:
            tracks[name.replace(tracks_tag, "\0")] = os.path.join(folder, name)
    raw_lower = {k.lower(): n for k, n in raw.items() if k not in truth}
    truth_lower = {k.lower(): n for k, n in truth.items() if k not in raw}
    problems += [(folder / n, f"no truth file {k.replace(chr(0), truth_tag)}{case_hint(k, truth_lower)}")
                 for k, n in raw.items() if k not in truth]
    problems += [(folder / n, f"no raw file {k.replace(chr(0), raw_tag)}{case_hint(k, raw_lower)}")
                 for k, n in truth.items() if k not in raw]
    pairs = sorted((Pair(n, truth[k], os.path.join(folder, n), os.path.join(folder, truth[k]))
                    for k, n in raw.items() if k in truth),
                   key=lambda p: p.raw_name)
    key = lambda p: p.raw_name.replace(raw_tag, "\0")
    if tracks and pairs and not any(key(p) in tracks for p in pairs):  # tags written unlike (all / _tracks_)
        wanted = key(pairs[0]).replace("\0", tracks_tag)
        raise InputError(f"{folder}: none of its {len(tracks)} track-id files names a pair ({pairs[0].raw_name}'s "
                         f"would be {wanted}): give --raw-tag, --truth-tag and --tracks-tag written alike")
    pairs, more = with_tracks(pairs, tracks, key, lambda p: key(p).replace("\0", tracks_tag))
    return pairs, sorted(problems + more)


def find_pairs(raw_dir, truth_dir, layout, raw_tag, truth_tag, tracks_dir, tracks_tag):
    """The sorted pair list and the problems (unpaired files, unusable names) of either layout.

    truth_dir: the truth folder (folders); None or the raw folder (tagged). Track-id PNGs: from
    tracks_dir (folders; None: event_image.default_tracks_dir) or tracks_tag (tagged), if any."""
    if layout == "folders":
        tracks_dir = ei.default_tracks_dir(truth_dir) if tracks_dir is None else tracks_dir
        pairs, problems = pair_folders(raw_dir, truth_dir, tracks_dir)
    elif layout == "tagged":
        if truth_dir is not None and Path(truth_dir).resolve() != Path(raw_dir).resolve():
            raise InputError(f"{truth_dir}: --layout tagged reads one folder (--raw-dir); do not give --truth-dir")
        if tracks_dir is not None:
            raise InputError(f"{tracks_dir}: --layout tagged finds track-id files by their tag (--tracks-tag)")
        pairs, problems = pair_tagged(raw_dir, raw_tag, truth_tag, tracks_tag)
    else:
        raise InputError(f"unknown pair layout {layout!r} (expected 'folders' or 'tagged')")
    good = []
    for pair in pairs:  # the names go into HDF5 as UTF-8
        try:
            pair.raw_name.encode("utf-8"), pair.truth_name.encode("utf-8")
            good.append(pair)
        except UnicodeEncodeError:
            problems.append((pair.raw_path, "file name is not valid UTF-8"))
    return good, problems


def describe_problems(problems):
    """One line naming the first few problem files and how many more there are."""
    shown = "; ".join(f"{path}: {reason}" for path, reason in problems[:PROBLEMS_SHOWN])
    more = len(problems) - PROBLEMS_SHOWN
    return shown + (f"; and {more} more" if more > 0 else "")
