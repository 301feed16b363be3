"""Benchmark of denoising speed: sector images per second, end to end and model only.

For each generator width, the same events go through:
  - keras-float32 / keras-bfloat16: the .keras generator (trained_model.KerasModel) under TensorFlow;
  - onnx: its export (Pix2Pix_export.py) under onnxruntime, default session (all graph
    optimisations, a thread per core), one batch at a time; onnx-1thread: one thread;
    onnx-Nx1thread: N batches at once, each on one thread (what Pix2Pix_denoise does with an
    .onnx model: --threads, default one per core); onnx-int8: the export after onnxruntime's
    dynamic int8 quantisation (its decisions are compared with float32's); onnx-mirror-Nx1thread:
    the export of a run trained with --mirror-average (the U-Net run on the event and on its mirror);
  - the CLAS12 auto-encoder (baselines.py) on the same hit maps, as the reference rate.
Model only: `probabilities(hit maps)` on batches already in memory. End to end:
Pix2Pix_denoise.main on a folder of PNG events (list, check, read, predict, write one PNG per
event; the onnx variants with --threads 1 or N, so plain onnx has no end-to-end rate). Variants
alternate round by round, so a change in a shared machine's load hits all alike.
Without --model the generators are untrained (speed does not depend on the weights; the int8
agreement then means little): give a trained run for that.

    python bench/bench_denoise.py                          # 1,000 events, widths 16, 32, 64
    python bench/bench_denoise.py --events 500 --model runs/pix2pix   # a trained run (its width)
"""

import collections
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from script_utils import ArgumentParser, InputError, import_keras, run_main  # noqa: E402

keras = import_keras()  # TensorFlow imported quietly, before the modules that use it

import baselines  # noqa: E402
import event_image as ei  # noqa: E402
import make_events  # noqa: E402
import Pix2Pix_denoise  # noqa: E402
import Pix2Pix_export  # noqa: E402
import pix2pix_model as pm  # noqa: E402
import trained_model  # noqa: E402

EVENTS = 1000
WIDTHS = (16, 32, 64)
BATCH_SIZE = Pix2Pix_denoise.BATCH_SIZE
ROUNDS = 2
SEED = 0
CONCURRENT = "onnx-Nx1thread"  # named after --threads in the table
MIRROR = "onnx-mirror-Nx1thread"
VARIANTS = ("keras-float32", "keras-bfloat16", "onnx", "onnx-1thread", CONCURRENT, "onnx-int8", MIRROR)
END_TO_END = {"keras-float32": 0, "onnx-1thread": 1, CONCURRENT: 0, "onnx-int8": 0, MIRROR: 0}  # -> --threads (0: N)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=EVENTS, help=f"sector images per variant (default {EVENTS})")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="generator base_filters, comma-separated")
    p.add_argument("--model", help="a trained run or .keras generator: benchmarked instead of untrained ones")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--rounds", type=int, default=ROUNDS, help="alternations of the variants")
    p.add_argument("--threads", type=int, default=trained_model.cpu_cores(),
                   help="N of onnx-Nx1thread: batches at once, each on one thread (default: the CPU cores)")
    args = p.parse_args(argv)
    if not all(w.strip().isdigit() and int(w) > 0 for w in args.widths.split(",")):
        p.error(f"--widths {args.widths}: whole numbers above 0, comma-separated")
    if args.rounds < 1 or args.events < 2 * args.rounds or args.batch_size < 1 or args.threads < 1:
        p.error("need --rounds, --batch-size and --threads at least 1 and --events at least 2 per round")
    if args.model and trained_model.resolve_model(args.model).suffix != ".keras":  # before minutes of timings
        p.error(f"--model {args.model}: a trained run or .keras generator (the benchmark makes its own exports)")
    return args


def generator_files(folder, width, trained):
    """.keras files (float32 and bfloat16) of one generator and its float32 and int8 ONNX exports."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if trained:
        path = trained_model.resolve_model(trained)
        generator = keras.models.load_model(path, compile=False)
        info = trained_model.read_sidecar(path)
        if not isinstance(info.get("base_filters"), int):
            raise InputError(f"{path.with_suffix('.json')}: no base_filters (not a training run's sidecar)")
        width, threshold = info["base_filters"], trained_model.choose_threshold(None, info, path)
        gated = trained_model.training_settings(info).get("gate_by_raw_hits", True)
    else:
        keras.utils.set_random_seed(SEED)
        generator, threshold, gated = pm.with_raw_hit_gate(pm.build_generator(width)), 0.5, True
    files = {"keras-float32": folder / f"w{width}.keras", "keras-bfloat16": folder / f"w{width}_bf16.keras",
             "onnx": folder / f"w{width}.onnx", "onnx-int8": folder / f"w{width}_int8.onnx",
             MIRROR: folder / f"w{width}_mirror.onnx"}
    generator.save(files["keras-float32"])
    with pm.dtype_policy("mixed_bfloat16"):
        bf16 = pm.build_generator(width)
        bf16 = pm.with_raw_hit_gate(bf16) if gated else bf16
    bf16.set_weights(generator.get_weights())
    bf16.save(files["keras-bfloat16"])
    Pix2Pix_export.write_onnx(Pix2Pix_export.with_clas12_interface(generator), files["onnx"], {"threshold": threshold})
    quantize_dynamic(str(files["onnx"]), str(files["onnx-int8"]), weight_type=QuantType.QInt8)
    Pix2Pix_export.write_onnx(Pix2Pix_export.with_clas12_interface(generator, {"mirror": True}), files[MIRROR],
                              {"threshold": threshold})
    for path in files.values():
        path.with_suffix(".json").write_text(json.dumps({"threshold": threshold}))
    return files, threshold, generator.count_params(), width


def load_variants(files, threads):
    """{variant: object with .probabilities(hit maps)}: the denoiser's own model classes."""
    models = {name: trained_model.load_model(path)[0] for name, path in files.items()}
    models["onnx-1thread"] = trained_model.OnnxModel(files["onnx"], threads=1)
    models[CONCURRENT] = trained_model.OnnxModel(files["onnx"], threads=threads)
    models[MIRROR] = trained_model.OnnxModel(files[MIRROR], threads=threads)
    return models


def timed(work):
    """(wall seconds, CPU seconds of this process's threads) of work()."""
    cpu, wall = os.times(), time.perf_counter()
    work()
    end = os.times()
    return np.array([time.perf_counter() - wall, end.user - cpu.user + end.system - cpu.system])


def time_model(model, maps, batch_size):
    """(wall, CPU) seconds to predict maps batch by batch as Pix2Pix_denoise does (after a warm-up batch)."""
    model.probabilities(maps[:batch_size])
    batches = ((None, maps[start:start + batch_size]) for start in range(0, len(maps), batch_size))
    return timed(lambda: collections.deque(trained_model.predicted(model, batches), maxlen=0))


def time_end_to_end(model_path, folder, out, batch_size, threads):
    """(wall, CPU) seconds of Pix2Pix_denoise.main on a PNG folder."""
    return timed(lambda: Pix2Pix_denoise.main(["--model", str(model_path), "--input-dir", str(folder), "--output-dir",
                                               str(out), "--batch-size", str(batch_size), "--threads", str(threads)]))


def agreement(models, maps, threshold):
    """Share of hit decisions on which int8 and float32 ONNX differ (over all raw hits)."""
    a = models["onnx"].probabilities(maps) > threshold
    b = models["onnx-int8"].probabilities(maps) > threshold
    return float((a != b).sum() / max(maps.sum(), 1))


def bench_width(width, args, tmp, maps, folders):
    """Rates (sector images/s) of every variant at one width; prints each round."""
    folder = tmp / f"w{width}"
    folder.mkdir()
    files, threshold, params, width = generator_files(folder, width, args.model)
    models = load_variants(files, args.threads)
    per_round = len(maps) // args.rounds
    model_s = {v: np.zeros(2) for v in VARIANTS}  # wall and CPU seconds
    e2e_s = {v: np.zeros(2) for v in END_TO_END}
    for r in range(args.rounds):
        chunk = maps[r * per_round:(r + 1) * per_round]
        this_round = {}
        for v in VARIANTS:
            this_round[v] = time_model(models[v], chunk, args.batch_size)
            model_s[v] += this_round[v]
        for v, threads in END_TO_END.items():
            this_round[f"{v} end to end"] = time_end_to_end(files.get(v, files["onnx"]), folders[r],
                                                            tmp / f"out_w{width}_{v}_{r}", args.batch_size,
                                                            threads or args.threads)
            e2e_s[v] += this_round[f"{v} end to end"]
        print(f"width {width} round {r + 1} (images/s, CPU ms/image): " + ", ".join(
            f"{name(v, args)} {per_round / wall:.0f} {1000 * cpu / per_round:.2f}"
            for v, (wall, cpu) in this_round.items()), flush=True)
    n = per_round * args.rounds
    return {"width": f"{width}{' trained' if args.model else ''}", "params": params,
            "model": {v: (n / s[0], 1000 * s[1] / n) for v, s in model_s.items()},
            "end_to_end": {v: (n / s[0], 1000 * s[1] / n) for v, s in e2e_s.items()},
            "int8_differ": agreement(models, maps, threshold)}


def name(variant, args):
    """The variant as the table shows it (onnx-Nx1thread with N = --threads)."""
    return variant.replace("-N", f"-{args.threads}")


def main(argv=None):
    args = parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")] if not args.model else ["trained"]
    raw, _ = make_events.generate_events(args.events, seed=SEED)
    maps = ei.hit_mask(raw)
    print(f"{args.events} sector images, batch {args.batch_size}, {os.cpu_count()} CPUs, {args.rounds} rounds, "
          f"--threads {args.threads}")
    with tempfile.TemporaryDirectory(prefix="bench_denoise_") as tmp:
        tmp = Path(tmp)
        folders = [tmp / f"raw_{r}" for r in range(args.rounds)]
        per_round = args.events // args.rounds
        for r, folder in enumerate(folders):
            folder.mkdir()
            for i in range(r * per_round, (r + 1) * per_round):
                ei.write_event_png(folder / make_events.event_name(i), raw[i])
        cae = baselines.build_cae()
        batch = args.batch_size
        cae_model = types.SimpleNamespace(probabilities=lambda m: baselines.cae_keep(cae, m, batch_size=batch))
        cae_rate = len(maps) / time_model(cae_model, maps, args.batch_size)[0]
        print(f"CLAS12 CAE (model only): {cae_rate:.0f} images/s", flush=True)
        rows = [bench_width(w, args, tmp, maps, folders) for w in widths]
    print(f"\nsector images/s (ratio to the CAE's {cae_rate:.0f}/s, model only) and CPU ms per image (this "
          "process, all its threads: with other jobs on the machine the rates are floors; C free cores could "
          "do at most C * 1000 / (CPU ms) images/s)")
    print(f"{'width':>10} {'variant':>21} {'model only':>11} {'x CAE':>6} {'CPU ms':>6} {'end to end':>11} "
          f"{'x CAE':>6} {'CPU ms':>6}")
    for row in rows:
        w = row["width"]
        for v in VARIANTS:
            cells = []
            for rate, cpu in (row["model"][v], row["end_to_end"].get(v, (None, None))):
                cells.append(f"{rate:>11.0f} {rate / cae_rate:>6.2f} {cpu:>6.2f}" if rate else f"{'-':>11} {'':>13}")
            print(f"{w:>10} {name(v, args):>21} {' '.join(cells)}")
        print(f"{w:>10} int8 vs float32 ONNX: {100 * row['int8_differ']:.3f} % of hit decisions differ "
              f"({row['params']:,} parameters)")


if __name__ == "__main__":
    run_main(main)
