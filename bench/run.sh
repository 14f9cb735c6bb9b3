#!/usr/bin/env bash
# Benchmarks of vercel-secret-rotator against a fake Vercel (examples/fake_vercel.rs) and, as
# the yardstick, the same bulk rotation on Vercel's official SDK (bench/sdk/rotate.mjs).
# What each scenario measures and the figures: BENCHMARKS.md. Not run in CI.
#
#   bench/run.sh                      every scenario
#   bench/run.sh once sdk             only some: once ratelimit window bucket sdk sdk-ratelimit
#                                     idle check fsync fleet fleet-big (the fleet ones run
#                                     only when named)
#
# Environment (defaults): N=10000 LATENCY_MS=50 CONCURRENCY=64 INSTALLATIONS=8 RATE=200
# BURST=10 WINDOW_SECS=10 WINDOW_LIMIT=$((RATE * WINDOW_SECS)) BUCKET_N=122 BUCKET_RATE=20
# BUCKET_CONCURRENCY=16 RUNS=3 RUNS_RATELIMIT=$RUNS IDLE_SECONDS=60 FAKE_THREADS=1 SKIP_BUILD=0
# BIN_DIR=${CARGO_TARGET_DIR:-target}/release (holds vercel-secret-rotator and
# examples/fake_vercel or fake_vercel) OUT=a new temp dir (results.tsv and logs).
# Fleets: FLEET_INSTALLATIONS=2000 FLEET_PER_INSTALLATION=5 FLEET_WINDOW_SECS=1
# FLEET_WINDOW_LIMIT=$((RATE * FLEET_WINDOW_SECS)) FLEET_EVERY=10m FLEET_TIMEOUT=300
# BIG_INSTALLATIONS=20000 BIG_RESOURCES=100000 BIG_SETTLE=3 (seconds from ready to the RSS
# reading).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
N="${N:-10000}"
LATENCY_MS="${LATENCY_MS:-50}"
CONCURRENCY="${CONCURRENCY:-64}"
INSTALLATIONS="${INSTALLATIONS:-8}"
RATE="${RATE:-200}"
BURST="${BURST:-10}"
WINDOW_SECS="${WINDOW_SECS:-10}"
WINDOW_LIMIT="${WINDOW_LIMIT:-$((RATE * WINDOW_SECS))}"
BUCKET_N="${BUCKET_N:-122}"
BUCKET_RATE="${BUCKET_RATE:-20}"
BUCKET_CONCURRENCY="${BUCKET_CONCURRENCY:-16}"
RUNS="${RUNS:-3}"
RUNS_RATELIMIT="${RUNS_RATELIMIT:-$RUNS}"
IDLE_SECONDS="${IDLE_SECONDS:-60}"
FAKE_THREADS="${FAKE_THREADS:-1}"
BIN_DIR="${BIN_DIR:-$(realpath -m "${CARGO_TARGET_DIR:-$repo/target}")/release}"
FLEET_INSTALLATIONS="${FLEET_INSTALLATIONS:-2000}"
FLEET_PER_INSTALLATION="${FLEET_PER_INSTALLATION:-5}"
FLEET_WINDOW_SECS="${FLEET_WINDOW_SECS:-1}"
FLEET_WINDOW_LIMIT="${FLEET_WINDOW_LIMIT:-$((RATE * FLEET_WINDOW_SECS))}"
FLEET_EVERY="${FLEET_EVERY:-10m}"
FLEET_TIMEOUT="${FLEET_TIMEOUT:-300}"
BIG_INSTALLATIONS="${BIG_INSTALLATIONS:-20000}"
BIG_RESOURCES="${BIG_RESOURCES:-100000}"
BIG_SETTLE="${BIG_SETTLE:-3}"
OUT="${OUT:-$(mktemp -d /tmp/vsr-bench.XXXXXX)}"
mkdir -p "$OUT"
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(once ratelimit window bucket sdk sdk-ratelimit idle check fsync)
want() { local s; for s in "${scenarios[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
log() { printf '[bench] %s\n' "$*" >&2; }

# --- tools -----------------------------------------------------------------------------------
need_apt=()
[ -x /usr/bin/time ] || need_apt+=(time)
if want check; then command -v hyperfine >/dev/null 2>&1 || need_apt+=(hyperfine); fi
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v node >/dev/null 2>&1 || { echo "node (>= 18) is needed for the SDK peer and for the summary" >&2; exit 2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release --bin vercel-secret-rotator --example fake_vercel"
  (cd "$repo" && cargo build --release --bin vercel-secret-rotator --example fake_vercel)
fi
rotator="$BIN_DIR/vercel-secret-rotator"
fake_bin="$BIN_DIR/examples/fake_vercel"
[ -x "$fake_bin" ] || fake_bin="$BIN_DIR/fake_vercel"
[ -x "$rotator" ] && [ -x "$fake_bin" ] || { echo "no binaries in $BIN_DIR" >&2; exit 2; }
if { want sdk || want sdk-ratelimit; } && [ ! -d "$repo/bench/sdk/node_modules/@vercel/sdk" ]; then
  log "npm ci in bench/sdk"
  (cd "$repo/bench/sdk" && npm ci --no-audit --no-fund >/dev/null)
fi

clk_tck="$(getconf CLK_TCK)"
results="$OUT/results.tsv"
: >"$results"
record() { # scenario run wall_s cpu_s rss_kib ok extra...
  local IFS=$'\t'; printf '%s\n' "$*" >>"$results"
}

# --- the fake --------------------------------------------------------------------------------
fake_pid=""
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null || true
  [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

start_fake() { # extra args...
  stop_fake
  "$fake_bin" --port 0 --latency-ms "$LATENCY_MS" --installations "$INSTALLATIONS" \
    --resources "$N" --threads "$FAKE_THREADS" "$@" >"$OUT/fake.out" 2>"$OUT/fake.err" &
  fake_pid=$!
  for _ in $(seq 100); do
    fake_url="$(sed -n 's/^listening on //p' "$OUT/fake.out")"
    [ -n "$fake_url" ] && return 0
    sleep 0.05
  done
  echo "the fake did not start: $(cat "$OUT/fake.err")" >&2
  exit 1
}
stop_fake() {
  if [ -n "$fake_pid" ]; then kill "$fake_pid" 2>/dev/null || true; wait "$fake_pid" 2>/dev/null || true; fi
  fake_pid=""
}
fake_stats() { curl -fsS "$fake_url/__stats"; }
fake_reset() { curl -fsS -X POST "$fake_url/__reset" >/dev/null; }
# stat_of STATS_JSON KEY: one number of the fake's compact stats, without a node per poll.
stat_of() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" <<<"$1"; }
json_get() { node -e 'const o=JSON.parse(process.argv[1]);console.log(o[process.argv[2]])' "$1" "$2"; }
proc_cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# --- the config ------------------------------------------------------------------------------
# write_config DIR SCHEDULE: N resources over INSTALLATIONS installations, one policy each.
write_config() {
  local dir="$1" schedule="$2" i k
  mkdir -p "$dir/tokens"
  chmod 700 "$dir" "$dir/tokens"
  {
    printf '[vercel]\napi-url = "%s"\nrequest-timeout = "120s"\nmax-concurrent-requests = %s\n\n' \
      "$fake_url" "$CONCURRENCY"
    printf '[state]\ndir = "%s/state"\n\n' "$dir"
    for ((i = 0; i < INSTALLATIONS; i++)); do
      (umask 077 && printf 'benchtoken%s\n' "$i" >"$dir/tokens/$i.token")
      printf '[installations.i%s]\nid = "icfg_bench%s"\ntoken-file = "%s/tokens/%s.token"\n\n' \
        "$i" "$i" "$dir" "$i"
    done
    for ((i = 0; i < INSTALLATIONS; i++)); do
      printf '[[policies]]\nname = "bench-%s"\ninstallation = "i%s"\nresources = [' "$i" "$i"
      for ((k = i; k < N; k += INSTALLATIONS)); do printf '"res%s",' "$k"; done
      printf ']\nschedule = "%s"\ngrace = "1h"\n' "$schedule"
      printf 'provider = { kind = "random", length = 40, charset = "alphanumeric" }\n'
      printf '[[policies.secrets]]\nname = "PASSWORD"\nvalue = "{password}"\nprefix = "BENCH"\n\n'
    done
  } >"$dir/config.toml"
}

# timed NAME RUN CMD...: /usr/bin/time -v; sets wall cpu rss; returns the command's status.
timed() {
  local name="$1" run="$2"; shift 2
  local t0 t1 status=0
  t0="$(date +%s%N)"
  /usr/bin/time -v -o "$OUT/$name.$run.time" "$@" >"$OUT/$name.$run.out" 2>"$OUT/$name.$run.err" || status=$?
  t1="$(date +%s%N)"
  wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e9}')"
  cpu="$(awk -F': ' '/User time|System time/{s+=$2} END{printf "%.3f", s}' "$OUT/$name.$run.time")"
  rss="$(awk -F': ' '/Maximum resident set size/{print $2}' "$OUT/$name.$run.time")"
  return "$status"
}

ideal="$(awk -v n="$N" -v l="$LATENCY_MS" -v c="$CONCURRENCY" 'BEGIN{printf "%.3f", n*l/1000/c}')"

# bulk NAME CMD...: RUNS runs of a bulk rotation against the running fake, checked by its stats.
bulk() {
  local name="$1" runs="$2"; shift 2
  local run status stats ok distinct limited refused fake_t0 fake_cpu
  for ((run = 1; run <= runs; run++)); do
    fake_reset
    rm -rf "$work/state"
    fake_t0="$(proc_cpu_ticks "$fake_pid")"
    status=0
    timed "$name" "$run" "$@" || status=$?
    fake_cpu="$(awk -v a="$fake_t0" -v b="$(proc_cpu_ticks "$fake_pid")" -v t="$clk_tck" 'BEGIN{printf "%.2f", (b-a)/t}')"
    stats="$(fake_stats)"
    ok="$(json_get "$stats" puts_ok)"
    distinct="$(json_get "$stats" distinct_resources_updated)"
    limited="$(json_get "$stats" rate_limited)"
    refused="$(json_get "$stats" refused)"
    record "$name" "$run" "$wall" "$cpu" "$rss" "$ok" "exit=$status distinct=$distinct 429s=$limited refused=$refused not_partial=$(json_get "$stats" not_partial) odd_values=$(json_get "$stats" odd_values) fake_cpu_s=$fake_cpu max_in_flight=$(json_get "$stats" max_in_flight) ok_per_s_at_fake=$(json_get "$stats" ok_per_s | cut -c1-7) fake_mean_latency_ms=$(json_get "$stats" mean_latency_ms | cut -c1-6)"
    log "$name run $run: wall ${wall}s cpu ${cpu}s rss ${rss}KiB ok=$ok/$N distinct=$distinct 429s=$limited exit=$status pushes/s=$(awk -v n="$ok" -v w="$wall" 'BEGIN{printf "%.0f", n/w}') (ideal ${ideal}s, fake cpu ${fake_cpu}s)"
  done
}

work="$OUT/work"
mkdir -p "$work"
log "results in $OUT"

# --- scenarios -------------------------------------------------------------------------------
if want once || want sdk || want fsync; then
  start_fake
  write_config "$work" "0 3 * * 0"
  want once && bulk once "$RUNS" "$rotator" --config "$work/config.toml" run --once
  want sdk && bulk sdk "$RUNS" node "$repo/bench/sdk/rotate.mjs" --url "$fake_url" \
    --resources "$N" --installations "$INSTALLATIONS" --concurrency "$CONCURRENCY"
  if want fsync && command -v strace >/dev/null 2>&1; then
    # One extra run under strace: how many fsyncs the state store makes for N rotations.
    fake_reset
    rm -rf "$work/state"
    strace -f -c -e trace=fsync,fdatasync,sync_file_range,rename,renameat,renameat2 -o "$OUT/fsync.strace" \
      "$rotator" --config "$work/config.toml" run --once >/dev/null 2>"$OUT/fsync.err" || true
    log "syscalls of one run --once (strace -c):"
    cat "$OUT/fsync.strace" >&2
    record fsync 1 - - - "$(json_get "$(fake_stats)" puts_ok)" \
      "$(awk '$NF ~ /^(fsync|fdatasync|rename|renameat|renameat2)$/ {printf "%s=%s ", $NF, $4}' "$OUT/fsync.strace")"
  fi
fi

if want ratelimit || want sdk-ratelimit; then
  start_fake --rate-limit "$RATE" --burst "$BURST"
  write_config "$work" "0 3 * * 0"
  want ratelimit && bulk ratelimit "$RUNS_RATELIMIT" "$rotator" --config "$work/config.toml" run --once
  want sdk-ratelimit && bulk sdk-ratelimit "$RUNS_RATELIMIT" node "$repo/bench/sdk/rotate.mjs" --url "$fake_url" \
    --resources "$N" --installations "$INSTALLATIONS" --concurrency "$CONCURRENCY"
fi

# A Vercel-like fixed window (WINDOW_LIMIT requests per WINDOW_SECS, aligned on Unix time)
# with the X-RateLimit-* headers on every answer: the client paces by them.
if want window; then
  start_fake --window-limit "$WINDOW_LIMIT" --window-secs "$WINDOW_SECS"
  write_config "$work" "0 3 * * 0"
  bulk window "$RUNS_RATELIMIT" "$rotator" --config "$work/config.toml" run --once
fi

# A token bucket whose headers describe no window (none on success; on a 429, Retry-After
# rounded up to whole seconds and the time the bucket is full, no limit): BUCKET_N pushes,
# BUCKET_CONCURRENCY in flight, against BUCKET_RATE/s with a bucket of as many.
if want bucket; then
  saved_n="$N" saved_concurrency="$CONCURRENCY"
  N="$BUCKET_N" CONCURRENCY="$BUCKET_CONCURRENCY"
  start_fake --rate-limit "$BUCKET_RATE" --burst "$BUCKET_RATE" --bucket-headers bare
  write_config "$work" "0 3 * * 0"
  bulk bucket "$RUNS" "$rotator" --config "$work/config.toml" run --once
  N="$saved_n" CONCURRENCY="$saved_concurrency"
fi

if want idle || want check; then
  start_fake
  idle_dir="$OUT/idle"
  rm -rf "$idle_dir"
  # Yearly (1 January, 03:00): nothing is due for the whole measurement.
  write_config "$idle_dir" "0 3 1 1 *"
fi

if want idle; then
  t0="$(date +%s%N)"
  "$rotator" --config "$idle_dir/config.toml" run >"$OUT/idle.out" 2>"$OUT/idle.err" &
  daemon_pid=$!
  for _ in $(seq 600); do
    grep -q "daemon started" "$OUT/idle.err" && break
    kill -0 "$daemon_pid" 2>/dev/null || { echo "the daemon exited: $(cat "$OUT/idle.err")" >&2; exit 1; }
    sleep 0.1
  done
  startup="$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN{printf "%.2f", (b-a)/1e9}')"
  sleep 2
  c0="$(proc_cpu_ticks "$daemon_pid")"
  rss_max=0
  for ((s = 0; s < IDLE_SECONDS; s += 5)); do
    r="$(awk '/^VmRSS:/{print $2}' "/proc/$daemon_pid/status")"
    [ "$r" -gt "$rss_max" ] && rss_max="$r"
    sleep 5
  done
  r="$(awk '/^VmRSS:/{print $2}' "/proc/$daemon_pid/status")"
  [ "$r" -gt "$rss_max" ] && rss_max="$r"
  c1="$(proc_cpu_ticks "$daemon_pid")"
  hwm="$(awk '/^VmHWM:/{print $2}' "/proc/$daemon_pid/status")"
  cpu="$(awk -v a="$c0" -v b="$c1" -v t="$clk_tck" 'BEGIN{printf "%.2f", (b-a)/t}')"
  total_cpu="$(awk -v b="$c1" -v t="$clk_tck" 'BEGIN{printf "%.2f", b/t}')"
  kill "$daemon_pid"
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=""
  record idle 1 "$IDLE_SECONDS" "$cpu" "$rss_max" - "startup_s=$startup startup_peak_rss_kib=$hwm cpu_since_start_s=$total_cpu"
  log "idle: ${IDLE_SECONDS}s window: cpu ${cpu}s, rss max ${rss_max}KiB (peak incl. startup ${hwm}KiB, startup ${startup}s)"
fi

if want check; then
  hyperfine -N --warmup 2 --runs 20 --export-json "$OUT/check.json" \
    "$rotator --config $idle_dir/config.toml check" >"$OUT/check.hyperfine" 2>&1
  cat "$OUT/check.hyperfine" >&2
  median="$(node -e 'const r=require(process.argv[1]).results[0];console.log(r.median.toFixed(3))' "$OUT/check.json")"
  timed check 1 "$rotator" --config "$idle_dir/config.toml" check || true
  record check 20 "$median" "$cpu" "$rss" - "hyperfine median of 20 (cpu/rss from one /usr/bin/time run)"
fi

# --- fleets ----------------------------------------------------------------------------------
# write_tokens DIR COUNT: DIR/installations/icfg_bench{i}.token (0600, in a 0700 directory),
# as a partner's backend writes them on Upsert Installation.
write_tokens() {
  local dir="$1" count="$2" i
  mkdir -p "$dir/installations"
  chmod 700 "$dir" "$dir/installations"
  (
    umask 077
    for ((i = 0; i < count; i++)); do printf 'benchtoken%s\n' "$i" >"$dir/installations/icfg_bench$i.token"; done
  )
}

# write_fleet_config DIR [STATE_DIR]: discovery from DIR/installations, one policy over every
# installation with a selector, a yearly schedule (nothing is due while measured).
write_fleet_config() {
  local dir="$1" state="${2:-$1/state}"
  cat >"$dir/config.toml" <<EOF
[vercel]
api-url = "$fake_url"
request-timeout = "120s"
max-concurrent-requests = $CONCURRENCY

[state]
dir = "$state"

[discovery]
installations-dir = "$dir/installations"
every = "$FLEET_EVERY"

[[policies]]
name = "fleet"
installations = "*"
resources = { product-ids = ["iap_bench_db"], metadata = { tier = "pro" } }
schedule = "0 3 1 1 *"
grace = "1h"
provider = { kind = "random", length = 40, charset = "alphanumeric" }
[[policies.secrets]]
name = "PASSWORD"
value = "{password}"
prefix = "BENCH"
EOF
}

# start_daemon NAME CONFIG: the daemon in the background; sets daemon_pid and daemon_t0 (ns).
start_daemon() {
  daemon_t0="$(date +%s%N)"
  "$rotator" --config "$2" run >"$OUT/$1.out" 2>"$OUT/$1.err" &
  daemon_pid=$!
}
stop_daemon() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  daemon_pid=""
}
# wait_started NAME: until the "daemon started" line; sets startup (s since daemon_t0).
wait_started() {
  local _
  for _ in $(seq 3000); do
    grep -q "daemon started" "$OUT/$1.err" && break
    kill -0 "$daemon_pid" 2>/dev/null || { echo "the daemon exited: $(tail -5 "$OUT/$1.err")" >&2; exit 1; }
    sleep 0.02
  done
  startup="$(awk -v a="$daemon_t0" -v b="$(date +%s%N)" 'BEGIN{printf "%.2f", (b-a)/1e9}')"
}
# wait_listed NAME: until the fake has listed every installation once (FLEET_TIMEOUT at most);
# sets stats to the fake's counters at that moment.
wait_listed() {
  local deadline=$(($(date +%s) + FLEET_TIMEOUT))
  while :; do
    stats="$(fake_stats)"
    [ "$(stat_of "$stats" distinct_installations_listed)" -ge "$INSTALLATIONS" ] && return 0
    kill -0 "$daemon_pid" 2>/dev/null || { echo "the daemon exited: $(tail -5 "$OUT/$1.err")" >&2; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { log "$1: not every installation listed within ${FLEET_TIMEOUT}s"; return 1; }
    sleep 0.2
  done
}
rss_of() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

# 2,000 installations x 5 resources behind a 200 req/s fixed window: the first discovery pass
# (start to the fake's answer to the last installation's first listing), its 429s, then an
# idle spell with the later passes spread over `every` (RSS, CPU, listings during it).
if want fleet; then
  saved_n="$N" saved_installations="$INSTALLATIONS"
  INSTALLATIONS="$FLEET_INSTALLATIONS" N=$((FLEET_INSTALLATIONS * FLEET_PER_INSTALLATION))
  start_fake --window-limit "$FLEET_WINDOW_LIMIT" --window-secs "$FLEET_WINDOW_SECS"
  fleet_dir="$OUT/fleet"
  rm -rf "$fleet_dir"
  write_tokens "$fleet_dir" "$INSTALLATIONS"
  write_fleet_config "$fleet_dir"
  fleet_ideal="$(awk -v n="$INSTALLATIONS" -v l="$FLEET_WINDOW_LIMIT" -v w="$FLEET_WINDOW_SECS" 'BEGIN{printf "%.1f", n/(l/w)}')"
  fake_reset
  start_daemon fleet "$fleet_dir/config.toml"
  wait_started fleet
  wait_listed fleet || true
  pass_cpu="$(awk -v b="$(proc_cpu_ticks "$daemon_pid")" -v t="$clk_tck" 'BEGIN{printf "%.2f", b/t}')"
  pass_rss="$(rss_of "$daemon_pid")"
  all_ms="$(stat_of "$stats" all_listed_unix_ms)"
  pass="$(awk -v a="$daemon_t0" -v b="$all_ms" 'BEGIN{if (b == 0) print "-"; else printf "%.2f", (b*1e6-a)/1e9}')"
  pass_429="$(stat_of "$stats" listings_rate_limited)"
  pass_listings="$(stat_of "$stats" listings)"
  listed="$(stat_of "$stats" distinct_installations_listed)"
  # The daemon's own view: its jobs once every listing is applied.
  for _ in $(seq 100); do
    grep -q "resources=$N .*fleet updated\|fleet updated.*resources=$N" "$OUT/fleet.err" && break
    sleep 0.1
  done
  jobs_seen="$(grep -o 'resources=[0-9]*' "$OUT/fleet.err" | tail -1 | cut -d= -f2)"
  record fleet-pass 1 "$pass" "$pass_cpu" "$pass_rss" "$listed" "ideal_s=$fleet_ideal x_ideal=$(awk -v p="$pass" -v i="$fleet_ideal" 'BEGIN{printf "%.2f", p/i}') 429s=$pass_429 listings=$pass_listings startup_s=$startup daemon_jobs=$jobs_seen"
  log "fleet first pass: ${pass}s for $listed/$INSTALLATIONS installations (ideal ${fleet_ideal}s), 429s=$pass_429, listings=$pass_listings, daemon cpu ${pass_cpu}s, rss ${pass_rss}KiB, jobs $jobs_seen"
  sleep 2
  c0="$(proc_cpu_ticks "$daemon_pid")"
  l0="$(stat_of "$(fake_stats)" listings_ok)"
  rss_max=0
  for ((s = 0; s < IDLE_SECONDS; s += 5)); do
    r="$(rss_of "$daemon_pid")"
    [ "$r" -gt "$rss_max" ] && rss_max="$r"
    sleep 5
  done
  r="$(rss_of "$daemon_pid")"
  [ "$r" -gt "$rss_max" ] && rss_max="$r"
  c1="$(proc_cpu_ticks "$daemon_pid")"
  stats="$(fake_stats)"
  l1="$(stat_of "$stats" listings_ok)"
  hwm="$(awk '/^VmHWM:/{print $2}' "/proc/$daemon_pid/status")"
  cpu="$(awk -v a="$c0" -v b="$c1" -v t="$clk_tck" 'BEGIN{printf "%.2f", (b-a)/t}')"
  cpu_min="$(awk -v c="$cpu" -v s="$IDLE_SECONDS" 'BEGIN{printf "%.3f", c*60/s}')"
  stop_daemon
  record fleet-idle 1 "$IDLE_SECONDS" "$cpu" "$rss_max" - "cpu_per_min_s=$cpu_min listings_during=$((l1 - l0)) expected=$(awk -v n="$INSTALLATIONS" -v s="$IDLE_SECONDS" -v e="$FLEET_EVERY" 'BEGIN{m=e+0; u=substr(e,length(e)); if(u=="m")m*=60; if(u=="h")m*=3600; printf "%.0f", n*s/m}') 429s_total=$(stat_of "$stats" rate_limited) peak_rss_kib=$hwm"
  log "fleet idle ${IDLE_SECONDS}s: cpu ${cpu}s (${cpu_min}s/min), rss max ${rss_max}KiB (peak ${hwm}KiB), listings during it $((l1 - l0))"
  N="$saved_n" INSTALLATIONS="$saved_installations"
fi

# 100,000 resources across 20,000 installations. The inventory is seeded by a first daemon
# against an unlimited fake; then, against a fake whose answers take longer than the
# measurement (listings stay in flight, none lands, so the inventory is the seeded one), start
# to ready, `status` and RSS with it and with an empty inventory (same config).
if want fleet-big; then
  saved_n="$N" saved_installations="$INSTALLATIONS" saved_latency="$LATENCY_MS"
  INSTALLATIONS="$BIG_INSTALLATIONS" N="$BIG_RESOURCES"
  big_dir="$OUT/fleet-big"
  rm -rf "$big_dir"
  write_tokens "$big_dir" "$INSTALLATIONS"
  start_fake
  write_fleet_config "$big_dir"
  start_daemon fleet-big-seed "$big_dir/config.toml"
  wait_started fleet-big-seed
  wait_listed fleet-big-seed
  for _ in $(seq "$((FLEET_TIMEOUT * 10))"); do
    [ "$(find "$big_dir/state/inventory" -name '*.json' | wc -l)" -ge "$INSTALLATIONS" ] && break
    sleep 0.1
  done
  seed_s="$(awk -v a="$daemon_t0" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}')"
  stop_daemon
  log "fleet-big: inventory seeded in ${seed_s}s ($(find "$big_dir/state/inventory" -name '*.json' | wc -l) files, $(du -sh "$big_dir/state/inventory" | cut -f1))"
  LATENCY_MS=300000 start_fake
  LATENCY_MS="$saved_latency"
  write_fleet_config "$big_dir"
  # big_measure NAME STATE_DIR: sets startup, big_rss (KiB, BIG_SETTLE s after ready), big_status
  # (median wall of 3 `status` runs, while the daemon runs).
  big_measure() {
    local name="$1" runs=() run
    write_fleet_config "$big_dir" "$2"
    start_daemon "$name" "$big_dir/config.toml"
    wait_started "$name"
    sleep "$BIG_SETTLE"
    big_rss="$(rss_of "$daemon_pid")"
    big_hwm="$(awk '/^VmHWM:/{print $2}' "/proc/$daemon_pid/status")"
    for run in 1 2 3; do
      timed "$name-status" "$run" "$rotator" --config "$big_dir/config.toml" status || true
      runs+=("$wall")
    done
    big_status="$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p)"
    big_status_rss="$rss"
    big_lines="$(wc -l <"$OUT/$name-status.1.out")"
    stop_daemon
  }
  big_measure fleet-big "$big_dir/state"
  full_startup="$startup" full_rss="$big_rss" full_hwm="$big_hwm" full_status="$big_status"
  jobs_seen="$(grep -o 'resources=[0-9]*' "$OUT/fleet-big.err" | head -1 | cut -d= -f2)"
  record fleet-big-start 1 "$full_startup" - "$full_rss" "$jobs_seen" "peak_rss_kib=$full_hwm seed_s=$seed_s"
  record fleet-big-status 3 "$full_status" "$cpu" "$big_status_rss" - "status_lines=$big_lines (median of 3; cpu/rss of the last run)"
  log "fleet-big: ready in ${full_startup}s with $jobs_seen resources, rss ${full_rss}KiB (peak ${full_hwm}KiB), status ${full_status}s ($big_lines lines)"
  big_measure fleet-big-empty "$big_dir/state-empty"
  per="$(awk -v f="$full_rss" -v e="$big_rss" -v n="$N" 'BEGIN{printf "%.0f", (f-e)*1024/n}')"
  record fleet-big-empty 1 "$startup" - "$big_rss" - "peak_rss_kib=$big_hwm bytes_per_resource=$per"
  log "fleet-big: empty inventory: ready in ${startup}s, rss ${big_rss}KiB; inventory costs ${per} bytes per resource"
  stop_fake
  N="$saved_n" INSTALLATIONS="$saved_installations"
fi

# --- summary ---------------------------------------------------------------------------------
node - "$results" "$ideal" "$N" <<'EOF'
const fs = require("fs");
const [file, ideal, n] = process.argv.slice(2);
const rows = fs.readFileSync(file, "utf8").trim().split("\n").filter(Boolean).map((l) => l.split("\t"));
const median = (xs) => { const s = xs.map(Number).sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const by = {};
for (const r of rows) (by[r[0]] ??= []).push(r);
console.log(`\nideal bulk wall (N x latency / concurrency): ${ideal} s`);
console.log(["scenario", "runs", "wall_s", "cpu_s", "peak_rss_MiB", "ok", "pushes_per_s", "x_ideal"].join("\t"));
for (const [name, rs] of Object.entries(by)) {
  if (rs[0][2] === "-") { console.log([name, rs.length, "-", "-", "-", rs[0][5], "-", "-", rs[0][6]].join("\t")); continue; }
  const wall = median(rs.map((r) => r[2]));
  const ok = median(rs.map((r) => (r[5] === "-" ? 0 : r[5])));
  const bulk = !["idle", "check"].includes(name) && !name.startsWith("fleet");
  console.log([name, name === "check" ? rs[0][1] : rs.length, wall.toFixed(3), median(rs.map((r) => r[3])).toFixed(2),
    (median(rs.map((r) => r[4])) / 1024).toFixed(1), bulk ? ok : "-", bulk ? (ok / wall).toFixed(1) : "-",
    bulk ? (wall / ideal).toFixed(2) : "-"].join("\t"));
}
console.log("\nper run:");
for (const r of rows) console.log(r.join("\t"));
EOF
