#!/usr/bin/env bash
# Forwarding benchmark: how close does repeaterd get to a bare HTTP receiver?
#
#   bench/forward_bench.sh [path/to/repeaterd]        (default: build/repeaterd)
#
# (a) raw:        wrk posts the seed form straight at a local nginx that answers 200 "{}"
# (b) ingest:     the same wrk run against repeaterd's /a/demo/receiver (one form repeater
#                 forwarding to that nginx, max_in_flight 32)
# (c) end-to-end: records delivered / seconds from the first submission to the last delivery
# Prints the three rates and end-to-end/raw. Needs Debian's nginx and wrk; runs on loopback
# only, as any user, with everything in a temp dir that is removed on exit (KEEP=1 keeps it).
# Tunables: DURATION (10s), THREADS (2), CONNECTIONS (32), DRAIN_TIMEOUT (300 s), SCENARIO
# (form: one form repeater; cases: every form creates a case and goes to four repeaters, form
# xml, case xml, case json and form_stub, so end-to-end counts four records per form),
# NEW_CASES (1: every form creates its own case; 0: every form updates the seed's one case, a hot
# case with a growing history; default 1 for SCENARIO=cases, 0 otherwise).
# bench/throughput.sh measures the whole goal table (bench/README.md) with the same helpers
# (bench/lib.sh).
set -euo pipefail

bench_name=forward_bench
source "$(dirname "$0")/lib.sh"
bin=$(realpath "${1:-$root/build/repeaterd}")
export WRK_DURATION=${DURATION:-10s} WRK_THREADS=${THREADS:-2} WRK_CONNECTIONS=${CONNECTIONS:-32}
duration=$WRK_DURATION threads=$WRK_THREADS connections=$WRK_CONNECTIONS
drain_timeout=${DRAIN_TIMEOUT:-300}
scenario=${SCENARIO:-form}   # form: one form repeater; cases: + case xml, case json, form_stub

bench_require nginx wrk python3
[[ -x $bin ]] || { say "no repeaterd binary at $bin"; exit 2; }
bench_init

# ---------------------------------------------------------------- (a) nginx alone
start_nginx
echo "raw: wrk -t$threads -c$connections -d$duration -> nginx" >&2
raw_rate=$(BENCH_TOKEN= run_wrk "http://127.0.0.1:$nginx_port/inbox" "$work/wrk-raw.txt")

# ---------------------------------------------------------------- (b) through repeaterd
repeaterd_port=$(free_port)
{
  config_head "$repeaterd_port" "$work/repeaterd.db" "$work/events.log" "$work/admin.sock"
  echo "connections:"
  config_connection nginx "http://127.0.0.1:$nginx_port/inbox" 32
  echo "repeaters:"
  config_form_repeater forms-to-nginx demo nginx false
  if [[ $scenario == cases ]]; then
    # The seed form carries a case block: apply it, and forward the case as XML and as JSON and
    # a form stub besides the form: four records per submission.
    for rep in "case-xml-to-nginx case xml" "case-json-to-nginx case json" "stubs-to-nginx form_stub -"; do
      read -r name type format <<<"$rep"
      echo "  - name: $name"
      echo "    domain: demo"
      echo "    type: $type"
      [[ $format != - ]] && echo "    format: $format"
      echo "    connection: nginx"
      echo "    retry: $bench_retry"
    done
  fi
} >"$work/repeaterd.yaml"
start_repeaterd "$work/repeaterd.yaml" "$work/repeaterd.stderr" "$repeaterd_port"

echo "ingest: wrk -t$threads -c$connections -d$duration -> repeaterd" >&2
start=$(now)
new_cases=${NEW_CASES:-0}
[[ $scenario == cases && -z ${NEW_CASES:-} ]] && new_cases=1
ingest_rate=$(BENCH_TOKEN=$token BENCH_NEW_CASES=$new_cases \
  run_wrk "http://127.0.0.1:$repeaterd_port/a/demo/receiver" "$work/wrk-ingest.txt")

# ---------------------------------------------------------------- (c) end to end
echo "end-to-end: waiting for every record to be delivered (up to ${drain_timeout}s)" >&2
read -r created succeeded cancelled failed_attempts last_delivery \
  < <(python3 "$root/bench/delivery_stats.py" "$work/events.log" "$drain_timeout")

python3 - "$raw_rate" "$ingest_rate" "$created" "$succeeded" "$cancelled" "$failed_attempts" \
  "$start" "$last_delivery" <<'EOF'
import sys
raw, ingest = float(sys.argv[1] or 0), float(sys.argv[2] or 0)
created, succeeded, cancelled, failed = map(int, sys.argv[3:7])
start, last = float(sys.argv[7]), float(sys.argv[8])
span = last - start if last > start else float("nan")
e2e = succeeded / span if span == span and span > 0 else 0.0
print()
print(f"{'measure':<34}{'rate (req/s)':>14}")
print(f"{'-' * 48}")
print(f"{'raw: wrk -> nginx':<34}{raw:>14.1f}")
print(f"{'ingest: wrk -> repeaterd':<34}{ingest:>14.1f}")
print(f"{'end-to-end: delivered to nginx':<34}{e2e:>14.1f}")
print(f"{'-' * 48}")
print(f"{'end-to-end / raw':<34}{(e2e / raw if raw else 0):>14.3f}")
print()
print(f"records created {created}, delivered {succeeded}, cancelled {cancelled}, "
      f"failed attempts {failed}; first submission to last delivery {span:.2f} s")
if succeeded < created:
    print(f"WARNING: {created - succeeded} record(s) not delivered", file=sys.stderr)
EOF
