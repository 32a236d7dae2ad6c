#!/usr/bin/env bash
# Soak: does repeaterd stay flat under hours of steady load with failures?
#
#   bench/soak.sh [path/to/repeaterd]        (default: build/repeaterd)
#
# wrk submits the seed form (its case block taken out, so a delivered form leaves nothing behind
# once purged) at a paced RATE for MINUTES, to one form repeater whose receiver (nginx) answers
# FAIL_PERCENT of requests with 500 at random, so records retry and the circuit opens and closes
# now and then. Every SAMPLE_EVERY seconds it samples repeaterd's RSS (anonymous and file-backed),
# open fds, threads, and the database and WAL sizes, then prints a table and, for each, whether
# it is flat (bench/soak_report.py: the second half of the run after warm-up against the first).
# Retention is RETENTION (default 1m), so the purge runs every minute and the database reaches its
# steady size within the run. Exit status: 0 when every series is flat, 1 otherwise.
# Knobs: MINUTES (10), RATE (2000 forms/s: about half the end-to-end rate measured on the 2-core
# machine, bench/README.md), FAIL_PERCENT (10), SAMPLE_EVERY (5), RETENTION (1m), WARMUP (0.2 of
# the run), CSV (a path to keep the samples), SOAK_REPORT_ARGS (e.g. --skip RSS, for soak_report.py). Loopback only, everything in a temp dir (KEEP=1).
set -euo pipefail

bench_name=soak
source "$(dirname "$0")/lib.sh"
bin=$(realpath "${1:-$root/build/repeaterd}")
minutes=${MINUTES:-10} rate=${RATE:-2000} fail=${FAIL_PERCENT:-10} every=${SAMPLE_EVERY:-5}
bench_require nginx wrk python3 curl
[[ -x $bin ]] || { say "no repeaterd binary at $bin"; exit 2; }
bench_init

NGINX_FAIL_PERCENT=$fail start_nginx
port=$(free_port)
{
  BENCH_RETENTION=${RETENTION:-1m} config_head "$port" "$work/repeaterd.db" "$work/events.log" "$work/admin.sock" 60s
  echo "connections:"
  config_connection nginx "http://127.0.0.1:$nginx_port/inbox"
  echo "repeaters:"
  config_form_repeater forms demo nginx false
} >"$work/repeaterd.yaml"
start_repeaterd "$work/repeaterd.yaml" "$work/repeaterd.stderr" "$port"
wait_ready "$work/admin.sock" "$rd_pid"

# Paced: each connection waits 10 ms after every answer, so RATE/100 connections send about RATE
# a second (less by the latency; the achieved rate is printed).
delay_ms=10
connections=$(((rate * delay_ms + 999) / 1000))
((connections >= 2)) || connections=2
seconds=$(python3 -c "print(max(1, round(float('$minutes') * 60)))")
say "$minutes min at about $rate forms/s ($connections connections, ${delay_ms} ms apart), $fail % of deliveries failing; sampling every ${every}s"

samples=$work/samples.csv
echo "t,rss_kib,anon_kib,file_kib,fds,threads,db_bytes,wal_bytes" >"$samples"
sample() {
  local t=$1 status
  status=$(cat "/proc/$rd_pid/status" 2>/dev/null) || return 0
  awk -v t="$t" -v fds="$(find "/proc/$rd_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" \
      -v db="$(stat -c %s "$work/repeaterd.db" 2>/dev/null || echo 0)" \
      -v wal="$(stat -c %s "$work/repeaterd.db-wal" 2>/dev/null || echo 0)" '
    /^VmRSS:/ {rss = $2} /^RssAnon:/ {anon = $2} /^RssFile:/ {file = $2} /^Threads:/ {thr = $2}
    END {printf "%s,%d,%d,%d,%d,%d,%d,%d\n", t, rss, anon, file, fds, thr, db, wal}' <<<"$status" >>"$samples"
}

WRK_THREADS=2 WRK_CONNECTIONS=$connections WRK_DURATION=${seconds}s BENCH_TOKEN=$token BENCH_NO_CASE=1 \
  BENCH_DELAY_MS=$delay_ms run_wrk "http://127.0.0.1:$port/a/demo/receiver" "$work/wrk.txt" >"$work/wrk-rate.txt" &
wrk_job=$!
start=$SECONDS
while kill -0 "$wrk_job" 2>/dev/null; do
  sample $((SECONDS - start))
  kill -0 "$rd_pid" 2>/dev/null || die "repeaterd died during the soak: $(tail -5 "$work/repeaterd.stderr")"
  sleep "$every"
done
wait "$wrk_job"
sample $((SECONDS - start))
[[ -n ${CSV:-} ]] && cp "$samples" "$CSV"

submitted=$(wrk_requests "$work/wrk.txt")
non2xx=$(awk '/Non-2xx or 3xx responses/ {print $NF}' "$work/wrk.txt")
say "submitted $submitted forms, $(cat "$work/wrk-rate.txt") a second; non-2xx answers: ${non2xx:-0}"
say "attempts: $(admin_call "$work/admin.sock" GET /metrics | awk '/^repeaterd_attempts_total/ {printf "%s=%s ", $1, $2}')"
# shellcheck disable=SC2086
python3 "$root/bench/soak_report.py" "$samples" --warmup "${WARMUP:-0.2}" ${SOAK_REPORT_ARGS:-}
