"""Benchmark: what a higher l_max costs molfold's Allegro per edge, measured in one run.

The tutorial model (``configs/model/allegro.yaml``, random weights) at each ``--l-max``, on the
systems of ``scripts/bench_allegro.py`` (default the Cu 864 cell), energy + forces (+ stress for
cells) per call, timed by its ``speed`` worker, every case in a fresh process with the tuned
malloc (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``, which the compiled path applies
in-process anyway). The cases alternate (l_max 1, 2, 3, 1, 2, 3, ...) ``--process-runs`` times
and each keeps its fastest process, so the ratios compare runs that saw the same machine load;
the edges are the same at every l_max, so the ratio of times is the ratio of costs per edge::

    .venv/bin/python scripts/bench_allegro_lmax.py --out runs/bench_allegro_lmax.json
    .venv/bin/python scripts/bench_allegro_lmax.py --dtypes float32 --l-max 1 2 3 --modes compiled

Prints a table (seconds per call, and each l_max's cost relative to l_max 1 in the same dtype and
mode) and writes JSON. The reference side is in ``scripts/bench_allegro.py --l-max N``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench_allegro import THIS as BENCH_ALLEGRO  # scripts/ is on sys.path when run as a script
from bench_allegro import ref, run_worker
from bench_machine import machine_info, text_table


def cmd_run(args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **ref.MALLOC_TUNED_ENV)
    cases = [
        (system, dtype, mode, l_max)
        for system in args.systems
        for dtype in args.dtypes
        for mode in args.modes
        for l_max in args.l_max
    ]
    runs: dict[tuple, list[dict]] = {case: [] for case in cases}
    for k in range(args.process_runs):
        for system, dtype, mode, l_max in cases:
            worker_args = ["--system", system, "--dtype", dtype, "--mode", mode]
            worker_args += ["--l-max", str(l_max), "--repeats", str(args.repeats)]
            worker_args += ["--warmup", str(args.warmup), "--threads", str(args.threads)]
            record = run_worker(sys.executable, BENCH_ALLEGRO, worker_args, env)
            runs[system, dtype, mode, l_max].append(record)
            said = record.get("error", "").strip().splitlines()[-1:] or [
                f"{record.get('time_median_s', float('nan')):.4f} s"
            ]
            print(f"  run {k + 1}: {system} {dtype} {mode} l_max {l_max}: {said[0]}", flush=True)
    rows = []
    for (system, dtype, mode, l_max), records in runs.items():
        good = [r for r in records if "error" not in r]
        row = {"system": system, "dtype": dtype, "mode": mode, "l_max": l_max}
        if not good:
            row["error"] = records[-1].get("error", "?").strip().splitlines()[-1:]
        else:
            best = min(good, key=lambda r: r["time_median_s"])
            row.update(
                {k: best[k] for k in ("time_median_s", "params", "n_edges", "n_atoms")},
                times_s=[r["time_median_s"] for r in good],
            )
        rows.append(row)
    lowest = {
        (r["system"], r["dtype"], r["mode"]): r
        for r in rows
        if r["l_max"] == min(args.l_max) and "error" not in r
    }
    for row in rows:
        base = lowest.get((row["system"], row["dtype"], row["mode"]))
        if base is not None and "error" not in row:
            row["cost_vs_lowest_l_max"] = row["time_median_s"] / base["time_median_s"]
    headers = ["system", "dtype", "mode", "l_max", "parameters", "edges", "s per call"]
    headers.append(f"x l_max {min(args.l_max)}")
    body = []
    for r in rows:
        case = [r["system"], r["dtype"], r["mode"], str(r["l_max"])]
        if "error" in r:
            body.append([*case, "FAILED", "", str(r["error"])[:50], ""])
            continue
        cost = r.get("cost_vs_lowest_l_max", float("nan"))
        size = [f"{r['params']:,}", f"{r['n_edges']:,}"]
        body.append([*case, *size, f"{r['time_median_s']:.4f}", f"{cost:.2f}"])
    print(f"\nmolfold Allegro, cost of l_max, {args.threads} threads, tuned malloc, best of "
          f"{args.process_runs} processes' medians of {args.repeats} calls\n")  # fmt: skip
    print(text_table(headers, body))
    result = {
        "benchmark": "allegro l_max cost",
        "machine": machine_info(args.threads),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", nargs="+", choices=ref.SYSTEMS, default=["cu864"])
    parser.add_argument("--dtypes", nargs="+", choices=ref.DTYPES, default=["float32", "float64"])
    parser.add_argument("--modes", nargs="+", choices=("eager", "compiled"), default=["compiled"])
    parser.add_argument("--l-max", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--process-runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench_allegro_lmax.json"))
    args = parser.parse_args(argv)
    rows = cmd_run(args)["rows"]
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
