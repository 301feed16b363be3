"""The files of a training run's folder (Pix2Pix_training.py): run_config.json and the checks of a
folder before a run starts or resumes in it, checkpoints/, history.csv, samples/epoch_NNN.png and
the exported generators (generator_best / generator_final .keras + .json); and the log lines that
say what an epoch's history row and generator_best hold.
"""

import csv
import json
from pathlib import Path

import numpy as np

import data_management
import event_image as ei
from script_utils import InputError, atomic_output, check_folder_can_be_made, import_tensorflow, json_ready, warn

tf = import_tensorflow()  # first, so that its C++ start-up lines stay off stderr

from pix2pix_model import (  # noqa: E402
    GENERATOR_BLOCKS,
    IMAGE_SHAPE,
    build_generator,
    dtype_policy,
    f1_of,
    lr_factor,
    with_raw_hit_gate,
)

CSV_FIELDS = ("epoch", "step", "gen_total", "gen_gan", "gen_l1", "disc", "val_l1", "threshold", "efficiency",
              "rejection", "purity", "f1", "invented_per_event", "seconds", "images_per_s", "disc_winning", "collapse",
              "tracks_kept", "fake_segments_per_event")  # the last two: --threshold-criterion tracks only (else empty)
# settings a resume may change (the rest must be the run's: check_same_settings)
RESUME_MAY_CHANGE = {"epochs", "output_dir", "data", "checkpoint_every", "keep_checkpoints", "sample_events",
                     "logical_cpus", "keep_worker_checkpoints", "mixed_precision", "deterministic", "collapse_drop"}
RECENT_EPOCHS = 5  # the sidecar compares the exported epoch's F1 with the median of the run's last this many


def write_json(path, data):
    """A small JSON file, written atomically."""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(json_ready(data), indent=2, allow_nan=False) + "\n")


# --- run_config.json: what a checkpoint's weights fit ----------------------------------------------
RUN_CONFIG = "run_config.json"  # in a run's folder: its architecture, data, settings and replicas


def run_config(out):
    """The run_config.json of the run in out ({} when there is none)."""
    path = out / RUN_CONFIG
    return json.loads(path.read_text()) if path.exists() else {}


def architecture(trainer):
    """What a checkpoint's weights depend on: a resume with anything else is refused."""
    s = trainer.s
    return {"model": "pix2pix-unet-patchgan70", "image_shape": list(IMAGE_SHAPE), "base_filters": s.base_filters,
            "generator_blocks": GENERATOR_BLOCKS,
            "discriminator_patch_map": (list(trainer.discriminator.output_shape[1:]) if trainer.discriminator
                                        is not None else None),
            "gate_by_raw_hits": s.gate_by_raw_hits}


def check_output_dir(out, wanted, chief=True):
    """Refuse an output folder that holds something else than a run of the architecture wanted.

    Other workers of a multi-worker run share the chief's folder, which the chief may be filling.
    """
    config_path = out / RUN_CONFIG
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is not a folder")
    check_folder_can_be_made(out)
    if config_path.exists():
        try:
            saved = json.loads(config_path.read_text())["architecture"]
        except (ValueError, KeyError) as exc:
            raise InputError(f"{config_path}: not a run configuration ({exc})") from None
        if saved != wanted:
            diff = ", ".join(f"{k} {saved.get(k)} there, {v} asked" for k, v in wanted.items() if saved.get(k) != v)
            hint = (" (its discriminator: a run with the GAN term, which --gan-weight 0, the default since "
                    "issue 11, leaves out; resume it with --gan-weight 1)" if saved.get("discriminator_patch_map")
                    and not wanted.get("discriminator_patch_map") else "")
            raise InputError(f"{out}: holds a run with a different architecture ({diff}){hint}; "
                             "use another --output-dir or the same settings")
    elif chief and out.is_dir() and any(not is_worker_folder(p) for p in out.iterdir()):
        raise InputError(f"{out}: exists and does not hold a training run (no run_config.json); "
                         "use a new or empty --output-dir")


def data_record(data, fingerprint=None):
    """run_config.json's "data": the pairs file a run trains on (its path and data_management's fingerprint,
    computed when not given, after data_management's checks of the file: InputError)."""
    if fingerprint is None:
        data_management.check_h5(data)
        fingerprint = data_management.fingerprint(data)
    return {"path": str(Path(data).resolve()), "fingerprint": fingerprint}


def check_same_data(out, wanted):
    """Refuse to resume a run on another pairs file than the one it started on (data_record's).

    The fingerprint decides: the same file moved or copied resumes; another file, or the same
    path holding other pairs now, is refused. A run_config.json without the record is not checked.
    """
    saved = run_config(out).get("data")
    if not saved or saved.get("fingerprint") == wanted["fingerprint"]:
        return
    if saved.get("path") == wanted["path"]:
        raise InputError(f"{out}: holds a run started on {saved['path']}, whose pairs have changed since (its "
                         "fingerprint differs); use another --output-dir")
    raise InputError(f"{out}: holds a run started on {saved.get('path')}, not on --data {wanted['path']} (another "
                     "pairs file: the fingerprints differ); resume with the run's file or use another --output-dir")


def started_settings(out):
    """run_config.json's "settings": those the run in out started with ({} without it)."""
    return run_config(out).get("settings") or {}


def note_new_epochs(s, out, epoch):
    """A resume with another --epochs than the run's first: its learning-rate decay is spread anew, said in a line."""
    started = started_settings(out).get("epochs")
    if started in (None, s.epochs) or s.lr_decay == "none" or epoch >= s.epochs:
        return
    now = lr_factor(s.lr_decay, epoch, s.epochs)
    print(f"note: --epochs {s.epochs}, the run started with {started}: the {s.lr_decay} learning-rate decay now runs "
          f"over {s.epochs} epochs; epoch {epoch + 1} trains at {now:.3f} of the set rates", flush=True)


def flag_of(setting):
    """The command-line flag of a setting's name (lam: --lambda, a Python keyword; Pix2Pix_training's only flag
    whose dest differs from its name)."""
    return "--lambda" if setting == "lam" else "--" + setting.replace("_", "-")


def check_same_settings(out, settings, replicas):
    """Refuse to resume a run with settings that change what it learns or how its best epoch is chosen
    (run_config.json's "settings"; those of RESUME_MAY_CHANGE, and settings it does not record, may differ), or
    on another number of replicas (--logical-cpus, devices, workers): its place in an epoch counts global
    batches (--batch-size x replicas), so it would skip other events than it trained."""
    config = run_config(out)
    saved = config.get("settings") or {}
    changed = [f"{flag_of(k)} {saved[k]} there, {v} asked" for k, v in settings.items()
               if k in saved and k not in RESUME_MAY_CHANGE and saved[k] != v]
    if changed:
        raise InputError(f"{out}: holds a run started with other settings ({'; '.join(changed)}); resume with "
                         "the run's settings or use another --output-dir")
    if config.get("replicas", replicas) != replicas:
        raise InputError(f"{out}: holds a run trained on {config['replicas']} replica(s), this one has {replicas} "
                         "(its place in an epoch counts global batches); resume with as many or use another "
                         "--output-dir")


def finished_export(out, epoch, step):
    """generator_final.json's contents where it was exported at this epoch and step (the run had finished before),
    else None."""
    path = out / "generator_final.json"
    if not path.exists() or not (out / "generator_final.keras").exists():
        return None
    data = json.loads(path.read_text())
    return data if (data.get("epoch"), data.get("step")) == (epoch, step) else None


def is_worker_folder(path):
    """A multi-worker run's folder of another worker (it may be made before the chief's first file)."""
    return path.name.startswith(".worker_") and path.name.endswith("_tmp") and path.is_dir()


# --- checkpoints/ ----------------------------------------------------------------------------------
def checkpoint_candidates(folder):
    """Checkpoint prefixes in a folder, newest (highest step) first."""
    found = [(int(p.name[len("ckpt-"):-len(".index")]), p) for p in Path(folder).glob("ckpt-*.index")
             if p.name[len("ckpt-"):-len(".index")].isdigit()]
    return [str(p)[:-len(".index")] for _, p in sorted(found, reverse=True)]


def restore_latest(trainer, folder):
    """Restore the newest readable checkpoint; a corrupted one is reported and the previous one tried. None if
    there is none readable (said when there were some: the run starts again from step 0, as a run stopped before
    its first checkpoint does)."""
    candidates = checkpoint_candidates(folder)
    for prefix in candidates:
        try:
            trainer.checkpoint.restore(prefix).assert_existing_objects_matched()
        except Exception as exc:  # truncated or corrupted files raise OpError, IndexError, ValueError, ...
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            warn(f"checkpoint {prefix} is unreadable ({reason}); trying the previous one")
            continue
        step = int(trainer.step.numpy())
        iterations = [int(trainer.gen_opt.iterations.numpy())]
        expected = [step]
        if trainer.disc_opt is not None:  # the discriminator steps every --disc-every generator steps
            iterations.append(int(trainer.disc_opt.iterations.numpy()))
            expected.append(trainer.disc_steps(step))
        if iterations != expected:
            raise InputError(f"{prefix}: optimizers' iterations {iterations} disagree with the step counter {step} "
                             f"(expected {expected})")
        return prefix
    if candidates:
        warn(f"{folder}: none of its {len(candidates)} checkpoints is readable: the run starts again from step 0")
    return None


class Checkpoints:
    """The checkpoints this process writes: the last `keep` of them, at most one per step."""

    def __init__(self, trainer, folder, keep, last_saved=-1):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.trainer, self.last_saved = folder, trainer, last_saved
        self.manager = tf.train.CheckpointManager(trainer.checkpoint, folder, max_to_keep=keep)

    def save(self):
        """Save the trainer's state unless this step is saved already."""
        step = int(self.trainer.step.numpy())
        if step != self.last_saved:
            self.manager.save(checkpoint_number=step)
            self.last_saved = step


# --- history.csv, samples/, exports ------------------------------------------------------------------
def read_history(path):
    """history.csv's rows (dicts of strings); [] when there is none."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mark_collapses(rows, drop):
    """Set each row's "collapse" to 1 where its F1 is more than drop below the best of the rows before it."""
    best = -np.inf
    for row in rows:
        f1 = f1_of(row)
        row["collapse"] = int(f1 < best - drop)
        best = max(best, f1)
    return rows


def run_stability(rows, epoch, last=RECENT_EPOCHS):
    """How the F1 of epoch compares with the median F1 of the last `last` rows (the sidecar's "stability")."""
    recent = [f1_of(r) for r in rows[-last:]]
    mine = [f1_of(r) for r in rows if int(r["epoch"]) == int(epoch)]
    if not recent or not mine:
        return None
    median = float(np.median(recent))
    return {"epoch_f1": mine[0], "recent_epochs": [int(r["epoch"]) for r in rows[-last:]],
            "recent_median_f1": median, "f1_minus_recent_median": mine[0] - median}


def update_stability(sidecar, rows):
    """Rewrite an exported generator's JSON with its epoch compared to the run's last epochs now; returns
    what it holds (None where there is none)."""
    if not sidecar.exists():
        return None
    data = json.loads(sidecar.read_text())
    data["stability"] = run_stability(rows, data["epoch"])
    write_json(sidecar, data)
    return data


def record_epoch(out, log, row, collapse_drop):
    """An epoch's row into OUT/history.csv (append_history; row gets its collapse flag) and its scores into
    TensorBoard's writer log; returns history's rows."""
    rows = append_history(out / "history.csv", row, collapse_drop)
    row["collapse"] = rows[-1]["collapse"]
    with log.as_default():
        for key in CSV_FIELDS[2:]:
            if key not in ("disc_winning", "collapse") and key in row:
                tf.summary.scalar(key, float(row[key]), step=row["epoch"])
    log.flush()
    return rows


def append_history(path, row, collapse_drop=0.1):
    """Add an epoch's row to history.csv, replacing rows of that epoch or later (from a resume), with
    the collapse column over all rows (mark_collapses); returns the rows."""
    rows = [r for r in read_history(path) if int(r["epoch"]) < row["epoch"]]
    rows.append({k: row.get(k) for k in CSV_FIELDS})
    mark_collapses(rows, collapse_drop)
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return rows


def save_samples(path, first, threshold, n):
    """samples/epoch_NNN.png: a few validation events, raw | truth | output | the decisions at the threshold
    (event_image.decisions_image's colours: track hit kept white, removed red; noise hit kept amber)."""
    raw, truth, output = (ei.crop_event(a[:n]) for a in first)
    to_u8 = lambda a: np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)
    raw_hits, truth_hits = (ei.hit_mask(a, ei.SCALED_HIT_THRESHOLD) for a in (raw, truth))
    kept = ei.hit_mask(output, threshold)
    columns = {"raw": list(to_u8(raw)), "truth": list(to_u8(truth)), "output": list(to_u8(output)),
               f"output > {threshold:.2f} on the raw hits": [ei.decisions_image(*hits) for hits in
                                                             zip(raw_hits, truth_hits, kept, strict=True)]}
    with atomic_output(path, overwrite=True, ext=".png") as tmp:  # matplotlib reads the format from the ending
        ei.save_event_grid(tmp, columns, title=f"{path.stem}; last column, on the raw hits: {ei.DECISIONS_KEY}")


def export_generator(trainer, out, stem, scores, epoch, step, settings, stability=None):
    """generator_<stem>.keras (float32 copy of the weights, the EMA's with --ema-decay, gated if so set) and
    its JSON with the threshold, the epoch's F1 against the run's recent median (run_stability) and the pairs
    file it trained on (run_config.json's record: Pix2Pix_denoise scores that file's own test events)."""
    weights = (trainer.ema_generator or trainer.generator).get_weights()
    if not all(np.isfinite(w).all() for w in weights):
        raise InputError(f"{out / stem}.keras: not written, the generator's weights are not finite (nan or inf)")
    with dtype_policy("float32"):
        model = build_generator(trainer.s.base_filters, trainer.s.dropout)
        model.set_weights(weights)
        if trainer.s.gate_by_raw_hits:
            model = with_raw_hit_gate(model)
    with atomic_output(out / f"{stem}.keras", overwrite=True, ext=".keras") as tmp:  # Keras wants the ending
        model.save(tmp)
    validation = {k: v for k, v in scores.items() if k != "threshold"}
    data = run_config(out).get("data")  # the pairs file: denoising's split
    write_json(out / f"{stem}.json", {"threshold": scores["threshold"], "epoch": epoch, "step": step,
                                      "base_filters": trainer.s.base_filters, "validation": validation,
                                      "precision": trainer.precision, "settings": settings, "data": data,
                                      "stability": stability})


def report_epoch(s, row, seconds):
    """The epoch's line of the log, and a note when the discriminator wins outright."""
    pixel = f"{s.pixel_loss.upper()} {row['gen_l1']:.5f}"
    losses = (f"G {row['gen_total']:.4f} (GAN {row['gen_gan']:.3f}, {pixel}) D {row['disc']:.3f}" if s.gan_weight > 0
              else f"G {row['gen_total']:.4f} ({pixel}; no discriminator: --gan-weight 0)")
    print(f"epoch {row['epoch']}/{s.epochs} step {row['step']}: {losses} | validation L1 {row['val_l1']:.5f}, "
          f"threshold {row['threshold']:.2f}: efficiency {row['efficiency']:.3f} rejection {row['rejection']:.3f} "
          f"purity {row['purity']:.3f} F1 {row['f1']:.3f}{tracking_text(row)} ({seconds:.0f} s)", flush=True)
    if row.get("collapse"):
        print(f"note: collapse: validation F1 {row['f1']:.3f} fell more than {s.collapse_drop:g} below the best so "
              "far (history.csv's collapse column)", flush=True)
    if row["disc_winning"]:
        print(f"note: the discriminator is winning (its loss {row['disc']:.3f}, balanced 1.39; the "
              f"generator's GAN loss {row['gen_gan']:.2f}, balanced 0.69)", flush=True)


def tracking_text(scores):
    """', tracks kept ... fake segments/event ...' of --threshold-criterion tracks' scores ('' without them)."""
    if "tracks_kept" not in scores:
        return ""
    return f", tracks kept {scores['tracks_kept']:.4f}, fake segments/event {scores['fake_segments_per_event']:.4f}"


def best_summary(out, rows, scored):
    """At the end of a run: generator_best.json's epoch compared with the run's last epochs now (update_stability,
    history's rows), and what the run's last line says of it: best_epoch_text, or why there is none (scored: an
    epoch scored a validation F1)."""
    best = update_stability(out / "generator_best.json", rows)
    if best is not None:
        return best_epoch_text(out, best)
    if not scored:
        return "no epoch scored a validation F1, so no generator_best.keras was written"
    return f"no {out / 'generator_best.json'} (moved?)"


def best_epoch_text(out, info):
    """'best epoch E (threshold T: F1 ..., tracks kept ...): PATH' of generator_best.json's contents (info)."""
    v = info["validation"]
    return (f"best epoch {info['epoch']} (threshold {info['threshold']:.2f}: F1 {v['f1']:.3f}{tracking_text(v)}): "
            f"{out / 'generator_best.keras'}")
