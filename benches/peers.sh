#!/usr/bin/env bash
# Starling vs its peers (Mosquitto, rumqttd, and nats-server's MQTT gateway when installed) on
# this machine, over loopback, with starling-bench: the rows of issue 15 in one alternating run.
#
#   benches/peers.sh                       # every scenario, RUNS rounds, DURATION each
#   DURATION=5s RUNS=1 benches/peers.sh    # shorter
#   benches/peers.sh p2p conn              # only some scenarios (ids below)
#   APPEND_TO=BENCHMARKS.md benches/peers.sh   # also append the report to a file
#
# For every scenario and round, each broker runs as a fresh process on its own loopback port, one
# after the other; the order rotates every round (S M R, M R S, R S M, ...), so drift and the
# machine's recent history hit every broker. Limits, the open-file limit and the noise figures
# are those of benches/compare.sh (benches/lib.sh holds both); what rumqttd and nats-server lack
# of those limits is said in lib.sh's config writers and in BENCHMARKS.md ("Peers").
#
# Output: a Markdown report on stdout: header (commit, versions, date, settings), one table with
# each broker's median, the ratios Starling/Mosquitto and Starling/rumqttd and the issue's targets,
# the noise figures and every run's figures. Raw JSON lines (the bench's report plus
# broker/round/noise/version fields; a run that cannot happen is a line with `skipped`) go to
# $RESULTS.
#
# Environment (besides compare.sh's DURATION WARMUP RUNS CONN_CLIENTS BASE_PORT WORKDIR KEEP
# NOBUILD BIN_DIR TW_MAX MAX_OTHERS QUIET_WAIT; BASE_PORT defaults to 23000 here):
#   BROKERS       brokers to run (default: starling mosquitto rumqttd, plus nats if nats-server
#                 is on PATH)
#   RUMQTTD       rumqttd binary (default: `rumqttd` on PATH). Missing: the script says how to
#                 install it, or with INSTALL_PEERS=1 runs `cargo install rumqttd` into
#                 PEERS_ROOT (default target/peers), outside the project's dependencies
#   NATS          nats-server binary (default: `nats-server` on PATH)
#   RUMQTTD_ACCEPT_DELAY_MS  rumqttd's next_connection_delay_ms (default 0; it ships with 1)
#   RESULTS       JSON-lines file (default target/bench-peers/results-<time>.jsonl)
#   REPORT_ONLY=FILE  run nothing: print the report of an earlier results file
#   APPEND_TO=FILE    also append the report to FILE (e.g. BENCHMARKS.md)
#
# Scenario ids: p2p fanout fanin_q1 fanin_q0 lat_p2p conn conn_tls persist persist_10k
# retained_q0 retained_q1 (default), lat_fanin.
# conn_tls is conn over TLS (a test CA and server certificate made with openssl in WORKDIR;
# CONN_TLS_CLIENTS clients, default CONN_CLIENTS) for Starling and Mosquitto only: rumqttd and
# nats-server are recorded as skipped there.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

RUMQTTD_VERSION=0.20.0
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
default_settings 23000 bench-peers
if [ $# -gt 0 ]; then
    SCENARIOS=("$@")
else
    SCENARIOS=(p2p fanout fanin_q1 fanin_q0 lat_p2p conn conn_tls persist persist_10k retained_q0 retained_q1)
fi
check_scenarios "${SCENARIOS[@]}"

# Finds rumqttd (RUMQTTD, PATH, or a cargo install with INSTALL_PEERS=1); sets RUMQTTD.
find_rumqttd() {
    RUMQTTD=${RUMQTTD:-$(command -v rumqttd || true)}
    [ -n "$RUMQTTD" ] && [ -x "$RUMQTTD" ] && return 0
    if [ "${INSTALL_PEERS:-0}" = 1 ]; then
        local root=${PEERS_ROOT:-$ROOT/target/peers}
        # Not --locked: 0.20.0's lock file pins metrics 0.22.1, which rustc 1.95 rejects (E0521,
        # fixed in metrics 0.22.4); without it cargo takes the newest compatible versions.
        log "cargo install rumqttd --version $RUMQTTD_VERSION --root $root"
        cargo install rumqttd --version "$RUMQTTD_VERSION" --root "$root" >&2
        RUMQTTD=$root/bin/rumqttd
        [ -x "$RUMQTTD" ] && return 0
    fi
    die "rumqttd not found (RUMQTTD=${RUMQTTD:-unset}, not on PATH). Install it outside the project:
    cargo install rumqttd --version $RUMQTTD_VERSION --root ~/.local   # then PATH=~/.local/bin:\$PATH
or run this script with INSTALL_PEERS=1 (installs into target/peers), or leave it out: BROKERS=\"starling mosquitto\""
}

# Picks the brokers (nats only when its binary exists, said either way); sets BROKER_LIST.
choose_brokers() {
    NATS=${NATS:-$(command -v nats-server || true)}
    if [ -n "${BROKERS:-}" ]; then
        read -r -a BROKER_LIST <<<"$BROKERS"
    else
        BROKER_LIST=(starling mosquitto rumqttd)
        if [ -n "$NATS" ]; then
            BROKER_LIST+=(nats)
        else
            log "nats-server not on PATH: nats skipped (optional; set NATS=/path/to/nats-server)"
        fi
    fi
    local b
    for b in "${BROKER_LIST[@]}"; do
        case $b in
            starling | mosquitto) ;;
            rumqttd) find_rumqttd ;;
            nats) [ -n "$NATS" ] && [ -x "$NATS" ] || die "BROKERS has nats but nats-server is not found (set NATS)" ;;
            *) die "unknown broker '$b' (known: starling mosquitto rumqttd nats)" ;;
        esac
    done
}

# Versions and settings every JSON line carries, so REPORT_ONLY can print the header.
run_meta() {
    local commit b v versions='{}'
    commit=$(starling_commit)
    for b in "${BROKER_LIST[@]}"; do
        case $b in
            starling) v="starling $commit${STARLING_EXTRA:+ with config '$STARLING_EXTRA'}" ;;
            mosquitto) v=$("$MOSQUITTO" -h 2>&1 | head -1 || true) ;;
            rumqttd) v=$("$RUMQTTD" --version 2>&1 | head -1 || true) ;;
            nats) v=$("$NATS" --version 2>&1 | head -1 || true) ;;
        esac
        versions=$(jq -c --arg b "$b" --arg v "$v" '. + {($b): $v}' <<<"$versions")
    done
    jq -nc --arg commit "$commit" --argjson versions "$versions" \
        --arg duration "$DURATION" --arg warmup "$WARMUP" --argjson runs "$RUNS" \
        --arg machine "$(nproc) cores, kernel $(uname -r)" \
        '{commit: $commit, versions: $versions, duration: $duration, warmup: $warmup,
          runs: $runs, machine: $machine}'
}

# rumqttd has no persistence: its `persist` runs are recorded as skipped, not run. TLS is set
# up for Starling and Mosquitto only (rumqttd and nats-server each want their own certificate
# configuration, not written here).
skip_reason() { # scenario broker
    case $1 in persist | persist_10k) [ "$2" = rumqttd ] && echo "no persistence" ;; esac
    [ "$1" = conn_tls ] && { [ "$2" = rumqttd ] || [ "$2" = nats ]; } && echo "TLS not configured by this script"
    return 0
}

run_all() {
    local meta id round broker reason n=${#BROKER_LIST[@]} i order
    meta=$(run_meta)
    log "results: $RESULTS   workdir: $WORKDIR"
    log "machine: $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
    log "brokers: $(jq -r '.versions | [.[]] | join("; ")' <<<"$meta")"
    for id in "${SCENARIOS[@]}"; do
        for round in $(seq 1 "$RUNS"); do
            order=()
            for i in $(seq 0 $((n - 1))); do order+=("${BROKER_LIST[$(((i + round - 1) % n))]}"); done
            for broker in "${order[@]}"; do
                RUN_EXTRA=$(jq -c --arg t "$(date -u +%FT%TZ)" --arg o "${order[*]}" \
                    '. + {started: $t, order: $o}' <<<"$meta")
                reason=$(skip_reason "$id" "$broker")
                if [ -n "$reason" ]; then
                    log "$id-$broker-r$round: n/a ($reason)"
                    jq -nc --arg case "$id" --arg broker "$broker" --argjson round "$round" \
                        --arg reason "$reason" --argjson extra "$RUN_EXTRA" \
                        '{case: $case, broker: $broker, round: $round, skipped: $reason} + $extra' >>"$RESULTS"
                    continue
                fi
                run_one "$id" "$broker" "$round"
            done
        done
    done
}

if [ -n "${REPORT_ONLY:-}" ]; then
    RESULTS=$REPORT_ONLY
    command -v jq >/dev/null 2>&1 || die "jq is missing (apt-get install jq)"
    [ -r "$RESULTS" ] || die "cannot read $RESULTS"
else
    need_tools
    choose_brokers
    find_release_bins
    limit_open_files
    extra_bins=()
    for b in "${BROKER_LIST[@]}"; do
        case $b in rumqttd) extra_bins+=("$RUMQTTD") ;; nats) extra_bins+=("$NATS") ;; esac
    done
    prepare_workdir starling-peers "${extra_bins[@]}"
    [ -z "${RUMQTTD:-}" ] || RUMQTTD=$WORKDIR/bin/$(basename "$RUMQTTD")
    [ -z "${NATS:-}" ] || NATS=$WORKDIR/bin/$(basename "$NATS")
    run_all
fi

# --- report ------------------------------------------------------------------------------------
# rows: case | metric label | JSON key | aggregate over rounds | scale | targets (issue 15)
# targets: comma-separated kind:value; kinds m_ge/m_le (ratio to Mosquitto), r_ge/r_le (ratio to
# rumqttd), abs_le/abs_ge (Starling's own figure, scaled)
ROWS=$(cat <<'EOF'
p2p|delivered msg/s (100 pairs, QoS 1, max rate)|delivered_rate|median|1|m_ge:5,r_ge:1
fanout|delivered msg/s (1 -> 100, QoS 1)|delivered_rate|median|1|r_ge:1.2
fanout|p99 latency ms|latency_us_p99|median|1000|abs_le:30
fanin_q1|delivered msg/s (10 -> 1, QoS 1)|delivered_rate|median|1|m_ge:5,r_ge:1
fanin_q1|broker peak RSS MiB (worst round)|broker_rss_peak|max|1048576|
fanin_q0|delivered msg/s (10 -> 1, QoS 0)|delivered_rate|median|1|m_ge:5,r_ge:1
fanin_q0|dropped of expected (QoS 0, %)|drop_pct|median|1|
fanin_q0|broker peak RSS MiB (worst round)|broker_rss_peak|max|1048576|
lat_p2p|delivered msg/s (100 pairs x 100 msg/s, QoS 1: 10k offered)|delivered_rate|median|1|
lat_p2p|p99 latency ms at 10k msg/s|latency_us_p99|median|1000|m_le:1
lat_p2p|broker CPU % of one core at 10k msg/s|broker_cpu_pct|median|1|m_le:0.8
lat_fanin|p99 latency ms (10 -> 1, QoS 1, 10k msg/s)|latency_us_p99|median|1000|
lat_fanin|broker CPU % of one core|broker_cpu_pct|median|1|
conn|connections not held at the end (worst round)|not_held|max|1|abs_le:0
conn|connect rate CONNACK/s|connect_rate|median|1|m_ge:1.2
conn|broker RSS bytes/idle connection (worst round)|broker_bytes_per_conn|max|1|abs_le:1500
conn|broker CPU µs per connect|broker_cpu_us_per_connect|median|1|
conn|bench CPU µs per connect|bench_cpu_us_per_connect|median|1|
conn_tls|connections not held at the end (worst round)|not_held|max|1|abs_le:0
conn_tls|TLS connect rate CONNACK/s (session resumption on)|connect_rate|median|1|m_ge:1.2
conn_tls|handshakes that resumed a session|tls_resumed|median|1|
conn_tls|broker CPU µs per TLS connect|broker_cpu_us_per_connect|median|1|
conn_tls|bench CPU µs per TLS connect|bench_cpu_us_per_connect|median|1|
conn_tls|broker RSS bytes/idle TLS connection (worst round)|broker_bytes_per_conn|max|1|
persist|delivered msg/s (100 pairs, QoS 1, persistent subscriber sessions, persistence on)|delivered_rate|median|1|m_ge:1
persist|p99 latency ms (max rate)|latency_us_p99|median|1000|
persist_10k|delivered msg/s (100 pairs x 100 msg/s, persistent sessions: 10k offered)|delivered_rate|median|1|
persist_10k|p99 latency ms at 10k msg/s, persistent sessions|latency_us_p99|median|1000|abs_le:50
persist_10k|broker CPU % of one core|broker_cpu_pct|median|1|
retained_q0|broker RSS bytes per retained message (100k x 1 KB)|retained_bytes_per_msg|median|1|abs_le:1300
retained_q0|wildcard subscriber, 100k retained at QoS 0: msg/s|retained_delivery_rate|median|1|m_ge:1
retained_q1|wildcard subscriber, 100k retained at QoS 1: msg/s|retained_delivery_rate|median|1|
retained_q1|of them delivered (worst round)|retained_delivered|min|1|
EOF
)

report() {
    jq -rs --arg rows "$ROWS" "$JQ_REPORT_DEFS"'
  map(select(.case != null)
      | . + {not_held: (if (.case == "conn" or .case == "conn_tls") and (.skipped | not) then (.clients // 0) - (.held // 0) else null end),
             drop_pct: (if (.expected // 0) > 0 then 100 * (.dropped // 0) / .expected else null end)}) as $all
  | ($all | map(select(.skipped | not))) as $ran
  | (["starling", "mosquitto", "rumqttd", "nats"] | map(. as $b | select($all | any(.broker == $b)))) as $brokers
  | ($all | map(.versions // {}) | add // {}) as $versions
  | ($all | map(.started // empty) | sort) as $times
  | (def cell($cs; $key; $how; $sc; $b):
         [$ran[] | select(.case == $cs and .broker == $b) | .[$key] | select(. != null)] | agg($how)
         | if . == null then null else . / $sc end;
       def shown($cs; $v; $b):
         if $v != null then ($v | fmt)
         elif ($all | any(.case == $cs and .broker == $b and .skipped)) then "n/a" else "-" end;
       def met($s; $m; $r; $t):
         ($t | split(":")) as [$kind, $val] | ($val | tonumber) as $x
         | if $s == null then null
           elif $kind == "m_ge" then (ratio($s; $m) | if . == null then null else . >= $x end)
           elif $kind == "m_le" then (ratio($s; $m) | if . == null then null else . <= $x end)
           elif $kind == "r_ge" then (ratio($s; $r) | if . == null then null else . >= $x end)
           elif $kind == "r_le" then (ratio($s; $r) | if . == null then null else . <= $x end)
           elif $kind == "abs_le" then $s <= $x elif $kind == "abs_ge" then $s >= $x else null end;
       def ttext: split(":") as [$kind, $val]
         | {m_ge: ">= \($val)x M", m_le: "<= \($val)x M", r_ge: ">= \($val)x R", r_le: "<= \($val)x R",
            abs_le: "<= \($val)", abs_ge: ">= \($val)"}[$kind];
     "## Peers: \($brokers | join(" vs ")) (\(($times[0] // "?") | .[0:10]))",
     "",
     "Run of \(($times[0] // "?") | sub("T"; " ") | .[0:16])-\(($times[-1] // "?") | .[11:16]) UTC, " +
       "Starling `\($all[0].commit // "?")`; " + ([$brokers[] | select(. != "starling") | $versions[.] // .] | join("; ")) +
       ". `DURATION=\($all[0].duration // "?")` (warm-up \($all[0].warmup // "?")), " +
       "\($all[0].runs // "?") round\(if $all[0].runs == 1 then "" else "s" end) per scenario, " +
       "broker order rotating every round, \($all[0].machine // "?"). Cells: median over the rounds " +
       "(\"worst round\": the worst); M = Mosquitto, R = rumqttd; n/a = the broker cannot do it.",
     "",
     "| scenario | metric | \($brokers | join(" | ")) | S/M | S/R | target | met? |",
     "|---|---|\($brokers | map("---:") | join("|"))|---:|---:|---|---|",
     ($rows | split("\n") | map(select(length > 0) | split("|")) | .[]
      | . as [$cs, $mlabel, $key, $how, $scale, $targets]
      | ($scale | tonumber) as $sc
      | select($all | any(.case == $cs))
      | ($brokers | map(. as $b | {key: $b, value: cell($cs; $key; $how; $sc; $b)}) | from_entries) as $v
      | ($targets | split(",") | map(select(length > 0))) as $ts
      | ($ts | map(met($v.starling; $v.mosquitto; $v.rumqttd; .))) as $ok
      | "| \($cs) | \($mlabel) | \($brokers | map(. as $b | shown($cs; $v[$b]; $b)) | join(" | ")) | " +
        "\(ratio($v.starling; $v.mosquitto) | rfmt) | \(ratio($v.starling; $v.rumqttd) | rfmt) | " +
        "\(if ($ts | length) == 0 then "-" else $ts | map(ttext) | join(", ") end) | " +
        "\(if ($ts | length) == 0 then "-" elif ($ok | any(. == false)) then "NO"
           elif ($ok | any(. == null)) then "no data" else "yes" end) |"),
     ( [$ran[] | select((.qos // 0) >= 1)] as $q
       | "| all QoS 1 runs | lost messages (sum) | " +
         ($brokers | map(. as $b | [$q[] | select(.broker == $b) | .lost // 0] | add // 0 | tostring) | join(" | ")) +
         " | - | - | 0 | \(if ([$q[] | select(.broker == "starling") | .lost // 0] | add // 0) == 0 then "yes" else "NO" end) |"),
     ( ($brokers | map(. as $b | [$ran[] | select(.broker == $b and (.broker_state != "alive" or .bench_rc != 0))] | length)) as $f
       | "| all runs | runs with a dead broker or bench errors | \($f | map(tostring) | join(" | ")) | - | - | 0 | " +
         "\(if $f[0] == 0 then "yes" else "NO" end) |"),
     "",
     "Noise: other processes used \($ran | range_of("others_before_pct"))% of one core in the 2 s before " +
       "each run and \($ran | range_of("other_cpu_pct"))% during the runs (machine busy time minus " +
       "broker and bench); steal \($ran | range_of("steal_pct"))%; 1-minute load at run starts " +
       "\([$ran[] | .load1] | if length == 0 then "-" else "\(min)-\(max)" end).",
     "",
     "Per run (round, broker: main figure, p99 us, lost/dropped, broker CPU %, bench CPU %, CPU of other processes during the run and just before it in % of one core, load1 before):",
     "",
     "```")
' "$RESULTS"
    print_runs "$RESULTS"
    echo '```'
    echo
    echo "Raw results: \`$RESULTS\`"
}

if [ -n "${APPEND_TO:-}" ]; then
    { echo; report; } | tee -a "$APPEND_TO"
else
    report
fi
