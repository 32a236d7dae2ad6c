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
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$root/build/repeaterd}")
duration=${DURATION:-10s}
threads=${THREADS:-2}
connections=${CONNECTIONS:-32}
drain_timeout=${DRAIN_TIMEOUT:-300}
scenario=${SCENARIO:-form}   # form: one form repeater; cases: + case xml, case json, form_stub
form=$root/tests/integration/data/seed_form.xml
lua=$root/bench/submit_form.lua
token=bench-token

for tool in nginx wrk python3; do
  command -v "$tool" >/dev/null || { echo "forward_bench: $tool not found" >&2; exit 2; }
done
[[ -x $bin ]] || { echo "forward_bench: no repeaterd binary at $bin" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/repeaterd-bench.XXXXXX")
nginx_pid=
repeaterd_pid=

# Stops what we started (by pid) and removes the temp dir, however the script ends.
cleanup() {
  local rc=$?
  if [[ -n $repeaterd_pid ]] && kill -0 "$repeaterd_pid" 2>/dev/null; then
    kill -TERM "$repeaterd_pid" 2>/dev/null || true
    timeout 25 tail --pid="$repeaterd_pid" -f /dev/null || kill -KILL "$repeaterd_pid" 2>/dev/null || true
  fi
  if [[ -n $nginx_pid ]] && kill -0 "$nginx_pid" 2>/dev/null; then
    kill -QUIT "$nginx_pid" 2>/dev/null || true
    timeout 10 tail --pid="$nginx_pid" -f /dev/null || kill -KILL "$nginx_pid" 2>/dev/null || true
  fi
  if [[ ${KEEP:-0} == 1 || $rc -ne 0 ]]; then
    echo "forward_bench: kept $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts TCP connections on 127.0.0.1:$1 (the process is $2).
wait_port() {
  local port=$1 pid=$2 deadline=$((SECONDS + 20))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "forward_bench: process $pid died" >&2; return 1; }
    ((SECONDS < deadline)) || { echo "forward_bench: port $port not ready" >&2; return 1; }
    sleep 0.05
  done
}

# Runs wrk against $1 with the form script; extra env via the caller. Prints wrk's report to
# $2 and the Requests/sec figure on stdout.
run_wrk() {
  local url=$1 report=$2 secs=${duration%s}
  BENCH_FORM=$form BENCH_RUN="$RANDOM$$" \
    timeout $((secs + 30)) wrk -t"$threads" -c"$connections" -d"$duration" --timeout 10s \
      -s "$lua" "$url" >"$report"
  if grep -q "Non-2xx or 3xx responses" "$report"; then
    echo "forward_bench: non-2xx answers from $url:" >&2
    grep "Non-2xx" "$report" >&2
  fi
  awk '/^Requests\/sec:/ {print $2}' "$report"
}

# ---------------------------------------------------------------- (a) nginx alone
nginx_port=$(free_port)
sed -e "s|@WORK@|$work|g" -e "s|@PORT@|$nginx_port|g" "$root/bench/nginx.conf.in" >"$work/nginx.conf"
nginx -p "$work" -e "$work/nginx-error.log" -c "$work/nginx.conf" &
nginx_pid=$!
wait_port "$nginx_port" "$nginx_pid"

echo "raw: wrk -t$threads -c$connections -d$duration -> nginx" >&2
raw_rate=$(BENCH_TOKEN= run_wrk "http://127.0.0.1:$nginx_port/inbox" "$work/wrk-raw.txt")

# ---------------------------------------------------------------- (b) through repeaterd
repeaterd_port=$(free_port)
cat >"$work/repeaterd.yaml" <<EOF
listen:
  address: 127.0.0.1
  port: $repeaterd_port
  max_body: 10MiB
  max_connections: 1024
ingest_tokens:
  - domain: demo
    token_env: REPEATERD_BENCH_TOKEN
storage:
  path: $work/repeaterd.db
  retention: 1d
log:
  events_file: $work/events.log
  level: warn
  queue_summary_every: 60s
connections:
  - name: nginx
    url: http://127.0.0.1:$nginx_port/inbox
    connect_timeout: 5s
    timeout: 30s
    max_in_flight: 32
repeaters:
  - name: forms-to-nginx
    domain: demo
    type: form
    format: xml
    connection: nginx
    retry: {initial: 1s, multiplier: 2, max_delay: 30s, max_attempts: 10, max_attempts_client_error: 3, jitter: 0.1}
EOF
if [[ $scenario == cases ]]; then
  # The seed form carries a case block: apply it, and forward the case as XML and as JSON and
  # a form stub besides the form: four records per submission.
  for rep in "case-xml-to-nginx case xml" "case-json-to-nginx case json" "stubs-to-nginx form_stub -"; do
    read -r name type format <<<"$rep"
    {
      echo "  - name: $name"
      echo "    domain: demo"
      echo "    type: $type"
      [[ $format != - ]] && echo "    format: $format"
      echo "    connection: nginx"
      echo "    retry: {initial: 1s, multiplier: 2, max_delay: 30s, max_attempts: 10, max_attempts_client_error: 3, jitter: 0.1}"
    } >>"$work/repeaterd.yaml"
  done
fi
REPEATERD_BENCH_TOKEN=$token "$bin" --config "$work/repeaterd.yaml" 2>"$work/repeaterd.stderr" &
repeaterd_pid=$!
wait_port "$repeaterd_port" "$repeaterd_pid"

echo "ingest: wrk -t$threads -c$connections -d$duration -> repeaterd" >&2
start=$(date +%s.%N)
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
