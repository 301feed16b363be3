"""Export a trained generator as a model file that CLAS12 reconstruction can load.

The exported model takes the bare hit map of B sectors, float32 [B, 1, 36, 112] (1.0 where a
wire has a hit), and returns a hit probability per wire of the same shape: the padding to the
128x128 layout, the generator (fed one channel, its last layer computed for the event only), the
raw-hit gate and the crop back are all inside the graph. A hit is kept where its probability is
above the threshold chosen on validation (stored in the model's metadata and in the JSON sidecar beside it).

After writing, the file is run (onnxruntime, or torch for TorchScript) beside the Keras model on --verify-events
events (from --data, else synthetic) and refused if any hit decision differs.

    python Pix2Pix_export.py --model runs/pix2pix --output denoiser.onnx
    python Pix2Pix_export.py --model runs/pix2pix --output denoiser_torch.pt --format torchscript
"""

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

import event_image as ei
import trained_model
from script_utils import (
    ArgumentParser,
    InputError,
    atomic_output,
    check_not_an_input,
    check_output_path,
    import_keras,
    run_main,
)
from worker_pools import process_pool, submit_task, task_result

# --- Settings (each one can be overridden on the command line) ----------------------------
FORMAT = "onnx"  # onnx: for onnxruntime and DJL's OnnxRuntime engine; torchscript: DJL's PyTorch engine
DATA = None  # HDF5 pairs file whose first events verify the export (None: synthetic events)
VERIFY_EVENTS = 256  # events run through both models after writing
THRESHOLD = None  # stored with the export; None = the one chosen on validation (the model's sidecar)
OVERWRITE = False
# ---------------------------------------------------------------------------------------------


# --- The model with CLAS12's interface -----------------------------------------------------------
def pad_layers(image):
    """(B, 36, W, C) -> (B, 128, W, C): the regions placed at event_image.REGION_ROWS, zeros around."""
    from keras import ops

    parts, end = [], 0
    for r, start in enumerate(ei.REGION_ROWS):
        region = image[:, r * ei.LAYERS_PER_REGION:(r + 1) * ei.LAYERS_PER_REGION]
        bottom = ei.PADDED_SIZE - start - ei.LAYERS_PER_REGION if r == ei.REGIONS - 1 else 0
        parts.append(ops.pad(region, [[0, 0], [start - end, bottom], [0, 0], [0, 0]]))
        end = start + ei.LAYERS_PER_REGION
    return ops.concatenate(parts, axis=1)


def event_part_of_last_layer(last):
    """The U-Net's last layer (a 4x4 stride-2 transposed convolution to 128x128) computed only for the
    36x112 event: on the input rows and columns that reach the event's pixels (two more on each side,
    so none of the zero padding at the crop's edges reaches them), its output cut to the layers'
    rows and the wires' columns. (B, 64, 64, C) -> (B, 36, 112, 3), for a third of the arithmetic."""
    from keras import ops

    top, bottom = ei.REGION_ROWS[0], ei.REGION_ROWS[-1] + ei.LAYERS_PER_REGION
    left, right = ei.PAD_LEFT, ei.PAD_LEFT + ei.WIRES
    row0, col0 = top // 2 - 2, left // 2 - 2  # output pixel (r, c) of the crop is padded (r + 2 row0, c + 2 col0)

    def apply(x):
        out = last(x[:, row0:bottom // 2 + 2, col0:right // 2 + 2])
        rows = [out[:, start - 2 * row0:start - 2 * row0 + ei.LAYERS_PER_REGION] for start in ei.REGION_ROWS]
        return ops.concatenate(rows, axis=1)[:, :, left - 2 * col0:right - 2 * col0]

    return apply


def one_channel_unet(generator):
    """The trained U-Net (without the 128x128x3 raw-hit gate of pix2pix_model.with_raw_hit_gate, which the
    interface applies at 36x112) taking one channel and giving the event's (B, 36, 112, 3): its three input
    channels are copies of one hit map, so the first convolution's kernel summed over them gives the same
    output for a third of the work, and its last layer is computed for the event only."""
    keras = import_keras()
    import pix2pix_model

    try:
        bare = generator.get_layer("generator")
    except ValueError:  # trained with --no-gate-by-raw-hits
        bare = generator
    blocks = [layer for layer in bare.layers if isinstance(layer, keras.Sequential)]
    down, up = blocks[:pix2pix_model.GENERATOR_BLOCKS], blocks[pix2pix_model.GENERATOR_BLOCKS:]
    conv, activation = down[0].layers
    first = keras.layers.Conv2D(conv.filters, conv.kernel_size, strides=conv.strides, padding=conv.padding,
                                use_bias=False)
    first.build((None, ei.PADDED_SIZE, ei.PADDED_SIZE, 1))
    first.set_weights([keras.ops.convert_to_numpy(conv.kernel).sum(axis=2, keepdims=True)])
    image = keras.Input((ei.PADDED_SIZE, ei.PADDED_SIZE, 1))
    output = pix2pix_model.unet(image, [keras.Sequential([first, activation]), *down[1:]], up,
                                event_part_of_last_layer(bare.layers[-1]))
    return keras.Model(image, output, name="one_channel_generator")


def with_clas12_interface(generator, views=None):
    """A keras.Model [B,1,36,112] hit map -> [B,1,36,112] probability, around a 128x128x3 generator.

    The probability is the generator's (the highest of its channels) where the map has a hit (> 0.5),
    times the map, 0 elsewhere: the trained gated generator's output, cropped, times the map. With views
    (trained_model.output_views: the training's --mirror-average, --shift-average) the channels are first
    averaged with those of the mirrored or moved map's output, brought back (pix2pix_model.view_averaged):
    one more pass of the U-Net per view.
    """
    keras = import_keras()
    from keras import ops

    from pix2pix_model import view_averaged

    unet = one_channel_unet(generator)

    def gated_output(hit_map):  # (B, 36, 112, 1) -> (B, 36, 112, 3)
        image = ops.pad(pad_layers(hit_map), [[0, 0], [0, 0], [ei.PAD_LEFT, ei.PAD_RIGHT], [0, 0]])
        return unet(image, training=False) * ops.cast(hit_map > ei.SCALED_HIT_THRESHOLD, "float32")

    hits = keras.Input((1, ei.LAYERS, ei.WIRES), name=ei.MODEL_INPUT)
    hit_map = ops.transpose(hits, (0, 2, 3, 1))  # (B, 36, 112, 1)
    output = view_averaged(gated_output, hit_map, **(views or {}))
    probability = ops.max(output, axis=-1, keepdims=True) * hit_map
    return keras.Model(hits, ops.transpose(probability, (0, 3, 1, 2)), name="clas12_dc_denoiser")


# --- Writing and checking the file -------------------------------------------------------------
@contextlib.contextmanager
def quiet():
    """Keep the converters' own lines (tf2onnx's progress, warnings) off the user's terminal."""
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def write_onnx(model, path, metadata):
    """model.export(format="onnx") to path, with CLAS12's tensor names, a named batch and metadata."""
    import onnx

    model(np.zeros((1, 1, ei.LAYERS, ei.WIRES), np.float32))  # Keras exports only a model that has run
    with quiet():
        model.export(str(path), format="onnx")
    proto = onnx.load(str(path))
    graph = proto.graph
    old_name = graph.output[0].name
    for node in graph.node:
        node.output[:] = [ei.MODEL_OUTPUT if o == old_name else o for o in node.output]
    graph.output[0].name = ei.MODEL_OUTPUT
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = ei.MODEL_TENSOR_SHAPE[0]
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def write_torchscript(onnx_path, path):
    """The ONNX graph converted to PyTorch (onnx2torch) and traced to TorchScript (DJL's PyTorch engine).

    In a fresh process: onnx2torch's imports crash a process that has TensorFlow loaded.
    """
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("torch", "onnx2torch")):
        raise InputError("--format torchscript needs torch and onnx2torch: pip install -r requirements-export.txt")
    with process_pool(1) as pool:
        task_result(submit_task(pool, trace_torchscript, str(onnx_path), str(path)))


def trace_torchscript(onnx_path, path):
    """(In the worker of write_torchscript) convert, trace at a batch of 2, save."""
    import torch
    from onnx2torch import convert

    with quiet():
        module = convert(onnx_path).eval()
        traced = torch.jit.trace(module, torch.zeros((2, 1, ei.LAYERS, ei.WIRES)))
    traced.save(path)


def run_exported(path, fmt, hits):
    """Probabilities [B,1,36,112] of the written file on hits, by onnxruntime or TorchScript."""
    if fmt == "torchscript":
        import torch

        with quiet():
            module = torch.jit.load(str(path))
        with torch.no_grad():
            return module(torch.from_numpy(hits)).numpy()
    return trained_model.OnnxModel(path).probabilities(hits[:, 0])[:, None]


def verification_hits(data, n):
    """n hit maps [n,1,36,112] float32: the first events of an HDF5 pairs file (an InputError if they have no hit),
    or synthetic ones."""
    if data:
        import h5py

        import data_management

        data_management.check_h5(data, splits=False)  # no split: any events verify
        with h5py.File(data, "r") as f:
            raw = ei.crop_event(f["raw"][:n])
        masks = ei.hit_mask(raw)
        if not masks.any():  # blank events agree whatever the file computes
            raise InputError(f"{data}: its first {len(masks)} events have no hit: nothing to verify the export on "
                             "(more --verify-events, or other --data)")
    else:
        import make_events

        masks = ei.hit_mask(make_events.generate_events(n, seed=0)[0])
    return masks[:, None].astype(np.float32)


TIE = 1e-6  # a probability this close to the threshold is a tie that float rounding decides either way


def verify(path, fmt, keras_model, hits, threshold):
    """Largest probability difference and count of differing hit decisions between the file and Keras (not
    counting ties: Keras' probability within TIE of the threshold)."""
    exported = run_exported(path, fmt, hits)
    expected = np.asarray(keras_model.predict(hits, batch_size=32, verbose=0))
    if exported.shape != hits.shape:
        raise InputError(f"{path}: the exported model returns {exported.shape} for {hits.shape}")
    invented = int(((exported > threshold) & (hits == 0)).sum())
    decided = np.abs(expected - threshold) > TIE
    differ = int((((exported > threshold) != (expected > threshold)) & decided).sum())
    return float(np.abs(exported - expected).max()), differ, invented


# --- Main ------------------------------------------------------------------------------------------
def build_parser():
    """The settings above, each overridable on the command line."""
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True,
                   help="trained generator: a .keras file, or a training output directory (its generator_best.keras)")
    p.add_argument("--output", required=True, help="the model file to write (.onnx, or .pt for torchscript)")
    p.add_argument("--format", choices=tuple(trained_model.EXPORT_SUFFIXES), default=FORMAT,
                   help="onnx, or torchscript for coatjava's DJL PyTorch engine (needs requirements-export.txt; "
                        "default %(default)s)")
    p.add_argument("--data", default=DATA, help="HDF5 pairs file whose first events verify the export "
                                                "(default: synthetic events)")
    p.add_argument("--verify-events", type=int, default=VERIFY_EVENTS,
                   help="events run through the file and the Keras model (default %(default)s)")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help="hit threshold stored with the export (default: the one chosen on validation)")
    p.add_argument("--overwrite", action="store_true", default=OVERWRITE, help="replace an existing output")
    return p


def parse_args(argv=None):
    """Command-line settings, checked."""
    args = build_parser().parse_args(argv)
    if args.verify_events < 1:
        raise InputError(f"--verify-events {args.verify_events}: must be at least 1")
    if args.threshold is not None and not args.threshold < 1:
        raise InputError(f"--threshold {args.threshold}: must be in [0, 1) (a probability above it keeps a hit)")
    output = Path(args.output)
    if output.suffix != trained_model.EXPORT_SUFFIXES[args.format]:
        raise InputError(f"{output}: a {args.format} model file ends with {trained_model.EXPORT_SUFFIXES[args.format]}")
    return args


def load_trained(path, args):
    """The Keras generator at path (args.model resolved), its training sidecar and the threshold to store."""
    if path.suffix != ".keras":
        raise InputError(f"{path}: export needs the trained .keras generator")
    model, info = trained_model.load_model(path)
    return model.model, info, trained_model.choose_threshold(args.threshold, info, path)


def sidecar_for(args, model_path, info, threshold, file_sha, check):
    """What the JSON beside the export records: interface, threshold, provenance, verification."""
    tensor = {"shape": list(ei.MODEL_TENSOR_SHAPE), "dtype": "float32"}
    source = {"threshold_source": "validation"} if args.threshold is None else {
        "threshold_source": "export --threshold", "validation_threshold": info.get("threshold")}
    return {"format": args.format, "file": Path(args.output).name, "sha256": file_sha, "threshold": threshold, **source,
            "decision": "probability > threshold keeps a hit",
            "input": dict(tensor, name=ei.MODEL_INPUT, meaning="1.0 at (layer-1, wire-1) of a hit, else 0.0"),
            "output": dict(tensor, name=ei.MODEL_OUTPUT, meaning="hit probability per wire, 0 where no input hit"),
            "layout": ei.LAYOUT, "source_model": str(model_path),
            "training": {k: info.get(k) for k in ("epoch", "step", "base_filters", "validation", "settings", "data")},
            "verification": check}


def export(args):
    """Write the model file and its sidecar, verified against Keras; return the sidecar's content."""
    output = Path(args.output)
    sidecar = output.with_suffix(".json")
    model_path = trained_model.resolve_model(args.model)
    inputs = {p.resolve() for p in (model_path, model_path.with_suffix(".json"), Path(args.data or model_path))}
    twins = [output.with_suffix(end) for end in trained_model.MODEL_SUFFIXES if end != output.suffix]
    twin = next((t for t in twins if t.exists()), None)
    if twin is not None and sidecar.exists():  # another model's (a training's .keras, another format's export)
        raise InputError(f"{sidecar}: the sidecar of {twin.name}, which it would no longer describe; give the "
                         f"{args.format} file a name of its own")
    for target in (output, sidecar):
        if target.resolve() in inputs:
            raise InputError(f"{target}: the export would replace one of its inputs")
        check_not_an_input(target, (model_path, model_path.with_suffix(".json"), args.data))  # links, folders too
        check_output_path(target, args.overwrite)
    generator, info, threshold = load_trained(model_path, args)
    hits = verification_hits(args.data, args.verify_events)
    try:
        wrapped = with_clas12_interface(generator, trained_model.output_views(info))
    except (IndexError, ValueError, AttributeError) as exc:  # the layers it takes apart are not there
        raise InputError(f"{model_path}: not a generator of Pix2Pix_training.py ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None
    metadata = {"threshold": threshold, "input": ei.MODEL_INPUT, "output": ei.MODEL_OUTPUT,
                "layout": json.dumps(ei.LAYOUT), "source_model": model_path.name}
    with atomic_output(output, args.overwrite, ext=trained_model.EXPORT_SUFFIXES[args.format]) as tmp, \
            atomic_output(sidecar, args.overwrite) as tmp_json:
        onnx_tmp = tmp if args.format == "onnx" else tmp.with_name(tmp.name + ".onnx")
        try:
            write_onnx(wrapped, onnx_tmp, metadata)
            if args.format == "torchscript":
                write_torchscript(onnx_tmp, tmp)
        finally:
            if onnx_tmp != tmp:
                onnx_tmp.unlink(missing_ok=True)
        max_diff, differ, invented = verify(tmp, args.format, wrapped, hits, threshold)
        check = {"events": len(hits), "max_probability_difference": max_diff, "decisions_differ": differ,
                 "invented_hits": invented}
        print(f"verified on {len(hits)} events: largest probability difference {max_diff:.2e}, "
              f"{differ} hit decisions differ at threshold {threshold:.3f} (ties within {TIE:g} aside), "
              f"{invented} hits invented")
        if differ or invented:
            raise InputError(f"{output}: the exported model disagrees with the Keras model ({differ} decisions "
                             f"differ, {invented} invented hits); nothing written")
        content = sidecar_for(args, model_path, info, threshold, trained_model.file_sha256(tmp), check)
        tmp_json.write_text(json.dumps(content, indent=1, default=float) + "\n")
    return content


def main(argv=None):
    """Export from the command line."""
    args = parse_args(argv)
    content = export(args)
    print(f"wrote {args.output} ({args.format}, threshold {content['threshold']:.3f}) and "
          f"{Path(args.output).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
