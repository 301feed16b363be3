"""Benchmark of Pix2Pix_denoise.py: events per second on a folder of PNG events.

For each generator width (untrained generators from pix2pix_model.build_generator, saved as
.keras with a sidecar threshold, so the real loading path is used):
  - end to end: Pix2Pix_denoise.main on the folder, in this process (check the inputs, load the
    model, read the hit maps, pad, predict, crop, threshold, write one PNG per event atomically);
  - model only: the generator's predict_on_batch on padded float32 batches already in memory.
The ratio end-to-end / model-only says how much the file work costs on top of the network.
The events are split into ROUNDS folders and the two measurements alternate round by round, so
that a change in the machine's load (a shared machine) hits both alike; the rates are the
totals over all rounds, and the per-round ratios are printed too.

    python bench/bench_denoise.py                      # 5,000 events, widths 64 and 16
    python bench/bench_denoise.py --events 500 --widths 16
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

import numpy as np  # noqa: E402

import event_image as ei  # noqa: E402
import make_events  # noqa: E402
import Pix2Pix_denoise  # noqa: E402
import pix2pix_model as pm  # noqa: E402
from script_utils import import_keras  # noqa: E402

keras = import_keras()  # TensorFlow imported quietly, first

EVENTS = 5000
WIDTHS = (64, 16)
BATCH_SIZE = Pix2Pix_denoise.BATCH_SIZE
PRECISION = "float32"  # or mixed_bfloat16 (CPUs with bf16 units)
ROUNDS = 3  # alternations of end-to-end and model-only runs
MODEL_POOL = 8  # distinct padded batches cycled through for the model-only timing
SEED = 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=EVENTS, help=f"PNG events in the folder (default {EVENTS})")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="generator base_filters, comma-separated")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--rounds", type=int, default=ROUNDS, help="alternations of the two measurements")
    p.add_argument("--precision", default=PRECISION, choices=("float32", "mixed_bfloat16"),
                   help="Keras dtype policy of the generators")
    return p.parse_args(argv)


def write_events(folders, n):
    """n synthetic raw event PNGs (make_events), dealt round-robin into the folders; returns the seconds."""
    for folder in folders:
        folder.mkdir()
    t0 = time.perf_counter()
    for start in range(0, n, 1024):
        raw, _ = make_events.generate_events(min(1024, n - start), seed=SEED, start=start)
        for i, img in enumerate(raw):
            ei.write_event_png(folders[(start + i) % len(folders)] / make_events.event_name(start + i), img)
    return time.perf_counter() - t0


def save_generator(path, width):
    """An untrained generator of this width, saved as Pix2Pix_training exports it (threshold 0.5)."""
    keras.utils.set_random_seed(SEED)
    model = pm.build_generator(base_filters=width)
    model.save(path)
    path.with_suffix(".json").write_text(json.dumps({"threshold": 0.5, "base_filters": width}))
    return model.count_params()


def time_model_only(model, n, batch_size):
    """Seconds of predict_on_batch alone for n events, on padded float32 batches already in memory."""
    raw, _ = make_events.generate_events(MODEL_POOL * batch_size, seed=SEED + 1)
    pool = (ei.pad_event(raw).astype(np.float32) / 255.0).reshape(MODEL_POOL, batch_size, *ei.LAYOUT["padded_shape"])
    model.predict_on_batch(pool[0])  # warm-up: builds the predict function
    t0 = time.perf_counter()
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        model.predict_on_batch(pool[(done // batch_size) % MODEL_POOL][:b])
        done += b
    return time.perf_counter() - t0


def main(argv=None):
    args = parse_args(argv)
    keras.mixed_precision.set_dtype_policy(args.precision)
    widths = [int(w) for w in args.widths.split(",")]
    print(f"{args.events} PNG events, batch {args.batch_size}, {args.precision}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench_denoise_") as tmp:
        tmp = Path(tmp)
        folders = [tmp / f"raw_{r}" for r in range(args.rounds)]
        secs = write_events(folders, args.events)
        print(f"writing the input PNGs (make_events + write_event_png): {args.events / secs:.0f} events/s")
        rows = []
        for w in widths:
            model_path = tmp / f"generator_w{w}.keras"
            params = save_generator(model_path, w)
            model = Pix2Pix_denoise.load_model(model_path)[0].model  # the Keras model, for the model-only timing
            e2e_s = model_s = 0.0
            ratios = []
            for r, folder in enumerate(folders):
                n = len(list(folder.glob("*.png")))
                t0 = time.perf_counter()
                Pix2Pix_denoise.main(["--model", str(model_path), "--input-dir", str(folder), "--output-dir",
                         str(tmp / f"out_w{w}_{r}"), "--batch-size", str(args.batch_size)])
                e2e = time.perf_counter() - t0
                assert len(list((tmp / f"out_w{w}_{r}").glob("*.png"))) == n
                only = time_model_only(model, n, args.batch_size)
                e2e_s, model_s = e2e_s + e2e, model_s + only
                ratios.append(only / e2e)
                print(f"width {w} round {r + 1}: {n} events, end to end {n / e2e:.1f} events/s, "
                      f"model only {n / only:.1f} events/s", flush=True)
            rows.append((w, params, args.events / e2e_s, args.events / model_s, ratios))
    print(f"\n{'width':>5} {'params':>11} {'end-to-end ev/s':>16} {'model-only ev/s':>16} {'e2e/model':>10}"
          "  per round")
    for w, params, e2e, model_only, ratios in rows:
        print(f"{w:>5} {params:>11,} {e2e:>16.1f} {model_only:>16.1f} {e2e / model_only:>10.2f}  "
              + " ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main()
