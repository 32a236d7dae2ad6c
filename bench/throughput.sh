#!/usr/bin/env bash
# The goal table in one command: every figure as a ratio against a baseline measured in the same
# run, on the same machine (bench/README.md describes each row and the knobs).
#
#   bench/throughput.sh [path/to/repeaterd]        (default: build/repeaterd)
#
# Phases, in order (each repeaterd gets its own database and event log in one temp dir):
#   raw      wrk -> nginx, -c32 (baseline of A, B, F) and -c64 --latency (baseline of C)
#   A (+G)   one form repeater (max_in_flight 32), every form a new case: delivered/s; then the
#            database + WAL bytes per delivered record (G)
#   B        the same, every form updating the seed's one case
#   C        the A setup under wrk -c64 --latency: ingest p99 (201 is sent after the commit)
#   H        ten form repeaters on the A connection: records delivered/s
#   E0       a database with one queued record: idle RSS, restart-to-first-delivery (E baselines)
#   fill     domain "bulk", repeater bulk-forms paused in the config: forms through HTTP ingest
#            until D_RECORDS, F_RECORDS and E_RECORDS records are queued (a snapshot of the
#            database is copied at each level)
#   D        the A setup plus bulk-forms on a dead connection (a closed 127.0.0.1 port) holding
#            the D_RECORDS backlog: the healthy repeater's delivered/s with bulk-forms paused
#            (solo, baseline) and unpaused, D_ROUNDS times each, interleaved
#   F        the F_RECORDS backlog, bulk-forms on a default connection (no max_in_flight) to
#            nginx: released by a config reload with paused: false; delivered/s from release to
#            last delivery
#   E        the E_RECORDS backlog: RSS, paused and then while draining; restart (paused false)
#            to the first delivery
# Knobs (environment): DURATION (10s: A, B, D wrk runs), LAT_DURATION (10s: C and its raw
# baseline), LAT_CONNECTIONS (64), FANOUT (10 repeaters), FANOUT_DURATION (5s), D_RECORDS
# (100000), D_ROUNDS (2: solo/dead pairs), F_RECORDS (50000), E_RECORDS (1000000), E_WATCH (3 s
# of draining watched for RSS),
# FILL_CONNECTIONS (128: wrk connections while filling a backlog),
# SKIP (letters of rows to leave out, e.g. SKIP=E), DRAIN_TIMEOUT (600 s), KEEP=1 keeps the
# temp dir. Quick run: D_RECORDS=20000 F_RECORDS=20000 E_RECORDS=50000 DURATION=5s.
set -euo pipefail

bench_name=throughput
source "$(dirname "$0")/lib.sh"
bin=$(realpath "${1:-$root/build/repeaterd}")
duration=${DURATION:-10s}
lat_duration=${LAT_DURATION:-10s}
lat_connections=${LAT_CONNECTIONS:-64}
fanout=${FANOUT:-10}
fanout_duration=${FANOUT_DURATION:-5s}
d_records=${D_RECORDS:-100000}
f_records=${F_RECORDS:-50000}
e_records=${E_RECORDS:-1000000}
e_watch=${E_WATCH:-3}
d_rounds=${D_ROUNDS:-2}
skip=${SKIP:-}
drain_timeout=${DRAIN_TIMEOUT:-600}
export WRK_THREADS=${THREADS:-2} WRK_CONNECTIONS=${CONNECTIONS:-32}

bench_require nginx wrk python3 curl
[[ -x $bin ]] || { say "no repeaterd binary at $bin"; exit 2; }
bench_init
results=$work/results.txt
: >"$results"
t_begin=$SECONDS

# Records one result: key value (read by the report at the end).
put() { echo "$1 $2" >>"$results"; }
skipped() { [[ $skip == *"$1"* ]]; }
phase() { say "[$((SECONDS - t_begin))s] $*"; }
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

closed=$(closed_port)
start_nginx
inbox=http://127.0.0.1:$nginx_port/inbox

# The A connection: nginx with max_in_flight 32 (forward_bench.sh's), and its form repeater.
a_connections() {
  echo "connections:"
  config_connection nginx "$inbox" 32
}

a_body() {
  a_connections
  echo "repeaters:"
  config_form_repeater forms-to-nginx demo nginx
}

# Starts a repeaterd for phase dir $1 (config body, i.e. connections: and repeaters:, on stdin;
# queue summary every $2, default 60s); sets port and the lib's rd_pid / rd_exec.
start_phase() {
  local dir=$1
  mkdir -p "$dir"
  port=$(free_port)
  { config_head "$port" "$dir/db" "$dir/events.log" "$dir/admin.sock" "${2:-60s}"; cat; } >"$dir/repeaterd.yaml"
  start_repeaterd "$dir/repeaterd.yaml" "$dir/repeaterd.stderr" "$port"
  wait_ready "$dir/admin.sock" "$rd_pid"
}

# Ingest for WRK_DURATION into domain $2 of the repeaterd of phase dir $1 (NEW_CASES from
# $3), then waits for every record of repeaters $4... created in this run to be delivered.
# Sets e2e_rate (delivered / seconds from first submission to last delivery), e2e_ingest
# (wrk req/s), e2e_delivered, e2e_span, e2e_cpu_s (repeaterd's user + system CPU seconds over
# the ingest and the drain); the stats JSON is in $1/stats.json.
ingest_and_drain() {
  local dir=$1 domain=$2 new_cases=$3
  shift 3
  local reps=() r
  for r in "$@"; do reps+=(--repeater "$r"); done
  local t0 ticks0
  t0=$(now)
  ticks0=$(cpu_ticks "$rd_pid")
  e2e_ingest=$(BENCH_TOKEN=$token BENCH_NEW_CASES=$new_cases \
    run_wrk "http://127.0.0.1:$port/a/$domain/receiver" "$dir/wrk.txt")
  python3 "$root/bench/delivery_stats.py" "$dir/events.log" "$drain_timeout" --json "${reps[@]}" >"$dir/stats.json"
  e2e_cpu_s=$(awk -v a="$(cpu_ticks "$rd_pid")" -v b="$ticks0" -v hz="$(getconf CLK_TCK)" 'BEGIN {print (a - b) / hz}')
  read -r e2e_rate e2e_span e2e_delivered < <(python3 - "$dir/stats.json" "$t0" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1])); t0 = float(sys.argv[2])
span = s["last_delivery"] - t0
print(f"{s['succeeded'] / span if span > 0 else 0:.1f} {span:.2f} {s['succeeded']}")
if s["succeeded"] < s["created"] or s["timed_out"]:
    print(f"throughput: {s['created'] - s['succeeded']} record(s) not delivered", file=sys.stderr)
EOF
)
}

# ---------------------------------------------------------------- raw: wrk -> nginx
phase "raw: wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$duration -> nginx"
raw=$(BENCH_TOKEN= WRK_DURATION=$duration run_wrk "$inbox" "$work/wrk-raw.txt")
put raw "$raw"
if ! skipped C; then
  phase "raw: wrk -c$lat_connections -d$lat_duration --latency -> nginx"
  BENCH_TOKEN= WRK_DURATION=$lat_duration WRK_CONNECTIONS=$lat_connections WRK_EXTRA=--latency \
    run_wrk "$inbox" "$work/wrk-raw-lat.txt" >/dev/null
  put raw_p99 "$(wrk_percentile_ms "$work/wrk-raw-lat.txt" 99)"
fi

# ---------------------------------------------------------------- A and G: a new case per form
if ! skipped A || ! skipped G || ! skipped H; then
  phase "A: ingest $duration, every form a new case, one form repeater"
  start_phase "$work/A" < <(a_body)
  WRK_DURATION=$duration ingest_and_drain "$work/A" demo 1 forms-to-nginx
  put A_rate "$e2e_rate"; put A_ingest "$e2e_ingest"; put A_n "$e2e_delivered"; put A_span "$e2e_span"
  put A_cpu_s "$e2e_cpu_s"
  # G: the database with its WAL as it stands once everything is delivered, per record.
  put G_bytes "$(db_bytes "$work/A/db")"
  put G_n "$e2e_delivered"
  put G_payload "$(python3 - "$form" "$work/A/events.log" <<'EOF'
import json, re, sys
form = open(sys.argv[1], "rb").read()
head, tail = re.match(rb"^(.*<n1:instanceID>)[^<]*(</n1:instanceID>.*)$", form, re.S).groups()
case = re.search(rb'case_id="([^"]*)"', form).group(1)
sizes = []
for line in open(sys.argv[2], "rb"):
    if b'"record.created"' in line:
        pid = json.loads(line)["payload_id"].encode()
        # submit_form.lua: instanceID = id, case_id = "case-" + id (BENCH_NEW_CASES=1)
        sizes.append(len(head) + len(pid) + len(tail) - len(case) + len(b"case-" + pid))
print(f"{sum(sizes) / len(sizes):.1f}" if sizes else "nan")
EOF
)"
  stop_repeaterd
  put G_bytes_stopped "$(db_bytes "$work/A/db")"
  rm -rf "$work/A"
fi

# ---------------------------------------------------------------- B: one hot case
if ! skipped B; then
  phase "B: ingest $duration, every form updates one case"
  start_phase "$work/B" < <(a_body)
  WRK_DURATION=$duration ingest_and_drain "$work/B" demo 0 forms-to-nginx
  put B_rate "$e2e_rate"; put B_ingest "$e2e_ingest"; put B_n "$e2e_delivered"
  stop_repeaterd
  rm -rf "$work/B"
fi

# ---------------------------------------------------------------- C: ingest latency at -c64
if ! skipped C; then
  phase "C: wrk -c$lat_connections -d$lat_duration --latency -> repeaterd (A setup)"
  start_phase "$work/C" < <(a_body)
  BENCH_TOKEN=$token BENCH_NEW_CASES=1 WRK_DURATION=$lat_duration WRK_CONNECTIONS=$lat_connections \
    WRK_EXTRA=--latency run_wrk "http://127.0.0.1:$port/a/demo/receiver" "$work/C/wrk.txt" >/dev/null
  put C_p99 "$(wrk_percentile_ms "$work/C/wrk.txt" 99)"
  put C_p50 "$(wrk_percentile_ms "$work/C/wrk.txt" 50)"
  put C_n "$(wrk_requests "$work/C/wrk.txt")"
  stop_repeaterd
  rm -rf "$work/C"
fi

# ---------------------------------------------------------------- H: fan-out to N repeaters
if ! skipped H; then
  phase "H: ingest $fanout_duration, every form to $fanout form repeaters on one connection"
  fan=()
  for ((i = 1; i <= fanout; i++)); do fan+=("fan-$i"); done
  start_phase "$work/H" < <(
    a_connections
    echo "repeaters:"
    for r in "${fan[@]}"; do config_form_repeater "$r" demo nginx; done
  )
  WRK_DURATION=$fanout_duration ingest_and_drain "$work/H" demo 1 "${fan[@]}"
  put H_rate "$e2e_rate"; put H_ingest "$e2e_ingest"; put H_n "$e2e_delivered"
  stop_repeaterd
  rm -rf "$work/H"
fi

# The backlog repeater: forms of domain bulk, on connection $1, paused $2.
bulk_repeater() { config_form_repeater bulk-forms bulk "$1" "$2"; }
# The default connection to nginx (no max_in_flight: F's "default config").
default_connections() {
  echo "connections:"
  config_connection nginx-default "$inbox"
}

# The backlog alone, paused in the config.
bulk_body() {
  default_connections
  echo "repeaters:"
  bulk_repeater nginx-default true
}

# ---------------------------------------------------------------- E0: baselines of E
if ! skipped E; then
  phase "E0: one queued record: idle RSS, restart to first delivery"
  start_phase "$work/E0" 1s < <(bulk_body)
  sleep 2
  put E_rss_idle "$(rss_kib "$rd_pid")"
  code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" -H 'Content-Type: text/xml' \
    --data-binary @"$form" "http://127.0.0.1:$port/a/bulk/receiver")
  [[ $code == 201 ]] || die "E0: the seed form got $code"
  stop_repeaterd
  sed -i 's/paused: true/paused: false/' "$work/E0/repeaterd.yaml"
  : >"$work/E0/events.log"
  start_repeaterd "$work/E0/repeaterd.yaml" "$work/E0/repeaterd.stderr" "$port"
  python3 "$root/bench/delivery_stats.py" "$work/E0/events.log" 60 --first --json >"$work/E0/stats.json"
  put E_restart_base "$(python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.3f}")' \
    "$(jget "$work/E0/stats.json" first_delivery)" "$rd_exec")"
  stop_repeaterd
  rm -rf "$work/E0"
fi

# ---------------------------------------------------------------- the backlog, through HTTP ingest
# One database, filled level by level (each level a repeaterd with bulk-forms paused in the
# config: records are stored exactly as the daemon stores them, and never attempted).
levels=()
skipped D || levels+=("$d_records")
skipped F || levels+=("$f_records")
skipped E || levels+=("$e_records")
queued=0
if ((${#levels[@]})); then
  mapfile -t levels < <(printf '%s\n' "${levels[@]}" | sort -n -u)
  mkdir -p "$work/fill"
  for level in "${levels[@]}"; do
    if ((level > queued)); then
      phase "fill: $((level - queued)) forms into bulk-forms (paused) to reach $level"
      t0=$(now)
      rm -f "$work/fill/events.log"
      start_phase "$work/fill" < <(bulk_body)
      BENCH_TOKEN=$token BENCH_NEW_CASES=1 WRK_CONNECTIONS=${FILL_CONNECTIONS:-128} \
        fill_wrk "http://127.0.0.1:$port/a/bulk/receiver" "$work/fill/wrk-$level.txt" $((level - queued))
      queued=$((queued + $(count_created "$work/fill/events.log" bulk-forms)))
      fill_rss=$(rss_kib "$rd_pid") fill_hwm=$(hwm_kib "$rd_pid")
      stop_repeaterd
      say "fill: $queued queued, $(awk -v a="$(now)" -v b="$t0" 'BEGIN {printf "%.0f", a - b}') s;" \
        "RSS $fill_rss KiB, peak $fill_hwm KiB"
    fi
    # D and F get a copy of the database at their level; E uses the fill's own, last.
    if { ! skipped D && ((level == d_records)); } || { ! skipped F && ((level == f_records)); }; then
      mkdir -p "$work/snap-$level"
      cp -a "$work/fill/db" "$work/snap-$level/"
      for f in "$work/fill/db-wal" "$work/fill/db-shm"; do [[ -e $f ]] && cp -a "$f" "$work/snap-$level/"; done
      echo "$queued" >"$work/snap-$level/queued"
    fi
    if [[ $level == "$e_records" ]]; then put E_fill_rss "$fill_rss"; put E_fill_hwm "$fill_hwm"; fi
  done
fi

# Copies snapshot level $1 into phase dir $2.
use_snapshot() {
  mkdir -p "$2"
  cp -a "$work/snap-$1/." "$2/"
  snap_queued=$(cat "$2/queued")
}

# ---------------------------------------------------------------- D: a dead connection's backlog
# D_ROUNDS rounds, solo/dead then dead/solo (so a drift of the machine's load hits both alike),
# each on a fresh copy of the backlog; each mode's figure is the mean of its rounds' rates.
if ! skipped D; then
  order=()
  for ((i = 1; i <= d_rounds; i++)); do
    if ((i % 2)); then order+=(solo dead); else order+=(dead solo); fi
  done
  for mode in "${order[@]}"; do
    paused=true
    [[ $mode == dead ]] && paused=false
    phase "D ($mode): ingest $duration to the A setup, bulk-forms (backlog $d_records) on a dead connection, paused $paused"
    use_snapshot "$d_records" "$work/D-$mode"
    start_phase "$work/D-$mode" < <(
      a_connections
      config_connection dead "http://127.0.0.1:$closed/inbox"
      echo "repeaters:"
      config_form_repeater forms-to-nginx demo nginx
      bulk_repeater dead "$paused"
    )
    WRK_DURATION=$duration ingest_and_drain "$work/D-$mode" demo 1 forms-to-nginx
    put "D_${mode}_rate_round" "$e2e_rate"; put "D_${mode}_n_round" "$e2e_delivered"; put D_queued "$snap_queued"
    put "D_${mode}_dead_attempts_round" "$(grep -F '"attempt.failed"' "$work/D-$mode/events.log" | grep -cF '"repeater":"bulk-forms"' || true)"
    stop_repeaterd
    rm -rf "$work/D-$mode"
  done
fi

# ---------------------------------------------------------------- F: drain a backlog
if ! skipped F; then
  phase "F: release $f_records queued records to nginx on the default connection"
  use_snapshot "$f_records" "$work/F"
  start_phase "$work/F" < <(bulk_body)
  sed -i 's/paused: true/paused: false/' "$work/F/repeaterd.yaml"
  t_release=$(now)
  answer=$(admin_call "$work/F/admin.sock" POST /api/v1/reload)
  [[ $answer == *'"reloaded":true'* ]] || die "F: reload refused: $answer"
  python3 "$root/bench/delivery_stats.py" "$work/F/events.log" "$drain_timeout" --json \
    --repeater bulk-forms --expect "$snap_queued" >"$work/F/stats.json"
  read -r f_rate f_n f_first < <(python3 - "$work/F/stats.json" "$t_release" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1])); t0 = float(sys.argv[2])
span = s["last_delivery"] - t0
print(f"{s['succeeded'] / span if span > 0 else 0:.1f} {s['succeeded']} {s['first_delivery'] - t0:.3f}")
EOF
)
  put F_rate "$f_rate"; put F_n "$f_n"; put F_queued "$snap_queued"; put F_first "$f_first"
  stop_repeaterd
  rm -rf "$work/F"
fi
for level in "${levels[@]}"; do rm -rf "$work/snap-$level"; done

# ---------------------------------------------------------------- E: a million queued
if ! skipped E; then
  phase "E: $e_records queued, paused: RSS"
  rm -f "$work/fill/events.log"
  start_phase "$work/fill" 1s < <(bulk_body)
  sleep 3  # a queue summary (every 1 s here) and the scheduler's first look at the backlog
  put E_rss_paused "$(rss_kib "$rd_pid")"; put E_hwm_paused "$(hwm_kib "$rd_pid")"
  stop_repeaterd
  phase "E: restart with paused: false, to the first delivery; RSS while draining for ${e_watch}s"
  sed -i 's/paused: true/paused: false/' "$work/fill/repeaterd.yaml"
  rm -f "$work/fill/events.log"
  start_repeaterd "$work/fill/repeaterd.yaml" "$work/fill/repeaterd.stderr" "$port"
  python3 "$root/bench/delivery_stats.py" "$work/fill/events.log" 120 --first --json >"$work/fill/stats.json"
  put E_listen "$(awk -v a="$rd_listening" -v b="$rd_exec" 'BEGIN {printf "%.3f", a - b}')"
  put E_restart "$(python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.3f}")' \
    "$(jget "$work/fill/stats.json" first_delivery)" "$rd_exec")"
  sleep "$e_watch"
  put E_rss_draining "$(rss_kib "$rd_pid")"; put E_hwm_draining "$(hwm_kib "$rd_pid")"
  put E_queued "$queued"
  put E_db_bytes "$(db_bytes "$work/fill/db")"
  stop_repeaterd
fi

phase "done"
put elapsed $((SECONDS - t_begin))
put config "duration=$duration lat_duration=$lat_duration fanout_duration=$fanout_duration threads=$WRK_THREADS connections=$WRK_CONNECTIONS"
python3 "$root/bench/throughput_report.py" "$results"
