"""Score saved model outputs of a test split against the baselines, as Pix2Pix_denoise --evaluate does.

For a model trained where its weights cannot be brought back (bench/train_jax.py on a lent GPU
machine writes only test_probabilities.npz and best.json), this runs evaluation.py's hit-level
scoring on those outputs: the same events, the same evaluation, baselines and report.

    python bench/score_probabilities.py --data data/pairs.h5 --run runs/jax64 --baseline-cae --cae-epochs 10
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import baselines  # noqa: E402
import data_management  # noqa: E402
import evaluation  # noqa: E402
import pairs_h5  # noqa: E402
from script_utils import ArgumentParser, InputError, run_main  # noqa: E402


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the HDF5 file the model's test split came from")
    p.add_argument("--run", required=True, help="folder with test_probabilities.npz and best.json")
    p.add_argument("--probabilities", default="test_probabilities.npz",
                   help="file in RUN holding the outputs of --data's test split")
    p.add_argument("--cae-data", default=None, help="HDF5 file the CAE is trained on (default: --data)")
    p.add_argument("--threshold", type=float, default=None, help="default: best.json's (chosen on validation)")
    p.add_argument("--baseline-cae", action="store_true")
    p.add_argument("--cae-epochs", type=int, default=None)
    p.add_argument("--report", default=None, help="report prefix (default: RUN/PROBABILITIES_STEM.report)")
    p.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run = Path(args.run)
    info = json.loads((run / "best.json").read_text())
    threshold = info["threshold"] if args.threshold is None else args.threshold
    prob = np.load(run / args.probabilities)["probabilities"].astype(np.float32)
    test = data_management.load_split(args.data)["test"]
    if len(test) != len(prob):
        raise InputError(f"{run}: {len(prob)} outputs for a test split of {len(test)} events")
    raw, truth = baselines.read_masks(args.data, test)
    cae_data = (args.cae_data or args.data) if args.baseline_cae else None
    keep = {"model": prob > threshold,
            **{m: f(raw) for m, f in evaluation.baseline_keeps(cae_data, epochs=args.cae_epochs).items()}}
    result = evaluation.evaluate(raw, truth, keep, prob, track_ids=pairs_h5.read_track_ids(args.data, test))
    source = "validation" if args.threshold is None else "--threshold"
    print(f"{run}: epoch {info['epoch']}, width {info['base_filters']}, threshold {threshold:.2f} ({source})")
    report = Path(args.report or run / (Path(args.probabilities).stem + ".report"))
    evaluation.finish_report(result, threshold, report, args.overwrite,
                             {"model": str(run), "model_info": info, "input": args.data})
    return 0


if __name__ == "__main__":
    run_main(main)
