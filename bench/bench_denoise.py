"""Benchmark of denoising speed: sector images per second, end to end and model only.

For each generator width, the same events go through:
  - keras-float32 / keras-bfloat16: the .keras generator (trained_model.KerasModel) under TensorFlow;
  - onnx: its export (Pix2Pix_export.py) under onnxruntime, default session (all graph
    optimisations, a thread per core); onnx-1thread: one intra-op thread; onnx-int8: the export
    after onnxruntime's dynamic int8 quantisation (its decisions are compared with float32's);
  - the CLAS12 auto-encoder (baselines.py) on the same hit maps, as the reference rate.
Model only: `probabilities(hit maps)` on batches already in memory. End to end:
Pix2Pix_denoise.main on a folder of PNG events (list, check, read, predict, write one PNG per
event). Variants alternate round by round, so a change in a shared machine's load hits all alike.
Without --model the generators are untrained (speed does not depend on the weights; the int8
agreement then means little): give a trained run for that.

    python bench/bench_denoise.py                          # 1,000 events, widths 16, 32, 64
    python bench/bench_denoise.py --events 500 --widths 16 --model runs/pix2pix
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import baselines  # noqa: E402
import event_image as ei  # noqa: E402
import make_events  # noqa: E402
import Pix2Pix_denoise  # noqa: E402
import Pix2Pix_export  # noqa: E402
import pix2pix_model as pm  # noqa: E402
import trained_model  # noqa: E402
from script_utils import import_keras  # noqa: E402

keras = import_keras()  # TensorFlow imported quietly, first

EVENTS = 1000
WIDTHS = (16, 32, 64)
BATCH_SIZE = Pix2Pix_denoise.BATCH_SIZE
ROUNDS = 2
SEED = 0
VARIANTS = ("keras-float32", "keras-bfloat16", "onnx", "onnx-1thread", "onnx-int8")
END_TO_END = ("keras-float32", "onnx", "onnx-int8")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=EVENTS, help=f"sector images per variant (default {EVENTS})")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="generator base_filters, comma-separated")
    p.add_argument("--model", help="a trained run or .keras generator: benchmarked instead of untrained ones")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--rounds", type=int, default=ROUNDS, help="alternations of the variants")
    return p.parse_args(argv)


def generator_files(folder, width, trained):
    """.keras files (float32 and bfloat16) of one generator and its float32 and int8 ONNX exports."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if trained:
        path = trained_model.resolve_model(trained)
        generator = keras.models.load_model(path, compile=False)
        info = trained_model.read_sidecar(path)
        width, threshold = info["base_filters"], trained_model.choose_threshold(None, info, path)
    else:
        keras.utils.set_random_seed(SEED)
        generator, threshold = pm.with_raw_hit_gate(pm.build_generator(width)), 0.5
    files = {"keras-float32": folder / f"w{width}.keras", "keras-bfloat16": folder / f"w{width}_bf16.keras",
             "onnx": folder / f"w{width}.onnx", "onnx-int8": folder / f"w{width}_int8.onnx"}
    generator.save(files["keras-float32"])
    with pm.dtype_policy("mixed_bfloat16"):
        bf16 = pm.with_raw_hit_gate(pm.build_generator(width))
    bf16.set_weights(generator.get_weights())
    bf16.save(files["keras-bfloat16"])
    Pix2Pix_export.write_onnx(Pix2Pix_export.with_clas12_interface(generator), files["onnx"], {"threshold": threshold})
    quantize_dynamic(str(files["onnx"]), str(files["onnx-int8"]), weight_type=QuantType.QInt8)
    for path in files.values():
        path.with_suffix(".json").write_text(json.dumps({"threshold": threshold}))
    return files, threshold, generator.count_params()


def load_variants(files):
    """{variant: object with .probabilities(hit maps)}: the denoiser's own model classes."""
    import onnxruntime

    models = {name: trained_model.load_model(path)[0] for name, path in files.items()}
    one = onnxruntime.SessionOptions()
    one.intra_op_num_threads = 1
    models["onnx-1thread"] = trained_model.OnnxModel(files["onnx"])
    models["onnx-1thread"].session = onnxruntime.InferenceSession(str(files["onnx"]), one,
                                                                  providers=["CPUExecutionProvider"])
    return models


def time_model(probabilities, maps, batch_size):
    """Seconds to run probabilities() over maps in batches (after one warm-up batch)."""
    probabilities(maps[:batch_size])
    t0 = time.perf_counter()
    for start in range(0, len(maps), batch_size):
        probabilities(maps[start:start + batch_size])
    return time.perf_counter() - t0


def time_end_to_end(model_path, folder, out, batch_size):
    """Seconds of Pix2Pix_denoise.main on a PNG folder."""
    t0 = time.perf_counter()
    Pix2Pix_denoise.main(["--model", str(model_path), "--input-dir", str(folder), "--output-dir", str(out),
                          "--batch-size", str(batch_size)])
    return time.perf_counter() - t0


def agreement(models, maps, threshold):
    """Share of hit decisions on which int8 and float32 ONNX differ (over all raw hits)."""
    a = models["onnx"].probabilities(maps) > threshold
    b = models["onnx-int8"].probabilities(maps) > threshold
    return float((a != b).sum() / max(maps.sum(), 1))


def bench_width(width, args, tmp, maps, folders):
    """Rates (sector images/s) of every variant at one width; prints each round."""
    folder = tmp / f"w{width}"
    folder.mkdir()
    files, threshold, params = generator_files(folder, width, args.model)
    models = load_variants(files)
    per_round = len(maps) // args.rounds
    model_s = dict.fromkeys(VARIANTS, 0.0)
    e2e_s = dict.fromkeys(END_TO_END, 0.0)
    for r in range(args.rounds):
        chunk = maps[r * per_round:(r + 1) * per_round]
        for v in VARIANTS:
            model_s[v] += time_model(models[v].probabilities, chunk, args.batch_size)
        for v in END_TO_END:
            e2e_s[v] += time_end_to_end(files[v], folders[r], tmp / f"out_w{width}_{v}_{r}", args.batch_size)
        print(f"width {width} round {r + 1}: " + ", ".join(f"{v} {per_round / (model_s[v] / (r + 1)):.0f}"
                                                             for v in VARIANTS) + " images/s (model only)", flush=True)
    n = per_round * args.rounds
    return {"params": params, "model": {v: n / s for v, s in model_s.items()},
            "end_to_end": {v: n / s for v, s in e2e_s.items()}, "int8_differ": agreement(models, maps, threshold)}


def main(argv=None):
    args = parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")] if not args.model else ["trained"]
    raw, _ = make_events.generate_events(args.events, seed=SEED)
    maps = ei.hit_mask(raw)
    print(f"{args.events} sector images, batch {args.batch_size}, {os.cpu_count()} CPUs, {args.rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="bench_denoise_") as tmp:
        tmp = Path(tmp)
        folders = [tmp / f"raw_{r}" for r in range(args.rounds)]
        per_round = args.events // args.rounds
        for r, folder in enumerate(folders):
            folder.mkdir()
            for i in range(r * per_round, (r + 1) * per_round):
                ei.write_event_png(folder / make_events.event_name(i), raw[i])
        cae = baselines.build_cae()
        cae_s = time_model(lambda m: baselines.cae_keep(cae, m, batch_size=args.batch_size), maps, args.batch_size)
        cae_rate = len(maps) / cae_s
        print(f"CLAS12 CAE (model only): {cae_rate:.0f} images/s", flush=True)
        rows = {w: bench_width(w, args, tmp, maps, folders) for w in widths}
    print(f"\nsector images/s (ratio to the CAE's {cae_rate:.0f}/s, model only)")
    print(f"{'width':>7} {'variant':>15} {'model only':>11} {'x CAE':>6} {'end to end':>11} {'x CAE':>6}")
    for w, row in rows.items():
        for v in VARIANTS:
            e2e = row["end_to_end"].get(v)
            e2e_text = f"{e2e:>11.0f} {e2e / cae_rate:>6.2f}" if e2e else f"{'-':>11} {'':>6}"
            print(f"{w!s:>7} {v:>15} {row['model'][v]:>11.0f} {row['model'][v] / cae_rate:>6.2f} {e2e_text}")
        print(f"{w!s:>7} int8 vs float32 ONNX: {100 * row['int8_differ']:.3f} % of hit decisions differ "
              f"({row['params']:,} parameters)")


if __name__ == "__main__":
    main()
