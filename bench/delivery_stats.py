#!/usr/bin/env python3
"""Waits until every record in repeaterd's event log has been delivered (or the timeout passes)
and prints, space-separated: created succeeded cancelled failed_attempts last_delivery_epoch.

usage: delivery_stats.py EVENTS_FILE TIMEOUT_SECONDS
Reads the JSON-lines event log incrementally, so it is cheap to poll a large file."""

import calendar
import json
import re
import sys
import time

TS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z$")


def epoch(ts: str) -> float:
    m = TS.match(ts)
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + float(m.group(2) or 0)


def main() -> int:
    path, timeout = sys.argv[1], float(sys.argv[2])
    created, succeeded, cancelled = set(), set(), set()
    failed_attempts, last_delivery = 0, 0.0
    offset, partial = 0, b""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while True:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        offset += len(data)
        lines = (partial + data).split(b"\n")
        partial = lines.pop()
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.get("event")
            if kind == "record.created":
                created.add(ev["record_id"])
            elif kind == "attempt.succeeded":
                succeeded.add(ev["record_id"])
                last_delivery = max(last_delivery, epoch(ev["ts"]))
            elif kind == "attempt.failed":
                failed_attempts += 1
            elif kind == "record.cancelled":
                cancelled.add(ev["record_id"])
        settled = created and len(succeeded | cancelled) >= len(created)
        # Done when everything created is settled and no new record appeared for a moment
        # (a request wrk gave up on may still be committing).
        if settled:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.5:
                break
        else:
            quiet_since = None
        if time.monotonic() > deadline:
            print(f"delivery_stats: timed out: {len(succeeded)}/{len(created)} delivered",
                  file=sys.stderr)
            break
        time.sleep(0.1)
    print(len(created), len(succeeded), len(cancelled), failed_attempts, f"{last_delivery:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
