# Shared helpers for the shell benchmarks (sourced by forward_bench.sh and throughput.sh; not run
# on its own). Everything stays on 127.0.0.1 and in one temp dir; every process started here is
# tracked by pid and stopped, by that pid, when the calling script exits.
#
# The caller sets `bench_name` (used in messages) before sourcing, then calls bench_init.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
form=$root/tests/integration/data/seed_form.xml
lua=$root/bench/submit_form.lua
token=bench-token
bench_name=${bench_name:-bench}

work=
nginx_pid=
nginx_port=
started_pids=()  # every repeaterd started, in order

say() { echo "$bench_name: $*" >&2; }
die() { say "$*"; exit 1; }

bench_require() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { say "$tool not found"; exit 2; }
  done
}

# Stops one process we started: $1 pid, $2 signal, $3 seconds before SIGKILL.
stop_pid() {
  local pid=$1 sig=$2 grace=$3
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -"$sig" "$pid" 2>/dev/null || true
  timeout "$grace" tail --pid="$pid" -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Stops what we started (by pid) and removes the temp dir, however the script ends.
bench_cleanup() {
  local rc=$?
  local pid
  for pid in "${started_pids[@]}"; do stop_pid "$pid" TERM 25; done
  stop_pid "$nginx_pid" QUIT 10
  if [[ -n $work ]]; then
    if [[ ${KEEP:-0} == 1 || $rc -ne 0 ]]; then
      say "kept $work"
    else
      rm -rf "$work"
    fi
  fi
  exit "$rc"
}

bench_init() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/repeaterd-bench.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts TCP connections on 127.0.0.1:$1 (the process is $2).
wait_port() {
  local port=$1 pid=$2 deadline=$((SECONDS + ${3:-20}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { say "process $pid died"; return 1; }
    ((SECONDS < deadline)) || { say "port $port not ready"; return 1; }
    sleep 0.02
  done
}

now() { date +%s.%N; }

# Starts the loopback receiver (nginx answering 200 "{}") once; sets nginx_port and nginx_pid.
# NGINX_FAIL_PERCENT (default 0) of its answers, at random, are 500.
start_nginx() {
  nginx_port=$(free_port)
  mkdir -p "$work/nginx"
  local fail=${NGINX_FAIL_PERCENT:-0} fail_rule
  # split_clients takes no 0 %: with none failing, its only bucket is "* 0".
  if [[ $fail == 0 ]]; then fail_rule="/@FAIL_PERCENT@/d"; else fail_rule="s|@FAIL_PERCENT@|$fail|g"; fi
  sed -e "s|@WORK@|$work/nginx|g" -e "s|@PORT@|$nginx_port|g" -e "$fail_rule" \
    "$root/bench/nginx.conf.in" >"$work/nginx/nginx.conf"
  nginx -p "$work/nginx" -e "$work/nginx/nginx-error.log" -c "$work/nginx/nginx.conf" &
  nginx_pid=$!
  wait_port "$nginx_port" "$nginx_pid"
}

# A port nothing listens on (bound once, then closed): connections to it are refused at once.
closed_port() { free_port; }

# Prints the top of a repeaterd config: listener on port $1, database $2, event log $3, admin
# socket $4, queue summary every $5 (default 60s), retention BENCH_RETENTION (default 1d).
# Callers append connections: and repeaters:.
# Ingest tokens: domains demo and bulk, both with $token (env REPEATERD_BENCH_TOKEN).
config_head() {
  cat <<EOF
listen:
  address: 127.0.0.1
  port: $1
  max_body: 10MiB
  max_connections: 1024
ingest_tokens:
  - domain: demo
    token_env: REPEATERD_BENCH_TOKEN
  - domain: bulk
    token_env: REPEATERD_BENCH_TOKEN
admin:
  listen: unix:$4
storage:
  path: $2
  retention: ${BENCH_RETENTION:-1d}
log:
  events_file: $3
  level: warn
  queue_summary_every: ${5:-60s}
EOF
}

# Prints one connection: name $1, url $2, max_in_flight $3 (empty: the default, and no other
# setting either: connect_timeout, timeout left at their defaults too).
config_connection() {
  echo "  - name: $1"
  echo "    url: $2"
  if [[ -n ${3:-} ]]; then
    echo "    connect_timeout: 5s"
    echo "    timeout: 30s"
    echo "    max_in_flight: $3"
  fi
}

# The retry policy of every bench repeater (attempts to a dead receiver back off from 1 s).
bench_retry="{initial: 1s, multiplier: 2, max_delay: 30s, max_attempts: 10, max_attempts_client_error: 3, jitter: 0.1}"

# Prints one form repeater: name $1, domain $2, connection $3, paused $4 (true/false).
config_form_repeater() {
  cat <<EOF
  - name: $1
    domain: $2
    type: form
    format: xml
    connection: $3
    paused: ${4:-false}
    retry: $bench_retry
EOF
}

# Starts repeaterd ($bin) with config $1, stderr to $2; sets rd_pid and rd_exec (epoch just
# before exec), waits until its ingest port $3 accepts connections and sets rd_listening (epoch
# then).
start_repeaterd() {
  local config=$1 stderr=$2 port=$3
  rd_exec=$(now)
  REPEATERD_BENCH_TOKEN=$token "$bin" --config "$config" 2>"$stderr" &
  rd_pid=$!
  started_pids+=("$rd_pid")
  wait_port "$port" "$rd_pid" 120 || { tail -5 "$stderr" >&2; return 1; }
  rd_listening=$(now)
}

stop_repeaterd() { stop_pid "$rd_pid" TERM 25; }

# The admin API over the unix socket $1: METHOD $2, path $3. Prints the body.
admin_call() {
  curl -sS --max-time 30 --unix-socket "$1" -X "$2" "http://repeaterd$3"
}

wait_ready() {  # admin socket $1, pid $2
  local deadline=$((SECONDS + 120))
  until [[ $(curl -s --max-time 5 --unix-socket "$1" -o /dev/null -w '%{http_code}' http://repeaterd/readyz 2>/dev/null) == 200 ]]; do
    kill -0 "$2" 2>/dev/null || { say "repeaterd $2 died"; return 1; }
    ((SECONDS < deadline)) || { say "repeaterd not ready"; return 1; }
    sleep 0.05
  done
}

# User + system CPU of process $1 so far, in clock ticks (getconf CLK_TCK a second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Size in bytes of a SQLite database with its -wal and -shm files.
db_bytes() { du -cb "$1" "$1-wal" "$1-shm" 2>/dev/null | awk 'END {print $1}'; }

# Runs wrk with the form script against URL $1, its report to $2. Knobs from the environment:
# WRK_THREADS, WRK_CONNECTIONS, WRK_DURATION (a number of seconds with s), WRK_EXTRA (more wrk
# arguments, e.g. --latency); BENCH_TOKEN, BENCH_NEW_CASES, BENCH_NO_CASE, BENCH_DELAY_MS and
# BENCH_MAX_REQUESTS go to
# submit_form.lua. Prints Requests/sec on stdout; warns about non-2xx answers.
run_wrk() {
  local url=$1 report=$2
  local t=${WRK_THREADS:-2} c=${WRK_CONNECTIONS:-32} d=${WRK_DURATION:-10s}
  local secs=${d%s}
  # shellcheck disable=SC2086
  BENCH_FORM=$form BENCH_RUN="$RANDOM$$$RANDOM" BENCH_THREADS=$t \
    timeout $((secs + 60)) wrk -t"$t" -c"$c" -d"$d" --timeout 10s ${WRK_EXTRA:-} \
      -s "$lua" "$url" >"$report"
  if grep -q "Non-2xx or 3xx responses" "$report"; then
    say "non-2xx answers from $url:"
    grep "Non-2xx" "$report" >&2
  fi
  awk '/^Requests\/sec:/ {print $2}' "$report"
}

# Total requests wrk completed, from its report $1.
wrk_requests() { awk '/requests in/ {print $1}' "$1"; }

# The latency percentile $2 (50, 75, 90, 99) from a wrk --latency report $1, in ms.
wrk_percentile_ms() {
  awk -v p="$2%" '
    $1 == p {
      v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
      f = (unit == "us") ? 0.001 : (unit == "ms") ? 1 : (unit == "s") ? 1000 : (unit == "m") ? 60000 : 0
      printf "%.3f\n", v * f; found = 1; exit
    }
    END { if (!found) print "nan" }' "$1"
}

# Submits about N ($3) forms to URL $1 as fast as wrk can, report to $2 (WRK_* and BENCH_*
# knobs as for run_wrk): each wrk thread stops after its share of N answers, and wrk is
# interrupted once all have. Requests already on the wire still complete, so up to
# WRK_CONNECTIONS more may be stored: count the records, not the requests. Bounded in time
# too: the slowest plausible ingest (500 forms/s) plus a minute.
fill_wrk() {
  local url=$1 report=$2 n=$3
  local t=${WRK_THREADS:-2} c=${WRK_CONNECTIONS:-32}
  local secs=$((n / 500 + 60)) done_dir
  done_dir=$(mktemp -d "$work/fill-done.XXXXXX")
  BENCH_FORM=$form BENCH_RUN="$RANDOM$$$RANDOM" BENCH_THREADS=$t BENCH_MAX_REQUESTS=$n \
    BENCH_DONE_DIR=$done_dir wrk -t"$t" -c"$c" -d"${secs}s" --timeout 10s -s "$lua" "$url" >"$report" &
  local wrk_pid=$! deadline=$((SECONDS + secs + 30))
  while kill -0 "$wrk_pid" 2>/dev/null; do
    if (($(find "$done_dir" -name 'thread-*' | wc -l) >= t)) || ((SECONDS > deadline)); then
      kill -INT "$wrk_pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  stop_pid "$wrk_pid" INT 30
  rm -rf "$done_dir"
  if grep -q "Non-2xx or 3xx responses" "$report"; then
    say "non-2xx answers from $url:"
    grep "Non-2xx" "$report" >&2
  fi
}

# Counts record.created lines in event log $1 (optionally only those of repeater $2).
count_created() {
  if [[ -n ${2:-} ]]; then
    grep -F '"record.created"' "$1" | grep -cF "\"repeater\":\"$2\"" || true
  else
    grep -cF '"record.created"' "$1" || true
  fi
}
