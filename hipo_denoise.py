"""Denoise a CLAS12 HIPO file as coatjava's DC denoising engine does (what `Pix2Pix_denoise.py --hipo` runs).

The output is a copy of the input, event for event and bank for bank, where only the `order` of
the DC::tdc / DC::tot rows on the hits the model rejects changes (0 -> 40, 10 -> 70:
clas12_hipo.rewrite_orders). The model sees every sector with hits of orders 0 and 10. With an
evaluation, the sectors with TimeBasedTrkg::TBHits hits are scored against them (truth = the TBHits
hits that are raw hits), as Pix2Pix_data.py --hipo would make their pairs; the other sectors are
denoised but not scored.

    import hipo_denoise
    counts = hipo_denoise.denoise_hipo(model, 0.5, "run.hipo", "run_denoised.hipo")
"""

import itertools
from pathlib import Path

import numpy as np

import clas12_hipo as ch
from script_utils import InputError, check_not_an_input, check_output_path, progress
from trained_model import kept_hits, predicted

BATCHES_PER_READ = 2  # events read (and rewritten) at once: this many model batches' worth (at least
#                       the batches the model runs at once: its concurrent_batches)


class SectorTruth:
    """TBHits truth of the sector images that rewrite_orders hands to the model, read in step with it.

    rewrite_orders passes, event after event, every sector with raw hits; read_sector_events with
    keep_sectors_without_truth yields the same sectors (and sectors with TBHits hits but no raw
    hits, skipped here) in the same order, with their names, truth and track ids."""

    def __init__(self, path):
        self.path = path
        self.records = ch.read_sector_events(path, keep_sectors_without_truth=True)
        self.unscored = 0  # sectors denoised without TBHits hits

    def take(self, masks):
        """(names, truth, track ids, scored) for the next len(masks) sector images; scored: has TBHits hits on
        raw hits (the truth)."""
        records = []
        for mask in masks:
            record = next((r for r in self.records if r.raw.any()), None)
            if record is None or not np.array_equal(record.raw, mask):
                raise RuntimeError(f"{self.path}: the truth reader lost step with the denoised sectors")
            records.append(record)
        truth = np.stack([r.paired_truth() for r in records])
        scored = truth.any(axis=(1, 2))
        self.unscored += int((~scored).sum())
        ids = np.stack([r.paired_track_ids() for r in records])
        return [r.name for r in records], truth, ids, scored


def check_job(in_path, out_path, overwrite, evaluate):
    """Refuse a bad input or output before the model loads (InputError naming the file and the event).

    Reads the file up to its first sector with hits: a file without DC banks, or with a bad row in
    its first events, stops here. With evaluate, a file without a sector with DC hits or without a
    TBHits bank stops here too, and the file is read on (in the same pass) up to its first sector
    with raw and TBHits hits, the sectors SectorTruth scores: without one there is nothing to score."""
    in_path, out_path = Path(in_path), Path(out_path)
    ch.check_hipo_file(in_path)
    check_not_an_input(out_path, [in_path])
    check_output_path(out_path, overwrite)
    records = ch.read_sector_events(in_path, keep_sectors_without_truth=True)
    first = next(records, None)
    if not evaluate:
        return
    if first is None:
        raise InputError(f"{in_path}: no sector has DC hits: nothing to score (drop --evaluate to denoise it)")
    if first.truth is None:
        raise InputError(f"{in_path}: no {ch.TBHITS.name} bank to score against (--evaluate)")
    if not any(r.paired_truth().any() for r in itertools.chain([first], records)):
        raise InputError(f"{in_path}: no sector with DC hits has {ch.TBHITS.name} hits on them: nothing to score "
                         "(drop --evaluate to denoise it)")


def denoise_hipo(model, threshold, in_path, out_path, *, batch_size=32, gate=False, overwrite=False,
                 evaluation=None, baselines=None):
    """Write out_path: in_path with the hits the model rejects marked (orders 40/70); return the counts.

    model.probabilities(hit maps) -> probabilities; a hit is kept when its probability is above
    threshold; a model with concurrent_batches N > 1 (an .onnx model) predicts N batches at once.
    evaluation: a HitEvaluation fed the model (gated by the raw hits if gate) and the baselines
    ({name: keep function}) on the sectors with TBHits hits. Counts: rewrite_orders' (events, hits,
    rejected, rows_rewritten, events_without_dc_hits), sectors and unscored_sectors."""
    truth = SectorTruth(in_path) if evaluation is not None else None
    bar = progress(desc="denoising", unit="sector")
    sectors = 0

    def decide(masks):
        nonlocal sectors
        kept = np.empty_like(masks)
        batches = ((at, masks[at:at + batch_size]) for at in range(0, len(masks), batch_size))
        for (at, raw), prob in predicted(model, batches):
            keep = kept_hits(prob, raw, threshold, gate)
            kept[at:at + batch_size] = keep
            if truth is not None:
                names, true, ids, scored = truth.take(raw)
                if scored.any():
                    evaluation.add_model(raw[scored], true[scored], keep[scored], prob[scored],
                                         [n for n, s in zip(names, scored, strict=True) if s], ids[scored], baselines)
        sectors += len(masks)
        bar.update(len(masks))
        return kept

    with bar:
        per_read = max(BATCHES_PER_READ, getattr(model, "concurrent_batches", 1)) * batch_size
        counts = ch.rewrite_orders(in_path, out_path, decide, batch_events=per_read, overwrite=overwrite)
    return dict(counts, sectors=sectors, unscored_sectors=truth.unscored if truth else 0)


def summary_line(counts, out_path):
    """The line a run ends with: events, sectors, hits rejected and rows marked."""
    share = counts["rejected"] / max(counts["hits"], 1)
    unscored = (f"; {counts['unscored_sectors']} sectors without TBHits hits not scored"
                if counts["unscored_sectors"] else "")
    return (f"wrote {out_path}: {counts['events']} events ({counts['events_without_dc_hits']} without DC hits), "
            f"{counts['sectors']} sectors denoised, {counts['rejected']} of {counts['hits']} hits rejected "
            f"({100 * share:.1f} %), {counts['rows_rewritten']} DC rows marked (order 0 -> 40, 10 -> 70){unscored}")
