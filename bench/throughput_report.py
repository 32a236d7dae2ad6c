#!/usr/bin/env python3
"""Prints bench/throughput.sh's goal table from its results file (lines "key value").

usage: throughput_report.py RESULTS"""

import math
import sys


def main() -> int:
    r: dict[str, str] = {}
    rounds: dict[str, list[float]] = {}  # keys ending in _round: one value per round
    for line in open(sys.argv[1]):
        key, _, value = line.rstrip("\n").partition(" ")
        if key.endswith("_round"):
            rounds.setdefault(key[: -len("_round")], []).append(float(value))
        else:
            r[key] = value
    for key, values in rounds.items():
        r[key] = str(sum(values) / len(values))

    def num(key: str) -> float:
        try:
            return float(r[key])
        except (KeyError, ValueError):
            return math.nan

    def ratio(a: float, b: float) -> float:
        return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan

    rows = []  # figure, N, measured, baseline, ratio, goal, ok

    def row(figure, n, measured, baseline, rat, goal, ok):
        # ok is False whenever a number in it is nan: call that unmeasured, not failed.
        verdict = "n/a" if "nan" in measured else ("pass" if ok else "FAIL")
        rows.append((figure, n, measured, baseline, rat, goal, verdict))

    raw = num("raw")
    a = num("A_rate")
    if "A_rate" in r:
        row("A end-to-end delivered/s / raw (new case each)", f"{int(num('A_n'))} rec",
            f"{a:,.0f}/s", f"raw {raw:,.0f}/s", ratio(a, raw), ">= 0.25", ratio(a, raw) >= 0.25)
    if "B_rate" in r:
        b = num("B_rate")
        goal = 0.8 * ratio(a, raw)
        row("B the same, every form updating one case", f"{int(num('B_n'))} rec",
            f"{b:,.0f}/s", f"raw {raw:,.0f}/s", ratio(b, raw), f">= 0.8 x A = {goal:.3f}", ratio(b, raw) >= goal)
    if "C_p99" in r:
        c = num("C_p99")
        row(f"C ingest p99 latency, -c64, commit included", f"{int(num('C_n'))} req",
            f"{c:.2f} ms", f"nginx p99 {num('raw_p99'):.2f} ms", ratio(c, num("raw_p99")), "<= 5 ms", c <= 5)
    if "D_dead_rate" in r:
        d, solo = num("D_dead_rate"), num("D_solo_rate")
        row(f"D healthy delivered/s, dead conn holding {int(num('D_queued')):,} / solo",
            f"{int(sum(rounds['D_dead_n']))} rec", f"{d:,.0f}/s", f"solo {solo:,.0f}/s", ratio(d, solo), ">= 0.95",
            ratio(d, solo) >= 0.95)
    if "E_restart" in r:
        # The process holding the backlog: started on it (paused), and after the restart while it
        # drains. The filling process's peak also counts its FILL_CONNECTIONS requests in flight:
        # printed below, not taken.
        kib = max(num(k) for k in ("E_rss_paused", "E_hwm_paused", "E_rss_draining", "E_hwm_draining"))
        mb = kib * 1024 / 1e6
        idle = num("E_rss_idle") * 1024 / 1e6
        row(f"E RSS with {int(num('E_queued')):,} queued (peak)", f"{int(num('E_queued'))} rec",
            f"{mb:.1f} MB", f"idle {idle:.1f} MB", ratio(mb, idle), "<= 100 MB", mb <= 100)
        t, base = num("E_restart"), num("E_restart_base")
        row(f"E restart to first delivery, {int(num('E_queued')):,} queued", f"{int(num('E_queued'))} rec",
            f"{t:.3f} s", f"1 queued {base:.3f} s", ratio(t, base), "<= 2 s", t <= 2)
    if "F_rate" in r:
        f = num("F_rate")
        row("F backlog drain, default connection, release to last", f"{int(num('F_n'))} rec",
            f"{f:,.0f}/s", f"raw {raw:,.0f}/s", ratio(f, raw), ">= 10,000/s", f >= 10000)
    if "G_bytes" in r:
        per = num("G_bytes") / num("G_n")
        payload = num("G_payload")
        row("G bytes on disk (db+wal) per delivered record", f"{int(num('G_n'))} rec",
            f"{per:,.0f} B", f"payload {payload:,.0f} B", ratio(per, payload), "<= 2 x payload",
            ratio(per, payload) <= 2)
    if "H_rate" in r:
        h = num("H_rate")
        row("H fan-out to 10 repeaters: records delivered/s / A", f"{int(num('H_n'))} rec",
            f"{h:,.0f}/s", f"A {a:,.0f}/s", ratio(h, a), ">= 0.8", ratio(h, a) >= 0.8)

    head = ("figure", "N", "measured", "baseline", "ratio", "goal", "")
    fmt_rows = [(f, n, m, b, f"{x:.3f}" if not math.isnan(x) else "n/a", g, v) for f, n, m, b, x, g, v in rows]
    widths = [max(len(str(c[i])) for c in [head] + fmt_rows) for i in range(len(head))]
    print()
    print(f"raw wrk -> nginx: {raw:,.0f} req/s (-c32)"
          + (f"; p99 {num('raw_p99'):.2f} ms at -c64" if "raw_p99" in r else ""))
    print()
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for fr in fmt_rows:
        print("  ".join(str(c).ljust(w) if i in (0, 1, 5, 6) else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(fr, widths))))
    print()
    notes = []
    if "A_rate" in r:
        note = f"A: ingest {num('A_ingest'):,.0f} req/s, first submission to last delivery {num('A_span'):.2f} s"
        if "A_cpu_s" in r and num("A_n") > 0:
            note += f"; repeaterd CPU (user + sys) {num('A_cpu_s') * 1e6 / num('A_n'):,.0f} us per record delivered"
        notes.append(note)
    if "B_rate" in r:
        notes.append(f"B: ingest {num('B_ingest'):,.0f} req/s; B / A = {ratio(num('B_rate'), a):.3f}")
    if "C_p99" in r:
        notes.append(f"C: p50 {num('C_p50'):.2f} ms")
    if "D_dead_rate" in r:
        each = lambda k: ", ".join(f"{v:,.0f}" for v in rounds[k])
        notes.append(f"D: per round, healthy delivered/s solo {each('D_solo_rate')}; with the dead connection "
                     f"{each('D_dead_rate')}; attempts failed on the dead connection {each('D_dead_dead_attempts')}"
                     f" (solo: {each('D_solo_dead_attempts')})")
    if "E_restart" in r:
        notes.append(f"E: RSS KiB: idle/empty {num('E_rss_idle'):.0f}, filling peak {num('E_fill_hwm'):.0f}, "
                     f"paused {num('E_rss_paused'):.0f} (peak {num('E_hwm_paused'):.0f}), "
                     f"draining {num('E_rss_draining'):.0f} (peak {num('E_hwm_draining'):.0f}); "
                     f"database {num('E_db_bytes') / 1e9:.2f} GB; after the restart the ingest port "
                     f"accepted connections at {num('E_listen'):.3f} s")
    if "F_rate" in r:
        notes.append(f"F: {int(num('F_queued')):,} queued, first delivery {num('F_first'):.3f} s after release")
    if "G_bytes" in r:
        notes.append(f"G: {num('G_bytes') / 1e6:.1f} MB with the daemon running, "
                     f"{num('G_bytes_stopped') / 1e6:.1f} MB after it stopped "
                     f"({num('G_bytes_stopped') / num('G_n'):,.0f} B/record)")
    if "H_rate" in r:
        notes.append(f"H: ingest {num('H_ingest'):,.0f} forms/s")
    for n in notes:
        print(n)
    print(f"{r.get('config', '')}; {r.get('elapsed', '?')} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
