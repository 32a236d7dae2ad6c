#!/usr/bin/env bash
# Repeated kill -9, for longer than CI runs it: tests/integration/test_crash_rounds.py with more
# rounds (the same Python code; CI runs its default 20).
#
#   bench/crash_rounds.sh [path/to/repeaterd]        (default: build/repeaterd)
#
# ROUNDS (default 200) rounds, each a kill -9 at a random moment of one phase (an ingest burst,
# forwarding, a bulk resend, the retention purge, an email's SMTP conversation), then a restart
# and the checks (integrity_check, nothing acknowledged lost); at the end every acknowledged
# submission delivered at least once and every duplicate an attempt in flight at a kill. SEED
# (default: the test's fixed one) picks the phases and moments; the test prints it first, and the
# figures (rounds per phase, submissions, requests, duplicates, attempts in flight at kills,
# records purged, emails) last. Loopback only; needs root for nothing. repeaterctl is not used.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/repeaterd}
[[ -x $bin ]] || { echo "crash_rounds: no repeaterd at $bin (build it: scripts/build.sh)" >&2; exit 2; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
export REPEATERD_BIN=$bin
export REPEATERCTL_BIN=${REPEATERCTL_BIN:-$(dirname "$bin")/repeaterctl}
export REPEATERD_SOURCE_DIR=$root
export REPEATERD_CRASH_ROUNDS=${ROUNDS:-200}
[[ -n ${SEED:-} ]] && export REPEATERD_CRASH_SEED=$SEED
export PYTHONDONTWRITEBYTECODE=1
cd "$root/tests/integration"
exec python3 -m unittest -v test_crash_rounds
