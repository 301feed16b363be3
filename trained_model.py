"""A trained denoiser behind one call: hit probabilities of a batch of 36x112 hit maps.

Two kinds of model file: a `.keras` generator (or a training run folder, for its
generator_best.keras), run by Keras on the 128x128 layout, and an `.onnx` export
(Pix2Pix_export.py) with CLAS12 reconstruction's [B, 1, 36, 112] interface, run by onnxruntime
without TensorFlow. Beside either, a sidecar JSON holds the threshold chosen on validation.

    model, info = load_model("runs/pix2pix")      # or "denoiser.onnx"
    kept = model.probabilities(hit_maps) > choose_threshold(None, info, resolve_model("runs/pix2pix"))
"""

import collections
import hashlib
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import event_image as ei
from script_utils import InputError, import_keras, warn

BEST_MODEL = "generator_best.keras"  # what a training output directory provides


class KerasModel:
    """A Keras generator (.keras) mapping 128x128x3 images in 0..1 to 128x128x3 images in 0..1.

    One batch at a time, which TensorFlow spreads over the cores itself (threads: ignored).
    """

    concurrent_batches = 1

    def __init__(self, path, threads=None, views=None):
        self.path = path
        self.views = views or {}  # output_views: its output averaged with the mirrored, moved event's
        if not zipfile.is_zipfile(path):  # Keras itself would say "file not found"
            raise InputError(f"{path}: not a Keras model file (a .keras file is a zip archive)")
        keras = import_keras()
        try:
            self.model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # zip, HDF5 and deserialisation errors come in many kinds
            why = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise InputError(f"{path}: cannot load the model ({type(exc).__name__}: {why})") from None
        want = (None, ei.PADDED_SIZE, ei.PADDED_SIZE, ei.CHANNELS)
        model = self.model
        shapes = [tuple(model.input_shape), tuple(model.output_shape)] if hasattr(model, "input_shape") else []
        if shapes != [want, want]:
            raise InputError(f"{path}: model maps {shapes[:1]} -> {shapes[1:]}, expected {want} -> {want}")
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            raise InputError(f"{path}: the model's weights are not finite (nan or inf): a training run that diverged")
        self.batch_size = 0  # the largest batch predicted so far

    def probabilities(self, hit_maps):
        """Hit probability (N, 36, 112) float32 of each cell of hit maps (N, 36, 112) (bool or 0/1).

        The network sees each map as a 3-channel 0/1 image in the 128x128 layout (what a PNG with
        hits of 255 gives); a cell's probability is its largest output channel, so `prob > t`
        equals event_image.hit_mask(output, t). A batch shorter than the largest one so far is
        filled up with empty images (their outputs dropped): the predict function is traced once.
        With views the output is pix2pix_model.view_averaged's, as in the training's validation.
        """
        maps = np.asarray(hit_maps, np.float32)
        n = len(maps)
        self.batch_size = max(self.batch_size, n)
        images = np.zeros((self.batch_size, ei.LAYERS, ei.WIRES, ei.CHANNELS), np.float32)
        images[:n] = maps[..., None]
        predict = lambda x: np.asarray(self.model.predict_on_batch(x), np.float32)  # noqa: E731
        from pix2pix_model import view_averaged  # keras: not for the ONNX route

        out = np.asarray(view_averaged(predict, ei.pad_event(images), **self.views), np.float32)[:n]
        return ei.crop_event(out).max(axis=-1)


class OnnxModel:
    """An exported model (Pix2Pix_export.py) run by onnxruntime: no TensorFlow involved.

    Its interface is CLAS12 reconstruction's: [B, 1, 36, 112] hit maps in, hit probabilities out,
    with the padding, the generator and the raw-hit gate inside the graph. threads: None =
    onnxruntime's default session (each run spread over the cores), one batch at a time; N = each
    run on one thread, and callers may run N batches at once from N threads (`concurrent_batches`;
    a session's run is thread-safe and releases the GIL), which suits these small convolutions better.
    """

    def __init__(self, path, threads=None):
        import onnxruntime

        self.path = path
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.concurrent_batches = threads or 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # not ONNX, truncated, unsupported operators...
            why = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise InputError(f"{path}: cannot load the ONNX model ({type(exc).__name__}: {why})") from None
        want = [(ei.MODEL_INPUT, list(ei.MODEL_TENSOR_SHAPE[1:]))], [(ei.MODEL_OUTPUT, list(ei.MODEL_TENSOR_SHAPE[1:]))]
        got = ([(t.name, t.shape[1:]) for t in self.session.get_inputs()],
               [(t.name, t.shape[1:]) for t in self.session.get_outputs()])
        if got != want:
            raise InputError(f"{path}: not this project's export: maps {got[0]} -> {got[1]}, expected "
                             f"{want[0]} -> {want[1]} (a batch dimension first)")
        tensors = [*self.session.get_inputs(), *self.session.get_outputs()]
        if any(t.type != "tensor(float)" or isinstance(t.shape[0], int) for t in tensors):
            raise InputError(f"{path}: not this project's export: its tensors are "
                             f"{[(t.name, t.type, t.shape) for t in tensors]}, expected float32 of any batch size")
        self.threshold = self.session.get_modelmeta().custom_metadata_map.get("threshold")  # the export's

    def probabilities(self, hit_maps):
        """Hit probability (N, 36, 112) float32 of each cell of hit maps (N, 36, 112) (bool or 0/1)."""
        maps = np.asarray(hit_maps, np.float32)[:, None]
        return self.session.run([ei.MODEL_OUTPUT], {ei.MODEL_INPUT: maps})[0][:, 0]


EXPORT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}  # an export sidecar's "format" -> its model file's ending
MODEL_TYPES = {".keras": KerasModel, ".onnx": OnnxModel}  # model file ending -> the class behind .probabilities()
MODEL_SUFFIXES = (".keras", *EXPORT_SUFFIXES.values())  # the model files a sidecar JSON may describe


def resolve_model(path):
    """The model file to load: the file itself, or a training directory's best generator."""
    path = Path(path)
    if path.is_dir():
        best = path / BEST_MODEL
        if not best.is_file():
            raise InputError(f"{path}: training directory without {BEST_MODEL}")
        return best
    if not path.exists():
        raise InputError(f"{path}: model not found")
    if path.suffix not in MODEL_TYPES:
        raise InputError(f"{path}: not a {' or '.join(MODEL_TYPES)} model file")
    return path


def read_sidecar(model_path):
    """The training run's JSON stored beside the model file (threshold, epoch, ...); {} if none."""
    sidecar = Path(model_path).with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep for json
        raise InputError(f"{sidecar}: unreadable model sidecar ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(info, dict):
        raise InputError(f"{sidecar}: model sidecar is not a JSON object")
    check_sidecar(sidecar, info, Path(model_path))
    return info


def check_sidecar(sidecar, info, model_path):
    """Refuse a sidecar that cannot be this model's: another export format's (denoiser.json written for
    denoiser.pt beside denoiser.onnx), an export's whose sha256 is not the model file's, or training settings
    that are not a JSON object with mirror_average true or false and shift_average a whole number (a hand edit
    gone wrong)."""
    made = info.get("format")
    if made is not None and (not isinstance(made, str) or EXPORT_SUFFIXES.get(made) != model_path.suffix):
        raise InputError(f"{sidecar}: the sidecar of {info.get('file')} ({made}), not of {model_path.name} "
                         "(export each format to a name of its own)")
    if made is not None and info.get("sha256") != file_sha256(model_path):
        raise InputError(f"{sidecar}: written for another {model_path.name} (its sha256 differs: files of two "
                         "exports mixed, or an export stopped between its two files); export it again")
    record = training_record(info)
    settings = (record.get("settings") or {}) if isinstance(record, dict) else None
    if not (isinstance(settings, dict) and isinstance(settings.get("mirror_average", False), bool)
            and type(settings.get("shift_average", 0)) is int):
        raise InputError(f"{sidecar}: its training settings are not a JSON object with mirror_average true or "
                         "false and shift_average a whole number")


def file_sha256(path):
    """Hex sha256 of a file's bytes (an export's sidecar records its model file's)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def training_record(info):
    """The training run's part of a model's sidecar: the sidecar itself, or for an export its "training"."""
    return info.get("training") or info


def training_settings(info):
    """The training run's settings from a model's sidecar ({} if none)."""
    return training_record(info).get("settings") or {}


def training_data(info, model_path):
    """(record, split seed) of the pairs file a model trained on (record: training_files.data_record's path and
    fingerprint), from its sidecar (an export keeps the training's under "training"), else from run_config.json
    beside it (runs before the sidecar held it); (None, None) where neither says."""
    record, seed = training_record(info).get("data"), training_settings(info).get("split_seed")
    config = Path(model_path).parent / "run_config.json"  # training_files.RUN_CONFIG (this module needs no TensorFlow)
    if record is None and config.is_file():
        try:
            saved = json.loads(config.read_text())
            record, seed = saved.get("data"), seed if seed is not None else saved["settings"]["split_seed"]
        except (OSError, ValueError, KeyError, TypeError):
            return None, None
    if not isinstance(record, dict) or seed is None:
        return None, None
    return record, seed


def scored_split_seed(given, data, fingerprint, info, model_path, default):
    """The split seed whose test events are scored on the pairs file data of this fingerprint: the model's own on
    the file it trained on (another seed's test events would hold its training events: refused), else
    given or default (with a warning where data is the file it trained on, changed since: the split follows
    the file's pairs, so its test events may hold the training's)."""
    record, seed = training_data(info, model_path)
    if record is None or record.get("fingerprint") != fingerprint:
        if record is not None and record.get("path") == str(Path(data).resolve()):
            warn(f"{data} has changed since {model_path} trained on it (another fingerprint: pairs added, removed "
                 "or changed): its test events may hold the model's training events")
        return default if given is None else given
    if given is not None and given != seed:
        raise InputError(f"{model_path} trained on this file with split seed {seed}: the test events of "
                         f"--split-seed {given} hold its training events; leave --split-seed out")
    return seed


def load_model(path, threads=None):
    """(model, info): the model of a file or training directory, and its sidecar JSON ({} if none).

    threads: for an .onnx model, N single-thread runs at once (OnnxModel); a .keras model ignores it.
    """
    path = resolve_model(path)
    info = read_sidecar(path)
    return model_from(path, info, threads), info


def model_from(path, info, threads=None):
    """The model of a model file (resolve_model's) whose sidecar JSON (read_sidecar's) is info, run as it says."""
    if path.suffix != ".onnx":
        return KerasModel(path, threads, views=output_views(info))
    model = OnnxModel(path, threads)  # an export holds its output views, if any, in its graph
    stored = info.get("threshold")
    try:
        differ = abs(float(model.threshold) - float(stored)) > 1e-6
    except (TypeError, ValueError):  # none in either (choose_threshold says what is wrong with a stored one)
        differ = False
    if differ:
        raise InputError(f"{path.with_suffix('.json')}: its threshold {stored} is not the one in {path.name}'s "
                         f"metadata ({model.threshold}, what CLAS12 reconstruction reads): edited by hand? export "
                         "it again")
    return model


def output_views(info):
    """{"mirror": bool, "shift": wires} of the views the model's output is averaged over, as its training chose
    its threshold (--mirror-average, --shift-average), so that it must be run so (an export's sidecar keeps its
    training's settings); {} for none."""
    settings = training_settings(info)
    views = {"mirror": bool(settings.get("mirror_average", False)), "shift": int(settings.get("shift_average", 0))}
    return views if any(views.values()) else {}


def views_note(views):
    """', output mirror-averaged and shift-averaged (K wires)' as far as views says ('' for none)."""
    named = (["mirror-averaged"] if views.get("mirror") else []) + \
        ([f"shift-averaged ({views['shift']} wire{'s' * (abs(views['shift']) != 1)})"] if views.get("shift") else [])
    return ", output " + " and ".join(named) if named else ""


def choose_threshold(threshold, info, model_path):
    """threshold if given, else the validation-chosen threshold stored with the model."""
    if threshold is not None:
        return float(threshold)
    t = info.get("threshold")
    sidecar = Path(model_path).with_suffix(".json")
    if not sidecar.is_file():
        raise InputError(f"{model_path}: no {sidecar.name} beside it with the threshold chosen on validation; give "
                         "--threshold")
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t < 1.0:
        raise InputError(f"{sidecar}: no valid stored threshold; give --threshold")
    return float(t)


def threshold_origin(given, info):
    """', from validation (criterion ..., output mirror-averaged if so: views_note)' or ', set at export; validation
    chose T': where a stored threshold came from (for one given on the command line only views_note: the model
    still runs its output views)."""
    if given is not None:
        return views_note(output_views(info))
    if info.get("threshold_source") == "export --threshold":
        return f", set at export; validation chose {info.get('validation_threshold')}"
    settings = training_settings(info)
    times, draws = settings.get("validation_background", 1), settings.get("validation_draws", 1)
    chosen = (settings.get("threshold_criterion", "?") + (f", {times} events' background" if times != 1 else "")
              + (f" in {draws} draws" if draws != 1 else ""))
    return f", from validation (criterion {chosen}{views_note(output_views(info))})"


def kept_hits(probabilities, raw, threshold, gate):
    """The hits a model keeps: probability above its threshold, and only raw hits when gated (--gate-by-raw-hits)."""
    kept = probabilities > threshold
    return kept & raw if gate else kept


def predicted(model, batches):
    """(batch, hit probabilities of its raw hit maps) of each batch, in order.

    A model that can run several batches at once (model.concurrent_batches > 1: onnxruntime
    releases the GIL) gets that many running on threads, and one more queued. A probability
    that is not finite (a broken model: weights that diverged, an export gone wrong) stops it.
    """
    for batch, prob in _in_order(model, batches):
        if not np.isfinite(prob).all():
            raise InputError(f"{getattr(model, 'path', 'the model')}: the model gives non-finite hit probabilities "
                             "(nan or inf): it is broken (a training run that diverged?)")
        yield batch, prob


def _in_order(model, batches):
    """predicted's (batch, probabilities), unchecked."""
    in_flight = getattr(model, "concurrent_batches", 1)
    if in_flight <= 1:
        for batch in batches:
            yield batch, model.probabilities(batch[1])
        return
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        pending = collections.deque()
        for batch in batches:
            pending.append((batch, pool.submit(model.probabilities, batch[1])))
            if len(pending) > in_flight:
                batch, running = pending.popleft()
                yield batch, running.result()
        while pending:
            batch, running = pending.popleft()
            yield batch, running.result()


def cpu_cores():
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
