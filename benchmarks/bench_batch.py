"""Batch throughput: plans per hour with 1 and 2 local Dask workers, and the scaling efficiency.

Run: python benchmarks/bench_batch.py [--n 3] [--sites hn,lung] [--techniques imrt9]
     [--spacing 3,2.5,2.5] [--iterations 5] [--optimizer-iterations 150] [--dose-grid 4] [--workers 1 2]

A synthetic cohort (``--n`` patients per site) is planned with each
technique by :func:`airtp.batch.run_batch` into a fresh folder, once per
worker count, on a local cluster of processes with one OpenMP thread each.
The cluster is started and its workers have imported the planning code
before the clock starts: a real batch pays that once for thousands of plans.
Printed per worker count: plans, wall time, plans per hour; then the scaling
efficiency (rate with N workers / (N x rate with 1)). The load average is
printed too: on a shared machine other work takes cores from the workers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from airtp.batch import BatchOptions, run_batch, write_phantom_cohort
from airtp.batch.runner import _open_client
from airtp.planning import PlanSettings


def _warm() -> None:
    """Imports a worker pays once: the pipeline, the report figures."""
    import matplotlib.backends.backend_agg  # noqa: F401

    import airtp.planning.outputs  # noqa: F401
    import airtp.report  # noqa: F401


def _spacing(text: str):
    return tuple(float(v) for v in text.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3, help="patients per site (default 3)")
    ap.add_argument("--sites", default="hn,lung")
    ap.add_argument("--techniques", default="imrt9")
    ap.add_argument("--spacing", default="3,2.5,2.5", help="phantom voxel spacing Z,Y,X mm (default 3,2.5,2.5)")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--optimizer-iterations", type=int, default=150)
    ap.add_argument("--dose-grid", type=float, default=4.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    settings = PlanSettings(iterations=args.iterations, dose_grid_mm=args.dose_grid,
                            optimizer_options={"max_iterations": args.optimizer_iterations})
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        cohort = Path(tmp) / "cohort"
        for site in args.sites.split(","):
            write_phantom_cohort(site, args.n, cohort, spacing_mm=_spacing(args.spacing))
        print(f"cohort: {args.n} patients x {args.sites}, techniques {args.techniques}, spacing {args.spacing} mm, "
              f"{args.iterations} refinement iterations, {args.optimizer_iterations} optimiser iterations, "
              f"dose grid {args.dose_grid} mm; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        print(f"{'workers':>7} {'plans':>5} {'failed':>6} {'startup s':>9} {'wall s':>7} {'plans/h':>8}")
        rates = {}
        for w in args.workers:
            t0 = time.perf_counter()
            with _open_client(BatchOptions(workers=w)) as client:
                client.wait_for_workers(w)
                client.run(_warm)
                startup = time.perf_counter() - t0
                result = run_batch([cohort], args.techniques, Path(tmp) / f"out-{w}", settings,
                                   BatchOptions(quiet=True), client=client)
            done = len(result.records) - len(result.failed)
            rates[w] = done / result.seconds * 3600.0
            print(f"{w:7d} {done:5d} {len(result.failed):6d} {startup:9.1f} {result.seconds:7.1f} {rates[w]:8.0f}",
                  flush=True)
        base = args.workers[0]
        for w in args.workers[1:]:
            eff = rates[w] / (rates[base] * w / base)
            print(f"scaling {base} -> {w} workers: {rates[w] / rates[base]:.2f}x, efficiency {eff:.0%}")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
