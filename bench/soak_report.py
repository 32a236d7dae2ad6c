#!/usr/bin/env python3
"""Reads bench/soak.sh's samples (CSV: t, rss_kib, anon_kib, file_kib, fds, threads, db_bytes,
wal_bytes) and says, for each series, whether it is flat.

After the warm-up (a fraction of the run), the samples are split into two halves. A series is
flat when the second half's peak is within its tolerance of the first half's peak: it may move
up and down as load comes and goes, but a leak shows as a later half that keeps climbing past the
earlier one. The slope over the second half (least squares, per minute) is printed beside it, so
a slow creep is visible even within tolerance. Exit status 1 when a series is not flat.

    bench/soak_report.py [--warmup 0.2] [--json] [--skip SERIES ...] samples.csv

--skip leaves series out of the verdict (still printed): under AddressSanitizer, freed memory
is held in its quarantine on purpose, so RSS climbs until the quarantine is full.
"""

import argparse
import csv
import json
import sys

# name, column, unit divisor, unit, tolerance: (relative, absolute in the unit)
SERIES = [
    ("RSS", "rss_kib", 1024, "MiB", (0.05, 1.0)),
    ("RSS-anon", "anon_kib", 1024, "MiB", (0.05, 1.0)),
    ("RSS-file", "file_kib", 1024, "MiB", (0.05, 1.0)),
    ("fds", "fds", 1, "", (0.0, 4)),
    ("threads", "threads", 1, "", (0.0, 0)),
    ("database", "db_bytes", 1 << 20, "MiB", (0.10, 1.0)),
    ("WAL", "wal_bytes", 1 << 20, "MiB", (0.10, 1.0)),
]


def slope_per_minute(ts: list[float], vs: list[float]) -> float:
    n = len(ts)
    if n < 2:
        return 0.0
    mt, mv = sum(ts) / n, sum(vs) / n
    den = sum((t - mt) ** 2 for t in ts)
    return 0.0 if den == 0 else 60 * sum((t - mt) * (v - mv) for t, v in zip(ts, vs)) / den


def report(rows: list[dict], warmup: float) -> list[dict]:
    end = float(rows[-1]["t"])
    steady = [r for r in rows if float(r["t"]) >= warmup * end]
    if len(steady) < 4:
        raise SystemExit(f"soak_report: {len(steady)} samples after the warm-up; run longer or sample more often")
    half = len(steady) // 2
    first, second = steady[:half], steady[half:]
    out = []
    for name, col, div, unit, (rel, absolute) in SERIES:
        a = [float(r[col]) / div for r in first]
        b = [float(r[col]) / div for r in second]
        allowed = max(max(a) * rel, absolute)
        out.append({
            "series": name, "unit": unit,
            "start": float(steady[0][col]) / div, "end": b[-1],
            "first_peak": max(a), "second_peak": max(b), "allowed": allowed,
            "slope_per_min": slope_per_minute([float(r["t"]) for r in second], b),
            "flat": max(b) <= max(a) + allowed,
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], help="series names left out of the verdict")
    ap.add_argument("samples")
    args = ap.parse_args()
    with open(args.samples, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit("soak_report: no samples")
    result = report(rows, args.warmup)
    for r in result:
        r["judged"] = r["series"] not in args.skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(rows)} samples over {float(rows[-1]['t']):.0f} s; warm-up {args.warmup:.0%}")
        print(f"{'series':<16} {'start':>9} {'end':>9} {'peak 1st':>9} {'peak 2nd':>9} {'slope/min':>10}  verdict")
        for r in result:
            fmt = (lambda v: f"{v:9.1f}") if r["unit"] else (lambda v: f"{v:9.0f}")
            verdict = "flat" if r["flat"] else f"NOT FLAT (+{r['second_peak'] - r['first_peak']:.1f} > {r['allowed']:.1f})"
            if not r["judged"]:
                verdict = f"(not judged) {verdict}"
            print(f"{r['series']:<16} {fmt(r['start'])} {fmt(r['end'])} {fmt(r['first_peak'])} {fmt(r['second_peak'])} "
                  f"{r['slope_per_min']:10.3f}  {verdict} {r['unit']}".rstrip())
    return 0 if all(r["flat"] for r in result if r["judged"]) else 1


if __name__ == "__main__":
    sys.exit(main())
