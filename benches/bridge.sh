#!/usr/bin/env bash
# An outgoing bridge, Starling->Starling vs Mosquitto->Mosquitto, on this machine over loopback
# with starling-bench: how fast messages cross, how many are lost, at what latency and CPU.
#
#   benches/bridge.sh                      # every scenario, RUNS rounds, DURATION each
#   DURATION=5s RUNS=1 benches/bridge.sh   # shorter
#   benches/bridge.sh lat_q1               # only some scenarios (ids below)
#   APPEND_TO=BENCHMARKS.md benches/bridge.sh   # also append the report to a file
#
# Every run starts two fresh brokers of one kind on two loopback ports: a "site" broker that
# bridges `bench/#` out (at the scenario's QoS) to a "central" broker. `starling-bench pub`
# publishers connect to the site, one `starling-bench sub` process's subscribers to the central
# broker, so every message crosses the bridge. For every scenario and round the two pairs run one
# after the other, the order rotating every round (as benches/peers.sh rotates it).
#
# Configurations (benches/lib.sh's config writers, so compare.sh's limits: 1000 queued messages
# and 20 in flight per session, anonymous, 127.0.0.1 only, the same open-file limit;
# persistence off on all four brokers):
#   Starling->Starling: both the release `starling`; the site has one [[bridges]]
#     (address 127.0.0.1:<central>, cleansession = false, max_inflight = BRIDGE_INFLIGHT,
#     try_private and notifications at their defaults: on) with one topic line
#     `bench/#`, direction "out", qos <scenario's>.
#   Mosquitto->Mosquitto: the site has a `connection` block (address 127.0.0.1:<central>,
#     `topic bench/# out <qos>`, cleansession false, try_private true). Mosquitto has no
#     per-bridge window: its global max_inflight_messages bounds the bridge's QoS 1/2 messages
#     in flight as it bounds every client's (a bridge is a client context), so the site's is
#     set to BRIDGE_INFLIGHT.
#   Both bridges use the remote client id `site.bench`, and both brokers' bridges publish `1`
#   (retained) on $SYS/broker/connection/site.bench/state at the central broker once up.
#   In both, the bridge's queue at the site is an ordinary session queue (max 1000 messages):
#   what the bridge cannot forward fast enough beyond that is dropped there, after the
#   publisher had its PUBACK; that is what the throughput scenarios count as lost.
#
# Scenarios (PUBS publishers -> site -> bridge -> central -> SUBS subscribers, SIZE-byte
# payloads, publishers on bench/<run>/in/<i>, subscribers on bench/<run>/in/+):
#   tput_q1  QoS 1 end to end (bridge topic at QoS 1), publishers unthrottled
#   tput_q0  QoS 0 end to end (bridge topic at QoS 0), publishers unthrottled
#   lat_q1   QoS 1 at LAT_RATE msg/s in total: end-to-end latency and both brokers' CPU
#
# Synchronisation is by events, not sleeps: both ports listening; the bridge's `1` on its state
# topic at the central broker (mosquitto_sub); the subscribers' SUBACKs (each of their sockets
# to the central broker has received CONNACK + SUBACK, 9 bytes, seen with `ss -ti`) before the
# publishers start. The two bench processes then run on their own clocks, both started LAG
# apart (a few ms; recorded as start_lag_s): the publishers warm up for WARMUP and publish for
# DURATION; the subscribers' measured interval starts WARMUP after theirs and lasts
# DURATION+DRAIN, so it holds the publishers' whole measured interval (from LAG before it) and
# the subscribers still listen DRAIN after the last publish. (`starling-bench sub` stops at the
# end of its measured interval: its --drain applies only to a process with publishers.)
#
# Figures per run:
#   delivered msg/s: messages sent in the subscribers' measured interval that reached them
#     (their latency samples, per subscriber) / (DURATION + LAG): the rate at which what was
#     published in the steady state got across, whenever it arrived (within DRAIN). LAG is
#     taken between the two launches; the publishers' longer connect (PUBS clients) makes the
#     true offset a few ms more, so this can read high by about that / DURATION (0.7% seen at
#     DURATION=3s, lat_q1)
#   published msg/s: the publishers' measured rate (acknowledged by the site at QoS 1)
#   lost (QoS 1) / dropped (QoS 0): every message the site acknowledged (QoS 1) or the
#     publishers wrote (QoS 0), warm-up included, times SUBS, minus the distinct messages the
#     subscribers got; duplicates and gaps as the subscribers report them
#   latency p50/p99: publisher to central subscriber, of the messages sent in that interval
#   broker CPU (the table's rows): site and central broker while the publisher process ran,
#     warm-up included (from /proc); the site's over the publishers' measured interval alone
#     (their --broker-pid) is site_cpu_pct in the JSON line
#   peak RSS: the site's from the publishers' --broker-pid, the central's from the subscribers'
#   noise as lib.sh measures it: CPU of other processes before and during the run, steal, load
#
# Output: a Markdown report on stdout: header (commit, versions, date, settings), each pair's
# median over the rounds and the ratio Starling/Mosquitto, noise figures and every run's
# figures. Raw JSON lines (both bench reports, nested as `pub` and `sub`, plus the figures above)
# go to $RESULTS; broker logs and configs to $WORKDIR.
#
# Environment:
#   DURATION   the publishers' measured interval (default 10s)
#   WARMUP     the publishers' warm-up before it (default 1s; must exceed LAG)
#   DRAIN      how long the subscribers keep listening after the last publish (default 3s)
#   RUNS       rounds per scenario (default 3)
#   PUBS       publishers (default 10)
#   SUBS       subscribers at the central broker, each receiving everything (default 1)
#   SIZE       payload bytes (default 16, the bench's minimum)
#   LAT_RATE   lat_q1's total publish rate, msg/s (default 1000; PUBS share it)
#   BRIDGE_INFLIGHT  the bridges' QoS 1/2 window (default 20; Starling's max_inflight,
#              Mosquitto's site max_inflight_messages)
#   BRIDGE_WAIT  longest wait for the bridge to come up, seconds (default 30)
#   BASE_PORT  first port (default 25000; every run takes the next two free ones)
#   RESULTS    JSON-lines file (default target/bench-bridge/results-<time>.jsonl)
#   WORKDIR    configs, logs (default: a fresh temp dir, removed unless KEEP=1)
#   NOBUILD=1  skip `cargo build --release --bins`
#   BIN_DIR    take starling and starling-bench from this directory instead (no build)
#   STARLING_EXTRA  TOML appended to both Starling brokers' configs (`\n` for newlines)
#   MAX_OTHERS, QUIET_WAIT  as in compare.sh: before each run, wait (up to QUIET_WAIT s, default
#              60) while other processes use more than MAX_OTHERS % of one core (default 30)
#   REPORT_ONLY=FILE  run nothing: print the report of an earlier results file
#   APPEND_TO=FILE    also append the report to FILE
#
# Needs mosquitto, mosquitto_sub (Debian: mosquitto-clients), jq and ss; installed with apt-get
# when missing and running as root.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
default_settings 25000 bench-bridge
DRAIN=${DRAIN:-3s}
PUBS=${PUBS:-10}
SUBS=${SUBS:-1}
SIZE=${SIZE:-16}
LAT_RATE=${LAT_RATE:-1000}
BRIDGE_INFLIGHT=${BRIDGE_INFLIGHT:-20}
BRIDGE_WAIT=${BRIDGE_WAIT:-30}
# The remote client id of both bridges, hence their state topic at the central broker.
BRIDGE_ID=site.bench
PAIRS=(starling mosquitto)

BRIDGE_SCENARIOS=(tput_q1 tput_q0 lat_q1)
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=("${BRIDGE_SCENARIOS[@]}"); fi
for s in "${SCENARIOS[@]}"; do
    case " ${BRIDGE_SCENARIOS[*]} " in *" $s "*) ;; *) die "unknown scenario '$s' (known: ${BRIDGE_SCENARIOS[*]})" ;; esac
done



# --- configurations ------------------------------------------------------------------------------
starling_bridge() { # central-port qos
    printf '\n[[bridges]]\nname = "central"\naddress = "127.0.0.1:%s"\nremote_clientid = "%s"\n' "$1" "$BRIDGE_ID"
    printf 'cleansession = false\nmax_inflight = %s\n' "$BRIDGE_INFLIGHT"
    printf '\n[[bridges.topics]]\npattern = "bench/#"\ndirection = "out"\nqos = %s\n' "$2"
}


# Writes the configs of one pair into DIR/central and DIR/site; sets CENTRAL_CMD and SITE_CMD.
write_configs() { # pair dir central-port site-port qos
    local pair=$1 dir=$2 cport=$3 sport=$4 qos=$5
    mkdir -p "$dir/central" "$dir/site"
    case $pair in
        starling)
            starling_config "$dir/central" "$cport" 0 >"$dir/central/starling.toml"
            { starling_config "$dir/site" "$sport" 0; starling_bridge "$cport" "$qos"; } >"$dir/site/starling.toml"
            CENTRAL_CMD=("$STARLING" --config "$dir/central/starling.toml")
            SITE_CMD=("$STARLING" --config "$dir/site/starling.toml") ;;
        mosquitto)
            mosquitto_config "$dir/central" "$cport" 0 >"$dir/central/mosquitto.conf"
            # the connection block last: Mosquitto reads bridge options after `connection`
            { mosquitto_config "$dir/site" "$sport" 0 |
                sed "s/^max_inflight_messages .*/max_inflight_messages $BRIDGE_INFLIGHT/"
              mosquitto_bridge "$cport" "$qos"; } >"$dir/site/mosquitto.conf"
            CENTRAL_CMD=("$MOSQUITTO" -c "$dir/central/mosquitto.conf")
            SITE_CMD=("$MOSQUITTO" -c "$dir/site/mosquitto.conf") ;;
        *) die "unknown pair '$pair'" ;;
    esac
}

# --- processes -----------------------------------------------------------------------------------



# The bridge's state at the central broker: the retained value now, or with `wait`, waits (up
# to the timeout) until it is 1. A retained 0 means the link is down for now: the next attempt
# ignores retained messages (-R), so it waits for the next change instead of reading that 0.
bridge_state() { # central-port timeout-s [wait]
    local topic="\$SYS/broker/connection/$BRIDGE_ID/state" deadline=$((SECONDS + $2)) v opt=()
    while [ "$SECONDS" -lt "$deadline" ]; do
        v=$(mosquitto_sub -h 127.0.0.1 -p "$1" -t "$topic" -C 1 -W $((deadline - SECONDS)) "${opt[@]}" 2>/dev/null) || v=
        if [ "${3:-}" != wait ] || [ "$v" = 1 ]; then break; fi
        [ -n "$v" ] || sleep 0.2 # mosquitto_sub failed (not a timeout, which ends the loop)
        opt=(-R)
    done
    echo "${v:-none}"
}


# Lines of a broker log that deserve a look (errors, warnings, drops, bridge link trouble), but
# Mosquitto's warning that it runs as root.
log_alerts() { # log
    local n
    n=$(grep -iE 'error|warn|drop|refused|timed out|timeout|lost|reconnect' "$1" 2>/dev/null |
        grep -vc 'should not be run as root') || true
    echo "${n:-0}"
}

# --- one run -------------------------------------------------------------------------------------
# Central broker, site broker with the bridge, bridge up, subscribers at the central broker,
# publishers at the site; one JSON line in $RESULTS.
run_pair() { # scenario pair round
    local id=$1 pair=$2 round=$3 qos rate
    qos=$(scenario_qos "$id")
    rate=$(scenario_rate "$id")
    next_port
    local cport=$PORT
    next_port
    local sport=$PORT
    local tag="$id-$pair-r$round-p$sport" dir
    dir="$WORKDIR/$tag"
    local run="b${sport}r$round"
    wait_for_quiet
    local load_before; load_before=$(load1)
    write_configs "$pair" "$dir" "$cport" "$sport" "$qos"
    start_proc "$cport" "$dir/central/broker.log" "${CENTRAL_CMD[@]}"
    local cpid=$PROC_PID
    local t_site; t_site=$(now)
    start_proc "$sport" "$dir/site/broker.log" "${SITE_CMD[@]}"
    local spid=$PROC_PID
    local up bridge_up_s error=
    up=$(bridge_state "$cport" "$BRIDGE_WAIT" wait)
    bridge_up_s=$(awk -v a="$t_site" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
    [ "$up" = 1 ] || error="bridge not up after ${BRIDGE_WAIT}s (state: $up)"

    local sub_args=(sub --subs "$SUBS" --topic "bench/$run/in/+" --qos "$qos" --size "$SIZE"
        --warmup "$WARMUP" --duration "$(add_secs "$DURATION_S" "$DRAIN_S")s")
    local pub_args=(pub --pubs "$PUBS" --qos "$qos" --size "$SIZE" --rate "$rate"
        --warmup "$WARMUP" --duration "$DURATION")
    local c0 b0s b0c t0 c1 b1s b1c t1 lo0 lo1
    lo0=$(listen_overflows)
    c0=$(cpu_jiffies); b0s=$(pid_jiffies "$spid"); b0c=$(pid_jiffies "$cpid"); t0=$(now)
    if [ -z "$error" ]; then
        log "$tag: site :$sport -> central :$cport, bridge up in ${bridge_up_s}s; starling-bench ${pub_args[*]} / ${sub_args[*]}"
        set +e
        (
            "$BENCH" "${sub_args[@]}" --port "$cport" --run "$run" --broker-pid "$cpid" \
                --json --label "$tag-sub" >"$dir/sub.json" 2>"$dir/sub.txt" &
            sp=$!
            t_sub=$(now)
            if wait_subscribed "$cport" "$sp" "$SUBS"; then
                # both processes start their clocks after connecting, so this is their offset
                # up to the difference of their connect times (a few ms)
                t_pub=$(now)
                awk -v a="$t_sub" -v b="$t_pub" 'BEGIN { printf "%.4f\n", b - a }' >"$dir/start_lag"
                echo "$(pid_jiffies "$spid") $(pid_jiffies "$cpid") $t_pub" >"$dir/cpu.pub"
                "$BENCH" "${pub_args[@]}" --port "$sport" --run "$run" --broker-pid "$spid" \
                    --json --label "$tag-pub" >"$dir/pub.json" 2>"$dir/pub.txt"
                echo $? >"$dir/pub.rc"
                echo "$(pid_jiffies "$spid") $(pid_jiffies "$cpid") $(now)" >>"$dir/cpu.pub"
            else
                echo "subscribers not subscribed at the central broker within 15 s" >"$dir/pub.txt"
                echo 97 >"$dir/pub.rc"
                is_gone "$sp" || kill -TERM "$sp" 2>/dev/null
            fi
            wait "$sp"
            echo $? >"$dir/sub.rc"
            # second line: the CPU time of this subshell's children (the two bench processes,
            # and the ss/awk of wait_subscribed)
            times >"$dir/bench.times"
        )
        set -e
    fi
    c1=$(cpu_jiffies); b1s=$(pid_jiffies "$spid"); b1c=$(pid_jiffies "$cpid"); t1=$(now)
    lo1=$(listen_overflows)
    local end_state=-
    [ -n "$error" ] || end_state=$(bridge_state "$cport" 5)
    stop_proc "$spid"
    local site_state=$STATE
    stop_proc "$cpid"
    local central_state=$STATE
    [ "$site_state" = alive ] || log "$tag: SITE BROKER $site_state (see $dir/site/broker.log)"
    [ "$central_state" = alive ] || log "$tag: CENTRAL BROKER $central_state (see $dir/central/broker.log)"
    [ -z "$error" ] || log "$tag: $error"
    local pub_rc=-1 sub_rc=-1 lag=null bench_cpu=0 f extra=${RUN_EXTRA:-}
    [ -n "$extra" ] || extra='{}'
    [ -s "$dir/pub.rc" ] && pub_rc=$(cat "$dir/pub.rc")
    [ -s "$dir/sub.rc" ] && sub_rc=$(cat "$dir/sub.rc")
    [ -s "$dir/start_lag" ] && lag=$(cat "$dir/start_lag")
    for f in pub sub; do
        [ -s "$dir/$f.json" ] || echo '{}' >"$dir/$f.json"
        if [ -f "$dir/$f.rc" ] && [ "$(cat "$dir/$f.rc")" != 0 ]; then
            log "$tag: starling-bench $f exited $(cat "$dir/$f.rc"): $(tail -3 "$dir/$f.txt" | tr '\n' ' ')"
        fi
    done
    if [ -s "$dir/bench.times" ]; then
        bench_cpu=$(awk 'NR==2{u=$1; s=$2; sub(/s$/,"",u); sub(/s$/,"",s); split(u,a,"m"); split(s,b,"m"); print a[1]*60+a[2]+b[1]*60+b[2]}' "$dir/bench.times")
    fi
    if [ "$lag" != null ] && [ "$(awk -v l="$lag" -v w="$WARMUP_S" 'BEGIN { print (l > w / 2) }')" = 1 ]; then
        log "$tag: publishers started ${lag}s after the subscribers (WARMUP is ${WARMUP_S}s): raise WARMUP"
    fi
    # site and central broker CPU while the publishers ran, in % of one core
    local pub_cpu='{}'
    if [ -f "$dir/cpu.pub" ] && [ "$(wc -l <"$dir/cpu.pub")" = 2 ]; then
        pub_cpu=$(awk -v hz="$CLK_TCK" 'NR == 1 { s = $1; c = $2; t = $3 }
            NR == 2 { d = $3 - t; printf "{\"site_cpu_pub_pct\":%.2f,\"central_cpu_pub_pct\":%.2f,\"pub_wall_s\":%.3f}", ($1 - s) / hz / d * 100, ($2 - c) / hz / d * 100, d }' "$dir/cpu.pub")
    fi
    jq -nc --slurpfile pub "$dir/pub.json" --slurpfile sub "$dir/sub.json" \
        --arg case "$id" --arg broker "$pair" --argjson round "$round" --argjson qos "$qos" \
        --argjson rate_per_pub "$rate" --argjson pubs "$PUBS" --argjson subs "$SUBS" \
        --argjson site_port "$sport" --argjson central_port "$cport" \
        --arg error "$error" --argjson bridge_up_s "$bridge_up_s" --arg bridge_state_end "$end_state" \
        --argjson start_lag_s "$lag" --argjson duration_s "$DURATION_S" --argjson pub_cpu "$pub_cpu" --argjson pub_rc "$pub_rc" --argjson sub_rc "$sub_rc" \
        --arg site_state "$site_state" --arg central_state "$central_state" \
        --argjson site_log_alerts "$(log_alerts "$dir/site/broker.log")" \
        --argjson central_log_alerts "$(log_alerts "$dir/central/broker.log")" \
        --argjson load1 "$load_before" --argjson load1_after "$(load1)" \
        --argjson others_before_pct "$OTHERS_BEFORE" --argjson listen_overflows "$((lo1 - lo0))" \
        --argjson c0 "${c0% *}" --argjson c1 "${c1% *}" --argjson s0 "${c0#* }" --argjson s1 "${c1#* }" \
        --argjson b0 "$((b0s + b0c))" --argjson b1 "$((b1s + b1c))" \
        --argjson bs "$((b1s - b0s))" --argjson bc "$((b1c - b0c))" \
        --argjson t0 "$t0" --argjson t1 "$t1" \
        --argjson bench_cpu "$bench_cpu" --argjson hz "$CLK_TCK" --argjson extra "$extra" '
        ($pub[0] // {}) as $p | ($sub[0] // {}) as $s
        | ((($s.delivered // 0) - ($s.duplicates // 0) - ($s.foreign // 0))) as $unique
        # every subscriber should have every message the site acknowledged (QoS 1) or the
        # publishers wrote (QoS 0)
        | (if $qos > 0 then $p.acked else $p.sent end) as $published
        | (if $published != null then $published * $subs else null end) as $expected
        | (if $expected != null and ($s | has("delivered")) then ([$expected - $unique, 0] | max) else null end) as $missing
        | {case: $case, broker: $broker, round: $round, qos: $qos, pubs: $pubs, subs: $subs,
           rate_per_pub: $rate_per_pub, site_port: $site_port, central_port: $central_port,
           # messages sent from the start of the measured interval of the subscribers (LAG before
           # that of the publishers) that reached them, per subscriber and second
           delivered_rate: (if $s.latency_samples != null and $start_lag_s != null
                            then $s.latency_samples / $subs / ($duration_s + $start_lag_s) else null end),
           delivered: $s.delivered, unique: $unique,
           published_rate: $p.published_rate, sent: $p.sent, acked: $p.acked, unacked: $p.unacked,
           expected: $expected,
           # deliveries expected and not made (distinct messages, summed over the subscribers)
           lost: (if $qos > 0 then $missing else null end),
           dropped: (if $qos == 0 then $missing else null end),
           lost_pct: (if $qos > 0 and $missing != null and $expected > 0 then 100 * $missing / $expected else null end),
           dropped_pct: (if $qos == 0 and $missing != null and $expected > 0 then 100 * $missing / $expected else null end),
           duplicates: $s.duplicates, gaps: $s.gaps, foreign: $s.foreign,
           latency_samples: $s.latency_samples, latency_us_p50: $s.latency_us_p50,
           latency_us_p99: $s.latency_us_p99, latency_us_p999: $s.latency_us_p999,
           latency_us_max: $s.latency_us_max,
           site_cpu_pct: $p.broker_cpu_pct,
           site_cpu_us_per_msg: $p.broker_cpu_us_per_msg,
           site_rss_peak: $p.broker_rss_peak, central_rss_peak: $s.broker_rss_peak,
           site_cpu_run_pct: ($bs / $hz / ($t1 - $t0) * 100),
           central_cpu_run_pct: ($bc / $hz / ($t1 - $t0) * 100),
           bench_cpu_pct: (($p.bench_cpu_pct // 0) + ($s.bench_cpu_pct // 0)),
           bridge_up_s: $bridge_up_s, bridge_state_end: $bridge_state_end, start_lag_s: $start_lag_s,
           error: (if $error == "" then null else $error end),
           pub_rc: $pub_rc, sub_rc: $sub_rc,
           bench_rc: (if $pub_rc == 0 and $sub_rc == 0 then 0 elif $pub_rc != 0 then $pub_rc else $sub_rc end),
           site_state: $site_state, central_state: $central_state,
           broker_state: (if $site_state == "alive" and $central_state == "alive" then "alive"
                          else "site \($site_state), central \($central_state)" end),
           site_log_alerts: $site_log_alerts, central_log_alerts: $central_log_alerts,
           load1: $load1, load1_after: $load1_after, others_before_pct: $others_before_pct,
           listen_overflows: $listen_overflows, wall_s: ($t1 - $t0),
           # CPU of everything else on the machine during the run, in % of one core
           other_cpu_pct: (((($c1 - $c0) - ($b1 - $b0)) / $hz - $bench_cpu) / ($t1 - $t0) * 100),
           steal_pct: (($s1 - $s0) / $hz / ($t1 - $t0) * 100),
           pub: $p, sub: $s} + $pub_cpu + $extra' >>"$RESULTS"
}

# Versions and settings every JSON line carries, so REPORT_ONLY can print the header.
run_meta() {
    local commit
    commit=$(starling_commit)
    jq -nc --arg commit "$commit" \
        --arg starling "starling $commit${STARLING_EXTRA:+ with config '$STARLING_EXTRA'}" \
        --arg mosquitto "$("$MOSQUITTO" -h 2>&1 | head -1 || true)" \
        --arg duration "$DURATION" --arg warmup "$WARMUP" --arg drain "$DRAIN" \
        --argjson runs "$RUNS" --argjson size "$SIZE" --argjson lat_rate "$LAT_RATE" \
        --argjson bridge_inflight "$BRIDGE_INFLIGHT" \
        --arg machine "$(nproc) cores, kernel $(uname -r)" \
        '{commit: $commit, versions: {starling: $starling, mosquitto: $mosquitto},
          duration: $duration, warmup: $warmup, drain: $drain, runs: $runs,
          size: $size, lat_rate: $lat_rate, bridge_inflight: $bridge_inflight, machine: $machine}'
}


if [ -n "${REPORT_ONLY:-}" ]; then
    RESULTS=$REPORT_ONLY
    command -v jq >/dev/null 2>&1 || die "jq is missing (apt-get install jq)"
    [ -r "$RESULTS" ] || die "cannot read $RESULTS"
else
    check_settings PUBS SUBS SIZE BRIDGE_INFLIGHT BRIDGE_WAIT
    need_tools
    need_pkg mosquitto_sub mosquitto-clients
    find_release_bins
    limit_open_files
    [ -n "${WORKDIR:-}" ] || [ "${KEEP:-0}" = 1 ] || RM_WORKDIR=1
    prepare_workdir starling-bridge
    trap cleanup EXIT
    run_all
fi

# --- report --------------------------------------------------------------------------------------
# rows: case | metric label | JSON key | aggregate over rounds | scale | better (higher|lower|-)
ROWS=$(cat <<'EOF'
tput_q1|delivered msg/s per central subscriber|delivered_rate|median|1|higher
tput_q1|published msg/s (acknowledged by the site)|published_rate|median|1|-
tput_q1|lost: acknowledged by the site, never delivered, % of acknowledged|lost_pct|median|1|lower
tput_q1|lost messages (sum over the rounds)|lost|sum|1|lower
tput_q1|p99 latency ms (saturated)|latency_us_p99|median|1000|lower
tput_q1|site broker CPU % of one core while publishing|site_cpu_pub_pct|median|1|-
tput_q1|central broker CPU % of one core while publishing|central_cpu_pub_pct|median|1|-
tput_q1|site broker peak RSS MiB (worst round)|site_rss_peak|max|1048576|lower
tput_q0|delivered msg/s per central subscriber|delivered_rate|median|1|higher
tput_q0|published msg/s (written by the publishers)|published_rate|median|1|-
tput_q0|dropped: written, never delivered, % of written|dropped_pct|median|1|lower
tput_q0|site broker CPU % of one core while publishing|site_cpu_pub_pct|median|1|-
tput_q0|central broker CPU % of one core while publishing|central_cpu_pub_pct|median|1|-
tput_q0|site broker peak RSS MiB (worst round)|site_rss_peak|max|1048576|lower
lat_q1|delivered msg/s per central subscriber|delivered_rate|median|1|-
lat_q1|p50 latency ms, publisher to central subscriber|latency_us_p50|median|1000|lower
lat_q1|p99 latency ms|latency_us_p99|median|1000|lower
lat_q1|lost messages (sum over the rounds)|lost|sum|1|lower
lat_q1|site broker CPU % of one core while publishing|site_cpu_pub_pct|median|1|lower
lat_q1|central broker CPU % of one core while publishing|central_cpu_pub_pct|median|1|lower
EOF
)

report() {
    jq -rs --arg rows "$ROWS" "$JQ_REPORT_DEFS"'
  def failed: .error != null or .broker_state != "alive" or .bench_rc != 0 or .bridge_state_end != "1";
  map(select(.case != null)) as $all
  | ($all | map(select(.error == null))) as $ran
  | ($all | map(.versions // {}) | add // {}) as $versions
  | ($all | map(.started // empty) | sort) as $times
  | ($all[0] // {}) as $m
  | (def cell($cs; $key; $how; $sc; $b):
         [$ran[] | select(.case == $cs and .broker == $b) | .[$key] | select(. != null)] | agg($how)
         | if . == null then null else . / $sc end;
     def scen($cs): [$all[] | select(.case == $cs)][0] as $r
         | "\($r.pubs) publisher\(if $r.pubs == 1 then "" else "s" end) -> site -> bridge QoS \($r.qos) -> central -> \($r.subs) subscriber\(if $r.subs == 1 then "" else "s" end), " +
           (if ($r.rate_per_pub // 0) > 0 then "\($r.rate_per_pub * $r.pubs | round) msg/s in total" else "publishers unthrottled" end);
     "## Bridge: Starling->Starling vs Mosquitto->Mosquitto (\(($times[0] // "?") | .[0:10]))",
     "",
     "Run of \(($times[0] // "?") | sub("T"; " ") | .[0:16])-\(($times[-1] // "?") | .[11:16]) UTC, " +
       "Starling `\($m.commit // "?")`; \($versions.mosquitto // "mosquitto ?"). " +
       "`DURATION=\($m.duration // "?")` of publishing measured (after \($m.warmup // "?") of warm-up; subscribers listen " +
       "\($m.drain // "?") longer), \($m.size // "?")-byte payloads, bridge window " +
       "\($m.bridge_inflight // "?") in flight, 1000 queued, persistence off, " +
       "\($m.runs // "?") round\(if $m.runs == 1 then "" else "s" end) per scenario, pair order rotating every round, " +
       "\($m.machine // "?"). Cells: median over the rounds (\"worst round\": the worst; \"sum\": all rounds); S/M = Starling/Mosquitto.",
     "",
     ([$all[] | .case] | unique | .[] as $cs | "- `\($cs)`: \(scen($cs))"),
     "",
     "| scenario | metric | Starling->Starling | Mosquitto->Mosquitto | S/M | better |",
     "|---|---|---:|---:|---:|---|",
     ($rows | split("\n") | map(select(length > 0) | split("|")) | .[]
      | . as [$cs, $mlabel, $key, $how, $scale, $better]
      | ($scale | tonumber) as $sc
      | select($all | any(.case == $cs))
      | cell($cs; $key; $how; $sc; "starling") as $s
      | cell($cs; $key; $how; $sc; "mosquitto") as $mo
      | "| \($cs) | \($mlabel) | \($s | fmt) | \($mo | fmt) | \(ratio($s; $mo) | rfmt) | \($better) |"),
     ( ["starling", "mosquitto"] | map(. as $b | [$all[] | select(.broker == $b and failed)] | length) as $f
       | "| all runs | runs with an error, a dead broker, a bench error or the bridge down at the end | \($f[0]) | \($f[1]) | - | lower |"),
     ( ["starling", "mosquitto"] | map(. as $b | [$all[] | select(.broker == $b) | (.site_log_alerts // 0) + (.central_log_alerts // 0)] | add // 0) as $a
       | "| all runs | broker log lines with error/warn/drop/timeout/... (sum, both brokers) | \($a[0]) | \($a[1]) | - | - |"),
     "",
     "Noise: other processes used \($ran | range_of("others_before_pct"))% of one core in the 2 s before " +
       "each run and \($ran | range_of("other_cpu_pct"))% during the runs (machine busy time minus " +
       "both brokers and the bench); steal \($ran | range_of("steal_pct"))%; 1-minute load at run starts " +
       "\([$ran[] | .load1] | if length == 0 then "-" else "\(min)-\(max)" end); publishers started " +
       "\([$ran[] | .start_lag_s | select(. != null)] | if length == 0 then "-" else "\(min)-\(max)" end) s after the subscribers; " +
       "bridges up \([$ran[] | .bridge_up_s | select(. != null)] | if length == 0 then "-" else "\(min)-\(max)" end) s after the site started.",
     "",
     "Per run (round, pair: delivered msg/s at the central subscriber, published msg/s, lost/dropped, duplicates, gaps, latency, site/central broker CPU % and peak RSS, bench CPU %, CPU of other processes during the run and just before it in % of one core, load1 before):",
     "",
     "```")
' "$RESULTS"
    jq -r '
  def r: if . == null then "-" else (. | round | tostring) end;
  def ms: if . == null then "-" else (. / 10 | round / 100 | tostring) end;
  "  \(.case) r\(.round) \(.broker): " +
  (if .error != null then "ERROR: \(.error)"
   else "\(.delivered_rate | r) msg/s delivered, \(.published_rate | r) published, " +
     (if .qos > 0 then "lost \(.lost | r) of \(.expected | r) (acked x subs)" else "dropped \(.dropped | r) of \(.expected | r) (written x subs)" end) +
     ", dups \(.duplicates | r), gaps \(.gaps | r), p50/p99 \(.latency_us_p50 | ms)/\(.latency_us_p99 | ms) ms" +
     ", site/central cpu \(.site_cpu_pub_pct | r)/\(.central_cpu_pub_pct | r)%, rss peak \((.site_rss_peak // 0) / 1048576 | r)/\((.central_rss_peak // 0) / 1048576 | r) MiB" +
     ", bench cpu \(.bench_cpu_pct | r)%, others \(.other_cpu_pct | r)% (\(.others_before_pct // "-")% just before), load1 \(.load1)" +
     ", bridge up in \(.bridge_up_s)s, publishers \(.start_lag_s // "-")s after the subscribers" end) +
  (if .broker_state != "alive" then "  BROKER \(.broker_state)" else "" end) +
  (if .bench_rc != 0 then "  BENCH EXIT pub \(.pub_rc) sub \(.sub_rc)" else "" end) +
  (if .error == null and .bridge_state_end != "1" then "  BRIDGE STATE AT END \(.bridge_state_end)" else "" end) +
  (if ((.site_log_alerts // 0) + (.central_log_alerts // 0)) > 0 then "  log lines to check: site \(.site_log_alerts), central \(.central_log_alerts)" else "" end)
' "$RESULTS"
    echo '```'
    echo
    echo "Raw results: \`$RESULTS\`"
}

if [ -n "${APPEND_TO:-}" ]; then
    { echo; report; } | tee -a "$APPEND_TO"
else
    report
fi
