#!/usr/bin/env python3
"""Waits until every record in repeaterd's event log has been delivered (or the timeout passes)
and prints, space-separated: created succeeded cancelled failed_attempts last_delivery_epoch.

usage: delivery_stats.py EVENTS_FILE TIMEOUT_SECONDS [--repeater NAME ...] [--expect N]
                         [--first] [--json]

  --repeater NAME  count only the events of this repeater (repeat for several)
  --expect N       done once N records have settled (succeeded or cancelled), for a log that
                   did not see them created (a backlog filled by an earlier process)
  --first          done at the first delivery (attempt.succeeded)
  --json           print a JSON object instead: created, succeeded, cancelled,
                   failed_attempts, first_delivery, last_delivery (epoch seconds, 0 if none),
                   timed_out

Reads the JSON-lines event log incrementally, so it is cheap to poll a large file."""

import argparse
import calendar
import json
import re
import sys
import time

TS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z$")
WANTED = (b'"record.created"', b'"attempt.succeeded"', b'"attempt.failed"', b'"record.cancelled"')


def epoch(ts: str) -> float:
    m = TS.match(ts)
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + float(m.group(2) or 0)


def main() -> int:
    ap = argparse.ArgumentParser(description="follow repeaterd's event log until records settle")
    ap.add_argument("events")
    ap.add_argument("timeout", type=float)
    ap.add_argument("--repeater", action="append", default=[])
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--first", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    repeaters = set(args.repeater)

    created, succeeded, cancelled = set(), set(), set()
    failed_attempts, first_delivery, last_delivery = 0, 0.0, 0.0
    offset, partial = 0, b""
    deadline = time.monotonic() + args.timeout
    quiet_since = None
    timed_out = False
    while True:
        try:
            with open(args.events, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        offset += len(data)
        lines = (partial + data).split(b"\n")
        partial = lines.pop()
        for line in lines:
            if not any(w in line for w in WANTED):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if repeaters and ev.get("repeater") not in repeaters:
                continue
            kind = ev.get("event")
            if kind == "record.created":
                created.add(ev["record_id"])
            elif kind == "attempt.succeeded":
                succeeded.add(ev["record_id"])
                t = epoch(ev["ts"])
                last_delivery = max(last_delivery, t)
                first_delivery = min(first_delivery, t) if first_delivery else t
            elif kind == "attempt.failed":
                failed_attempts += 1
            elif kind == "record.cancelled":
                cancelled.add(ev["record_id"])
        settled_n = len(succeeded | cancelled)
        if args.first:
            done = bool(succeeded)
        elif args.expect:
            done = settled_n >= args.expect
        else:
            done = bool(created) and settled_n >= len(created)
        if args.first and done:
            break
        # Done when everything created is settled and no new record appeared for a moment
        # (a request wrk gave up on may still be committing).
        if done:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.5:
                break
        else:
            quiet_since = None
        if time.monotonic() > deadline:
            want = args.expect or len(created)
            print(f"delivery_stats: timed out: {len(succeeded)}/{want} delivered", file=sys.stderr)
            timed_out = True
            break
        time.sleep(0.02 if args.first else 0.1)
    if args.json:
        print(json.dumps({"created": len(created), "succeeded": len(succeeded), "cancelled": len(cancelled),
                          "failed_attempts": failed_attempts, "first_delivery": first_delivery,
                          "last_delivery": last_delivery, "timed_out": timed_out}))
    else:
        print(len(created), len(succeeded), len(cancelled), failed_attempts, f"{last_delivery:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
