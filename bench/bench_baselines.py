"""How fast the baselines run: SNR batched vs one event at a time vs a plain-Python loop, and the
CAE's training and prediction rate at two batch sizes. All in one process, on synthetic events.

    python bench/bench_baselines.py [--events 5000] [--cae-events 256]
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import baselines as bl  # noqa: E402
import event_image as ei  # noqa: E402
import make_events  # noqa: E402
from script_utils import ArgumentParser, import_keras, run_main  # noqa: E402

EVENTS = 5000  # events for the batched SNR timing
LOOP_EVENTS = 500  # events for the one-at-a-time SNR timing
PLAIN_EVENTS = 10  # events for the plain-Python SNR timing
CAE_EVENTS = 256  # events per timed CAE epoch
CAE_BATCH_SIZES = (8, 32)
SEED = 5


def rate(fn, n, repeats=3):
    """Best events/s of fn() over a few repeats (fn handles n events)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def bench_snr(n_events):
    """SNR events/s: batched, one event per call, plain Python; checks they agree."""
    raw, truth = make_events.generate_masks(n_events, seed=SEED)
    batched = rate(lambda: bl.snr_keep(raw), n_events)
    loop = rate(lambda: [bl.snr_keep(e) for e in raw[:LOOP_EVENTS]], LOOP_EVENTS)
    plain = rate(lambda: [bl.snr_keep_plain(e) for e in raw[:PLAIN_EVENTS]], PLAIN_EVENTS, repeats=1)
    kept = bl.snr_keep(raw)
    assert all((bl.snr_keep_plain(raw[i]) == kept[i]).all() for i in range(PLAIN_EVENTS))
    s = ei.hit_scores(raw, truth, kept)
    print(f"SNR on {n_events} synthetic events: efficiency {s['efficiency']:.4f} rejection {s['rejection']:.4f}")
    print(f"  batched        {batched:10,.0f} events/s")
    print(f"  one per call   {loop:10,.0f} events/s   (batched is x{batched / loop:.1f})")
    print(f"  plain Python   {plain:10,.1f} events/s   (batched is x{batched / plain:,.0f})")


def bench_cae(n_events):
    """CAE training events/s per batch size (one warm-up epoch, then one timed) and prediction events/s."""
    keras = import_keras()
    raw, truth = make_events.generate_masks(n_events, seed=SEED)
    rates = {}
    for batch_size in CAE_BATCH_SIZES:
        keras.utils.set_random_seed(0)
        model = bl.build_cae()
        ds = bl._mask_dataset(raw, truth, batch_size, True, 0)
        model.fit(ds, epochs=1, verbose=0, shuffle=False)  # traces the graph
        rates[batch_size] = rate(lambda m=model, d=ds: m.fit(d, epochs=1, verbose=0, shuffle=False), n_events,
                                 repeats=1)
    predict = rate(lambda: bl.cae_keep(model, raw), n_events, repeats=2)
    base = rates[CAE_BATCH_SIZES[0]]
    print(f"CAE ({model.count_params():,} parameters) on {n_events} events:")
    for batch_size, r in rates.items():
        print(f"  train, batch {batch_size:3d} {r:8.1f} events/s  (x{r / base:.2f} of batch {CAE_BATCH_SIZES[0]}; "
              f"{3000 / r:.0f} s per epoch of 3000 events)")
    print(f"  cae_keep       {predict:8.1f} events/s")


def main(argv=None):
    """Run both benchmarks and print their figures."""
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=EVENTS, help="events for the batched SNR timing")
    p.add_argument("--cae-events", type=int, default=CAE_EVENTS, help="events per timed CAE epoch (0: skip)")
    args = p.parse_args(argv)
    if args.events < 1:
        p.error(f"--events must be at least 1, not {args.events}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    bench_snr(args.events)
    if args.cae_events:
        bench_cae(args.cae_events)


if __name__ == "__main__":
    run_main(main)
