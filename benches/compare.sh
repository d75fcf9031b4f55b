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
#   BASE_PORT  first port (default 21000; every run gets the next one)
#   RESULTS    JSON-lines file (default target/bench-compare/results-<time>.jsonl)
#   WORKDIR    configs, logs, persistence dirs (default: a fresh temp dir, removed unless KEEP=1)
#   NOBUILD=1  skip `cargo build --release --bins`
#   REPORT_ONLY=FILE  run nothing: print the table of an earlier results file
#   TW_MAX     before a conn run, wait (up to 75 s) until at most this many sockets are in
#              TIME_WAIT (default 1000)
#   MAX_OTHERS before each run, wait (up to QUIET_WAIT s, default 60) while other processes use
#              more than this % of one core (default 30, measured over 2 s); recorded anyway
#
# Scenario ids: p2p fanout fanin_q1 fanin_q0 lat_p2p lat_fanin conn persist
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
RUNS=${RUNS:-3}
CONN_CLIENTS=${CONN_CLIENTS:-19500}
BASE_PORT=${BASE_PORT:-21000}
MAX_OTHERS=${MAX_OTHERS:-30}
QUIET_WAIT=${QUIET_WAIT:-60}
TW_MAX=${TW_MAX:-1000}
NOFILE=${NOFILE:-20000}
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=${RESULTS:-$ROOT/target/bench-compare/results-$STAMP.jsonl}
ALL_SCENARIOS=(p2p fanout fanin_q1 fanin_q0 lat_p2p lat_fanin conn persist)
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=("${ALL_SCENARIOS[@]}"); fi

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

for s in "${SCENARIOS[@]}"; do
    case " ${ALL_SCENARIOS[*]} " in *" $s "*) ;; *) die "unknown scenario '$s' (known: ${ALL_SCENARIOS[*]})" ;; esac
done

# --- tools -------------------------------------------------------------------------------------
need_pkg() { # command debian-package
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing $2 (apt-get)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    fi
    command -v "$1" >/dev/null 2>&1 || die "'$1' is missing: install Debian's '$2' package (apt-get install $2, as root) and run again"
}
export PATH="$PATH:/usr/sbin:/sbin"
need_pkg mosquitto mosquitto
need_pkg jq jq
need_pkg ss iproute2
MOSQUITTO=$(command -v mosquitto)

if [ "${NOBUILD:-0}" != 1 ]; then
    log "cargo build --release --bins"
    cargo build --release --bins >&2
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
STARLING=$TARGET_DIR/release/starling
BENCH=$TARGET_DIR/release/starling-bench
[ -x "$STARLING" ] && [ -x "$BENCH" ] || die "no release binaries in $TARGET_DIR/release"

# Brokers get this soft open-file limit (the bench raises its own).
HARD=$(ulimit -Hn)
if [ "$HARD" != unlimited ] && [ "$HARD" -lt "$NOFILE" ]; then NOFILE=$HARD; fi
if [ "$NOFILE" -lt $((CONN_CLIENTS + 200)) ]; then
    log "warning: open-file limit $NOFILE is below CONN_CLIENTS+200; conn runs will fail"
fi

if [ -z "${WORKDIR:-}" ]; then
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/starling-compare.XXXXXX")
    [ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORKDIR"' EXIT
fi
mkdir -p "$WORKDIR/bin" "$(dirname "$RESULTS")"
# Run copies, so a rebuild in the tree during the comparison cannot swap binaries mid-way.
cp "$STARLING" "$BENCH" "$WORKDIR/bin/"
STARLING=$WORKDIR/bin/starling
BENCH=$WORKDIR/bin/starling-bench
[ -n "${REPORT_ONLY:-}" ] || : >"$RESULTS"
ME=$(id -un)
CLK_TCK=$(getconf CLK_TCK)

# --- machine and noise -------------------------------------------------------------------------
load1() { cut -d' ' -f1 /proc/loadavg; }
# busy and steal jiffies of the whole machine
cpu_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8, $9; exit}' /proc/stat; }
# utime+stime of a process (and its threads)
pid_jiffies() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
# SYNs dropped because a listen queue was full, machine-wide (a dropped SYN is retried by the
# client after 1 s, then 3 s, ...: it shows up as a slow connect rate)
listen_overflows() {
    awk '/^TcpExt:/{if (!h) {for (i = 1; i <= NF; i++) k[i] = $i; h = 1} else for (i = 1; i <= NF; i++) if (k[i] == "ListenOverflows") print $i}' /proc/net/netstat
}

# CPU the rest of the machine uses right now, in % of one core, over 2 s (no broker or bench
# of ours runs at this point, so it is all someone else's). The load average would count our
# own previous run for a minute after it.
others_busy_pct() {
    local a b
    a=$(cpu_jiffies); sleep 2; b=$(cpu_jiffies)
    awk -v a="${a% *}" -v b="${b% *}" -v hz="$CLK_TCK" 'BEGIN{printf "%.0f", (b - a) / hz / 2 * 100}'
}

OTHERS_BEFORE=0
wait_for_quiet() {
    local waited=0 busy
    while :; do
        busy=$(others_busy_pct)
        OTHERS_BEFORE=$busy
        [ "$busy" -le "$MAX_OTHERS" ] && return
        if [ "$waited" -ge "$QUIET_WAIT" ]; then
            log "others use ${busy}% of a core (> $MAX_OTHERS) after ${waited}s of waiting; running anyway (recorded)"
            return
        fi
        [ "$waited" = 0 ] && log "others use ${busy}% of a core (> $MAX_OTHERS): waiting up to ${QUIET_WAIT}s"
        sleep 3
        waited=$((waited + 5))
    done
}

# --- brokers -----------------------------------------------------------------------------------
PORT=$BASE_PORT
next_port() {
    while :; do
        PORT=$((PORT + 1))
        ss -Htan "( sport = :$PORT or dport = :$PORT )" | grep -q . || return 0
    done
}

wait_listening() { # port pid
    local i
    for i in $(seq 1 100); do
        kill -0 "$2" 2>/dev/null || return 1
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

BROKER_PID=
start_broker() { # broker port persist(0|1) tag
    local broker=$1 port=$2 persist=$3 tag=$4 dir="$WORKDIR/$4"
    mkdir -p "$dir"
    if [ "$broker" = starling ]; then
        {
            printf '[[listeners]]\nbind = "127.0.0.1:%s"\n\n[persistence]\n' "$port"
            if [ "$persist" = 1 ]; then
                printf 'enabled = true\ndir = "%s/store"\nsync = "batch"\n' "$dir"
            else
                printf 'enabled = false\n'
            fi
        } >"$dir/starling.toml"
        (ulimit -n "$NOFILE"; exec "$STARLING" --config "$dir/starling.toml") >"$dir/broker.log" 2>&1 &
    else
        {
            printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port"
            printf 'max_queued_messages 1000\nmax_inflight_messages 20\n'
            printf 'user %s\n' "$ME"
            if [ "$persist" = 1 ]; then
                printf 'persistence true\npersistence_location %s/\n' "$dir"
            else
                printf 'persistence false\n'
            fi
        } >"$dir/mosquitto.conf"
        (ulimit -n "$NOFILE"; exec "$MOSQUITTO" -c "$dir/mosquitto.conf") >"$dir/broker.log" 2>&1 &
    fi
    BROKER_PID=$!
    if ! wait_listening "$port" "$BROKER_PID"; then
        tail -20 "$dir/broker.log" >&2
        die "$broker did not start listening on 127.0.0.1:$port (log: $dir/broker.log)"
    fi
}

# Stops the broker; sets STATE to "alive" if it was still running when we stopped it, "died"
# otherwise (+"-killed" if it ignored SIGTERM for 15 s). Not in a subshell: `wait` must reap it.
STATE=
stop_broker() { # pid
    local pid=$1 state=alive i
    # a broker that exited is a zombie until reaped, and kill -0 still finds a zombie
    if ! kill -0 "$pid" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
        state=died
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo X)" = Z ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        state="$state-killed"
    fi
    wait "$pid" 2>/dev/null || true
    STATE=$state
}

# --- scenarios ---------------------------------------------------------------------------------
scenario_args() { # id -> bench arguments
    local t=(--duration "$DURATION" --warmup "$WARMUP")
    case $1 in
        p2p) echo p2p --pairs 100 --qos 1 "${t[@]}" ;;
        fanout) echo fanout --pubs 1 --subs 100 --qos 1 "${t[@]}" ;;
        fanin_q1) echo fanin --pubs 10 --subs 1 --qos 1 "${t[@]}" ;;
        fanin_q0) echo fanin --pubs 10 --subs 1 --qos 0 "${t[@]}" ;;
        # 10,000 msg/s in total
        lat_p2p) echo p2p --pairs 100 --qos 1 --rate 100 "${t[@]}" ;;
        lat_fanin) echo fanin --pubs 10 --subs 1 --qos 1 --rate 1000 "${t[@]}" ;;
        conn) echo conn --clients "$CONN_CLIENTS" --source-ips 4 --duration "$DURATION" ;;
        # QoS 1 into persistent sessions: subscribers connect with clean session 0, so Starling
        # stores every message and sends PUBACK after the batch's fdatasync (sync = "batch").
        persist) echo p2p --pairs 100 --qos 1 --persistent-subs "${t[@]}" ;;
    esac
}

run_one() { # scenario broker round
    local id=$1 broker=$2 round=$3 persist=0 tag rc state
    [ "$id" = persist ] && persist=1
    next_port
    tag="$id-$broker-r$round-p$PORT"
    # `conn` leaves ~CONN_CLIENTS client sockets in TIME_WAIT for 60 s; the bench binds its
    # source addresses explicitly, and a conn run started on top of them can take ~10x longer to
    # connect (seen for both brokers). Let them expire first.
    local tw=0 tw_waited=0
    if [ "$id" = conn ]; then
        while tw=$(ss -Htan state time-wait | wc -l); [ "$tw" -gt "$TW_MAX" ] && [ "$tw_waited" -lt 75 ]; do
            [ "$tw_waited" = 0 ] && log "$tw sockets in TIME_WAIT: waiting for them to expire (up to 75 s)"
            sleep 5
            tw_waited=$((tw_waited + 5))
        done
    fi
    wait_for_quiet
    local load_before; load_before=$(load1)
    start_broker "$broker" "$PORT" "$persist" "$tag"
    local pid=$BROKER_PID dir="$WORKDIR/$tag"
    local args; args=$(scenario_args "$id")
    log "$tag: starling-bench $args"
    local c0 b0 t0 c1 b1 t1
    local lo0 lo1
    lo0=$(listen_overflows)
    c0=$(cpu_jiffies); b0=$(pid_jiffies "$pid"); t0=$(now)
    set +e
    # `times` in the subshell: its second line is the CPU time of the bench (its only child)
    # shellcheck disable=SC2086
    ( "$BENCH" $args --port "$PORT" --json --broker-pid "$pid" --label "$tag" \
        >"$dir/bench.json" 2>"$dir/bench.txt"; echo $? >"$dir/bench.rc"; times >"$dir/bench.times" )
    set -e
    c1=$(cpu_jiffies); b1=$(pid_jiffies "$pid"); t1=$(now)
    lo1=$(listen_overflows)
    stop_broker "$pid"
    state=$STATE
    rc=$(cat "$dir/bench.rc")
    [ "$state" = alive ] || log "$tag: BROKER $state (see $dir/broker.log)"
    [ "$rc" = 0 ] || log "$tag: starling-bench exited $rc: $(tail -3 "$dir/bench.txt" | tr '\n' ' ')"
    local bench_cpu
    bench_cpu=$(awk 'NR==2{u=$1; s=$2; sub(/s$/,"",u); sub(/s$/,"",s); split(u,a,"m"); split(s,b,"m"); print a[1]*60+a[2]+b[1]*60+b[2]}' "$dir/bench.times")
    local line
    line=$(head -1 "$dir/bench.json")
    [ -n "$line" ] || line='{}'
    echo "$line" | jq -c \
        --arg case "$id" --arg broker "$broker" --argjson round "$round" \
        --argjson bench_rc "$rc" --arg broker_state "$state" --arg args "$args" \
        --argjson load1 "$load_before" --argjson load1_after "$(load1)" \
        --argjson others_before_pct "$OTHERS_BEFORE" --argjson listen_overflows "$((lo1 - lo0))" \
        --argjson time_wait_before "$tw" \
        --argjson c0 "${c0% *}" --argjson c1 "${c1% *}" --argjson s0 "${c0#* }" --argjson s1 "${c1#* }" \
        --argjson b0 "$b0" --argjson b1 "$b1" --argjson t0 "$t0" --argjson t1 "$t1" \
        --argjson bench_cpu "$bench_cpu" --argjson hz "$CLK_TCK" '
        . + {case: $case, broker: $broker, round: $round, bench_rc: $bench_rc,
             broker_state: $broker_state, args: $args, load1: $load1, load1_after: $load1_after,
             others_before_pct: $others_before_pct, listen_overflows: $listen_overflows,
             time_wait_before: $time_wait_before,
             wall_s: ($t1 - $t0),
             # CPU of everything else on the machine while this run went on, in % of one core
             other_cpu_pct: ((($c1 - $c0) / $hz - ($b1 - $b0) / $hz - $bench_cpu) / ($t1 - $t0) * 100),
             steal_pct: (($s1 - $s0) / $hz / ($t1 - $t0) * 100)}' >>"$RESULTS"
}

if [ -n "${REPORT_ONLY:-}" ]; then
    RESULTS=$REPORT_ONLY
else
log "results: $RESULTS   workdir: $WORKDIR"
log "machine: $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "$($MOSQUITTO -h 2>&1 | head -1 || true); starling $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted src changes')"
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
persist|delivered msg/s (100 pairs, QoS 1, persistent subscriber sessions, persistence on)|delivered_rate|median|1|none|0|-
persist|p99 latency us|latency_us_p99|median|1|none|0|-
EOF
)

jq -rs --arg rows "$ROWS" '
  def median: sort | if length == 0 then null
      elif length % 2 == 1 then .[(length - 1) / 2]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def agg($how): if length == 0 then null
      elif $how == "median" then median elif $how == "max" then max
      elif $how == "min" then min else add end;
  def fmt: if . == null then "-" elif (. | fabs) >= 100 then (. | round | tostring)
      else (. * 100 | round / 100 | tostring) end;
  map(. + {not_held: (if .case == "conn" then (.clients // 0) - (.held // 0) else null end),
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
jq -r '
  def r: if . == null then "-" else (. | round | tostring) end;
  "  \(.case) r\(.round) \(.broker): " +
  (if .case == "conn" then "\(.held | r) held, \(.connect_rate | r) conn/s (\(.connect_s * 10 | round / 10) s), \(.broker_bytes_per_conn | r) B/conn, \(.listen_overflows // "-") SYNs dropped (listen queue full), \(.time_wait_before // "-") TIME_WAIT sockets before"
   else "\(.delivered_rate | r) msg/s, p99 \(.latency_us_p99 | r) us, lost \(.lost | r), dropped \(.dropped | r), rss peak \((.broker_rss_peak // 0) / 1048576 | r) MiB" end) +
  ", broker cpu \(.broker_cpu_pct | r)%, bench cpu \(.bench_cpu_pct | r)%, others \(.other_cpu_pct | r)% (\(.others_before_pct // "-")% just before), load1 \(.load1)" +
  (if .broker_state != "alive" then "  BROKER \(.broker_state)" else "" end) +
  (if .bench_rc != 0 then "  BENCH EXIT \(.bench_rc)" else "" end)
' "$RESULTS"
echo
echo "raw results: $RESULTS"
