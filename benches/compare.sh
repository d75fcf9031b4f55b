#!/usr/bin/env bash
# Starling vs Mosquitto on this machine, over loopback, with starling-bench.
#
#   benches/compare.sh                     # every scenario, RUNS rounds, DURATION each
#   DURATION=5s RUNS=1 benches/compare.sh  # shorter
#   benches/compare.sh p2p conn            # only some scenarios (ids below)
#
# For every scenario and round, Starling and Mosquitto run ALTERNATELY (the order flips every
# round), each as a fresh process on its own loopback port, with the same limits: 1000 queued
# messages and 20 in flight per session (Starling's defaults, set explicitly for Mosquitto), the
# same open-file limit, logs to a file. Starling uses its default configuration with only the
# listener changed and persistence off, except in the `persist` scenario.
#
# Output: a Markdown table (medians over the rounds; memory bars use the worst round) on stdout,
# the raw JSON line of every run (the bench's report plus broker/round/noise fields) in
# $RESULTS, broker logs under $WORKDIR.
#
# Environment:
#   DURATION   measured interval of every run (default 10s; also the idle hold of `conn`)
#   WARMUP     warm-up before it (default 1s)
#   RUNS       rounds per scenario (default 3)
#   CONN_CLIENTS  idle connections of `conn` (default 19500)
#   CONN_TLS_CLIENTS  connections of `conn_tls` (default CONN_CLIENTS)
#   BASE_PORT  first port (default 21000; every run gets the next one)
#   RESULTS    JSON-lines file (default target/bench-compare/results-<time>.jsonl)
#   WORKDIR    configs, logs, persistence dirs (default: a fresh temp dir, removed unless KEEP=1)
#   NOBUILD=1  skip `cargo build --release --bins`
#   BIN_DIR    take starling and starling-bench from this directory instead (no build)
#   STARLING_EXTRA  TOML appended to Starling's config (`\n` for newlines), e.g. a window
#              equal to a peer's: '[mqtt]\nmax_inflight = 100'; peers.sh records it beside Starling's version
#   REPORT_ONLY=FILE  run nothing: print the table of an earlier results file
#   TW_MAX     before a conn run, wait (up to 75 s) until at most this many sockets are in
#              TIME_WAIT (default 1000)
#   MAX_OTHERS before each run, wait (up to QUIET_WAIT s, default 60) while other processes use
#              more than this % of one core (default 30, measured over 2 s); recorded anyway
#
# Scenario ids: p2p fanout fanin_q1 fanin_q0 lat_p2p lat_fanin conn conn_tls persist (conn_tls:
# conn over TLS with session resumption, certificates made with openssl in WORKDIR)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
default_settings 21000 bench-compare
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=(p2p fanout fanin_q1 fanin_q0 lat_p2p lat_fanin conn conn_tls persist); fi
check_scenarios "${SCENARIOS[@]}"

if [ -n "${REPORT_ONLY:-}" ]; then
    # Only the table: no tools, no build, no work directory.
    command -v jq >/dev/null 2>&1 || die "jq is missing (apt-get install jq)"
    [ -r "$REPORT_ONLY" ] || die "cannot read $REPORT_ONLY"
    RESULTS=$REPORT_ONLY
else
need_tools
find_release_bins
limit_open_files
prepare_workdir starling-compare
log "results: $RESULTS   workdir: $WORKDIR"
log "machine: $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "$($MOSQUITTO -h 2>&1 | head -1 || true); starling $(starling_commit)"
for id in "${SCENARIOS[@]}"; do
    for round in $(seq 1 "$RUNS"); do
        if [ $((round % 2)) = 1 ]; then order=(starling mosquitto); else order=(mosquitto starling); fi
        for broker in "${order[@]}"; do
            run_one "$id" "$broker" "$round"
        done
    done
done
fi

# --- table -------------------------------------------------------------------------------------
# rows: case | metric label | JSON key | aggregate over rounds | scale | bar kind | bar value | bar text
ROWS=$(cat <<EOF
p2p|delivered msg/s (100 pairs, QoS 1, max rate)|delivered_rate|median|1|ratio_ge|3|>= 3x
fanout|delivered msg/s (1 -> 100, QoS 1)|delivered_rate|median|1|ratio_ge|5|>= 5x
fanin_q1|delivered msg/s (10 -> 1, QoS 1)|delivered_rate|median|1|ratio_ge|1.5|>= 1.5x
fanin_q0|delivered msg/s (10 -> 1, QoS 0)|delivered_rate|median|1|ratio_ge|1|>= 1x
fanin_q0|dropped of expected (QoS 0, %)|drop_pct|median|1|none|0|-
fanin_q0|broker peak RSS MiB (worst round)|broker_rss_peak|max|1048576|abs_le|256|<= 256 MiB
lat_p2p|p99 latency us (100 pairs, QoS 1, 10k msg/s)|latency_us_p99|median|1|ratio_le|1.5|<= 1.5x
lat_p2p|p50 latency us|latency_us_p50|median|1|none|0|-
lat_fanin|p99 latency us (10 -> 1, QoS 1, 10k msg/s)|latency_us_p99|median|1|ratio_le|1.5|<= 1.5x
lat_fanin|p50 latency us|latency_us_p50|median|1|none|0|-
conn|connections not held at the end (worst round)|not_held|max|1|abs_le|0|0 (all held)
conn|connect rate CONNACK/s|connect_rate|median|1|ratio_ge|1|>= 1x
conn|broker RSS bytes/connection (worst round)|broker_bytes_per_conn|max|1|abs_le|4096|<= 4096 B
conn_tls|connections not held at the end (worst round)|not_held|max|1|abs_le|0|0 (all held)
conn_tls|TLS connect rate CONNACK/s (session resumption on)|connect_rate|median|1|ratio_ge|1.2|>= 1.2x
conn_tls|handshakes that resumed a session|tls_resumed|median|1|none|0|-
persist|delivered msg/s (100 pairs, QoS 1, persistent subscriber sessions, persistence on)|delivered_rate|median|1|none|0|-
persist|p99 latency us|latency_us_p99|median|1|none|0|-
EOF
)

jq -rs --arg rows "$ROWS" "$JQ_REPORT_DEFS"'
  map(. + {not_held: (if (.case == "conn" or .case == "conn_tls") then (.clients // 0) - (.held // 0) else null end),
           drop_pct: (if (.expected // 0) > 0 then 100 * (.dropped // 0) / .expected else null end)}) as $all
  | "| scenario | metric | starling | mosquitto | ratio | bar | met? |",
    "|---|---|---:|---:|---:|---|---|",
    ($rows | split("\n") | map(select(length > 0) | split("|")) | .[]
     | . as [$cs, $mlabel, $key, $how, $scale, $kind, $bar, $bartext]
     | ($scale | tonumber) as $sc | ($bar | tonumber) as $b
     | ([$all[] | select(.case == $cs and .broker == "starling") | .[$key] | select(. != null)] | agg($how)) as $s
     | ([$all[] | select(.case == $cs and .broker == "mosquitto") | .[$key] | select(. != null)] | agg($how)) as $m
     | select($s != null or $m != null)
     | (if $s != null and $m != null and $m != 0 then $s / $m else null end) as $r
     | (if $kind == "none" then "-"
        elif $s == null then "no data"
        elif $kind == "ratio_ge" then (if $r != null and $r >= $b then "yes" else "NO" end)
        elif $kind == "ratio_le" then (if $r != null and $r <= $b then "yes" else "NO" end)
        elif $kind == "abs_le" then (if $s / $sc <= $b then "yes" else "NO" end)
        elif $kind == "abs_ge" then (if $s / $sc >= $b then "yes" else "NO" end)
        else "?" end) as $met
     | "| \($cs) | \($mlabel) | \($s | if . == null then null else . / $sc end | fmt) | \($m | if . == null then null else . / $sc end | fmt) | \(if $r == null then "-" else ($r * 100 | round / 100 | tostring) + "x" end) | \($bartext) | \($met) |"),
    ( [$all[] | select((.qos // 0) >= 1)] as $q
      | ([$q[] | select(.broker == "starling") | .lost // 0] | add // 0) as $ls
      | ([$q[] | select(.broker == "mosquitto") | .lost // 0] | add // 0) as $lm
      | "| all QoS 1 runs | lost messages (sum over \($q | map(select(.broker == "starling")) | length) runs each) | \($ls) | \($lm) | - | 0 | \(if $ls == 0 then "yes" else "NO" end) |"),
    ( ([$all[] | select(.broker == "starling" and (.broker_state != "alive" or .bench_rc != 0))] | length) as $fs
      | ([$all[] | select(.broker == "mosquitto" and (.broker_state != "alive" or .bench_rc != 0))] | length) as $fm
      | "| all runs | runs with a dead broker or bench errors | \($fs) | \($fm) | - | 0 | \(if $fs == 0 then "yes" else "NO" end) |")
' "$RESULTS"

echo
echo "Per run (round, broker: main figure, p99 us, lost/dropped, broker CPU %, bench CPU %, CPU of other processes during the run and just before it in % of one core, load1 before):"
print_runs "$RESULTS"
echo
echo "raw results: $RESULTS"
