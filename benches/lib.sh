# shellcheck shell=bash
# Shared by benches/compare.sh (Starling vs Mosquitto) and benches/peers.sh (Starling vs
# Mosquitto, rumqttd and optionally nats-server): tools and binaries, noise measurement, broker
# start/stop with comparable limits, the scenarios' starling-bench arguments, one measured run
# as a JSON line, and the per-run listing. Sourced, not run: the caller sets `set -euo pipefail`
# and `ROOT` (the repository), sources this, then calls default_settings before the rest.

SCRIPT=${0##*/}
die() { echo "$SCRIPT: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Settings both scripts take from the environment (their headers document them); sets PORT,
# the last port used.
default_settings() { # base-port results-subdir
    DURATION=${DURATION:-10s}
    WARMUP=${WARMUP:-1s}
    RUNS=${RUNS:-3}
    CONN_CLIENTS=${CONN_CLIENTS:-19500}
    CONN_TLS_CLIENTS=${CONN_TLS_CLIENTS:-$CONN_CLIENTS}
    BASE_PORT=${BASE_PORT:-$1}
    MAX_OTHERS=${MAX_OTHERS:-30}
    QUIET_WAIT=${QUIET_WAIT:-60}
    TW_MAX=${TW_MAX:-1000}
    NOFILE=${NOFILE:-20000}
    STAMP=$(date +%Y%m%d-%H%M%S)
    RESULTS=${RESULTS:-$ROOT/target/$2/results-$STAMP.jsonl}
    PORT=$BASE_PORT
}

# jq functions the reports share: the median, an aggregate by name, a number as the tables show
# it (whole from 100 up, two decimals below), a ratio and its cell, and a field's min-max range.
# Prepended to each report's program: jq -rs ... "$JQ_REPORT_DEFS"'<program>'.
# shellcheck disable=SC2016,SC2034 # jq's $variables, not the shell's; used by the scripts that source this
JQ_REPORT_DEFS='
  def median: sort | if length == 0 then null
      elif length % 2 == 1 then .[(length - 1) / 2]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def agg($how): if length == 0 then null
      elif $how == "median" then median elif $how == "max" then max elif $how == "min" then min else add end;
  def fmt: if . == null then "-" elif (. | fabs) >= 100 then (. | round | tostring)
      else (. * 100 | round / 100 | tostring) end;
  def ratio($a; $b): if $a != null and $b != null and $b != 0 then $a / $b else null end;
  def rfmt: if . == null then "-" else (. * 100 | round / 100 | tostring) + "x" end;
  def range_of($k): [.[] | .[$k] | select(. != null)] | if length == 0 then "-"
      else "\(min | round)-\(max | round)" end;
'

# Known scenario ids (see scenario_args).
ALL_SCENARIOS=(p2p fanout fanin_q1 fanin_q0 lat_p2p lat_fanin conn conn_tls persist persist_10k retained_q0 retained_q1)

check_scenarios() { # id...
    local s
    for s in "$@"; do
        case " ${ALL_SCENARIOS[*]} " in *" $s "*) ;; *) die "unknown scenario '$s' (known: ${ALL_SCENARIOS[*]})" ;; esac
    done
}

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

# Mosquitto, jq and ss (installed with apt-get when missing and running as root); sets MOSQUITTO.
need_tools() {
    export PATH="$PATH:/usr/sbin:/sbin"
    need_pkg mosquitto mosquitto
    need_pkg jq jq
    need_pkg ss iproute2
    MOSQUITTO=$(command -v mosquitto)
}

# Builds (unless NOBUILD=1) and finds the release binaries; sets STARLING and BENCH. BIN_DIR
# points at a directory that already holds them (e.g. another checkout's target/release).
find_release_bins() {
    local dir
    if [ -n "${BIN_DIR:-}" ]; then
        dir=$BIN_DIR
    else
        if [ "${NOBUILD:-0}" != 1 ]; then
            log "cargo build --release --bins"
            cargo build --release --bins >&2
        fi
        dir=${CARGO_TARGET_DIR:-$ROOT/target}/release
    fi
    STARLING=$dir/starling
    BENCH=$dir/starling-bench
    [ -x "$STARLING" ] && [ -x "$BENCH" ] || die "no release binaries in $dir"
}

# Commit the Starling binaries were built from: BIN_DIR's checkout, else this one. A BIN_DIR
# outside any checkout (a separate CARGO_TARGET_DIR) says so and names this checkout's commit.
starling_commit() {
    local dir=${BIN_DIR:-$ROOT}
    if ! git -C "$dir" rev-parse --git-dir >/dev/null 2>&1; then
        echo "? (BIN_DIR is not in a checkout; this checkout: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
        return
    fi
    echo "$(git -C "$dir" rev-parse --short HEAD)$(git -C "$dir" diff --quiet HEAD -- ':/src' 2>/dev/null || echo ' + uncommitted src changes')"
}

# Brokers get this soft open-file limit (the bench raises its own).
limit_open_files() {
    local hard
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$NOFILE" ]; then NOFILE=$hard; fi
    if [ "$NOFILE" -lt $((CONN_CLIENTS + 200)) ]; then
        log "warning: open-file limit $NOFILE is below CONN_CLIENTS+200; conn runs will fail"
    fi
}

# Work directory with copies of the binaries (extra ones as arguments), so a rebuild in the tree
# during the comparison cannot swap binaries mid-way; repoints STARLING and BENCH at the copies.
prepare_workdir() { # prefix [extra binary...]
    local prefix=$1
    shift
    if [ -z "${WORKDIR:-}" ]; then
        WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/$prefix.XXXXXX")
        [ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORKDIR"' EXIT
    fi
    mkdir -p "$WORKDIR/bin" "$(dirname "$RESULTS")"
    cp "$STARLING" "$BENCH" "$@" "$WORKDIR/bin/"
    STARLING=$WORKDIR/bin/starling
    BENCH=$WORKDIR/bin/starling-bench
    [ -n "${REPORT_ONLY:-}" ] || : >"$RESULTS"
    ME=$(id -un)
    CLK_TCK=$(getconf CLK_TCK)
}

# A test CA and a server certificate for 127.0.0.1 and localhost (ECDSA P-256, the key type
# of most new deployments; both brokers sign with the same key) in $WORKDIR/certs, made once
# per run with openssl; sets CERTS.
make_certs() {
    CERTS=$WORKDIR/certs
    [ -s "$CERTS/server.pem" ] && return 0
    need_pkg openssl openssl
    mkdir -p "$CERTS"
    (
        cd "$CERTS"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj "/CN=starling-bench CA" -keyout ca.key -out ca.pem
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=localhost" -keyout server.key -out server.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile ext.cnf -out server.pem
        chmod 644 server.key
    ) >/dev/null 2>&1 || die "openssl could not make the test certificates in $CERTS"
}

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
next_port() {
    while :; do
        PORT=$((PORT + 1))
        ss -Htan "( sport = :$PORT or dport = :$PORT )" | grep -q . || return 0
    done
}

wait_listening() { # port pid
    for _ in $(seq 1 100); do
        kill -0 "$2" 2>/dev/null || return 1
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

# Config writers: the same limits everywhere a broker has the knob (1000 queued messages and
# 20 in flight per session, anonymous, 127.0.0.1 only); what a broker lacks is said in
# BENCHMARKS.md ("Peers").
starling_config() { # dir port persist [tls]
    printf '[[listeners]]\nbind = "127.0.0.1:%s"\n' "$2"
    if [ "${4:-0}" = 1 ]; then
        printf 'protocol = "mqtts"\ncert = "%s/server.pem"\nkey = "%s/server.key"\n' "$CERTS" "$CERTS"
    fi
    printf '\n[persistence]\n'
    if [ "$3" = 1 ]; then
        printf 'enabled = true\ndir = "%s/store"\nsync = "batch"\n' "$1"
    else
        printf 'enabled = false\n'
    fi
    # STARLING_EXTRA: more TOML, e.g. '[mqtt]\nmax_inflight = 100' (printf %b expands \n).
    if [ -n "${STARLING_EXTRA:-}" ]; then
        printf '%b\n' "$STARLING_EXTRA"
    fi
}

# Mosquitto turns TLS on only when `cafile` (or `capath`) is set too; without
# `require_certificate` it asks no client for a certificate. Its OpenSSL keeps the defaults:
# session cache and TLS 1.3 tickets on.
mosquitto_config() { # dir port persist [tls]
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$2"
    if [ "${4:-0}" = 1 ]; then
        printf 'cafile %s/ca.pem\ncertfile %s/server.pem\nkeyfile %s/server.key\n' "$CERTS" "$CERTS" "$CERTS"
    fi
    printf 'max_queued_messages 1000\nmax_inflight_messages 20\n'
    printf 'user %s\n' "$ME"
    if [ "$3" = 1 ]; then
        printf 'persistence true\npersistence_location %s/\n' "$1"
    else
        printf 'persistence false\n'
    fi
}

# rumqttd has neither knob: the in-flight window toward a subscriber is a compile-time 100, and
# there is no per-session queue; each topic filter has one in-memory commit log of at most
# max_segment_size x max_segment_count bytes (its shipped 100 MiB x 10, kept) that all its
# subscribers read from. `max_inflight_count` is the most packets it reads from one socket per
# batch (shipped 100, kept). Its accept throttle (next_connection_delay_ms, shipped 1 ms per
# connection) is RUMQTTD_ACCEPT_DELAY_MS, default 0: the other brokers have none. Even at 0 its
# accept loop awaits a tokio sleep after every connection, which rounds up to the timer's 1 ms
# tick: ~715 connections/s in a 2,000-client trial here.
rumqttd_config() { # port v5-port
    printf 'id = 0\n\n[router]\nid = 0\nmax_connections = %s\n' "$((CONN_CLIENTS + 1000))"
    printf 'max_outgoing_packet_count = 200\nmax_segment_size = 104857600\nmax_segment_count = 10\n'
    local v port=$1
    for v in v4 v5; do
        printf '\n[%s.1]\nname = "%s-1"\nlisten = "127.0.0.1:%s"\n' "$v" "$v" "$port"
        printf 'next_connection_delay_ms = %s\n[%s.1.connections]\n' "${RUMQTTD_ACCEPT_DELAY_MS:-0}" "$v"
        printf 'connection_timeout_ms = 60000\nmax_payload_size = 1048576\nmax_inflight_count = 100\n'
        printf 'dynamic_filters = true\n'
        port=$2
    done
}

# nats-server's MQTT gateway keeps every QoS 1 session in JetStream (a file store here, so it
# always persists); max_ack_pending is its in-flight window per subscription. It has no
# per-session queue limit.
nats_config() { # dir port
    printf 'server_name: bench\nhost: 127.0.0.1\nport: -1\nmax_connections: %s\n' "$((CONN_CLIENTS + 1000))"
    printf 'jetstream {\n  store_dir: "%s/jetstream"\n}\n' "$1"
    printf 'mqtt {\n  host: 127.0.0.1\n  port: %s\n  max_ack_pending: 20\n}\n' "$2"
}

BROKER_PID=
start_broker() { # broker port persist(0|1) tag [tls(0|1)]
    local broker=$1 port=$2 persist=$3 tag=$4 dir="$WORKDIR/$4" tls=${5:-0} cmd
    mkdir -p "$dir"
    case $broker in
        starling)
            starling_config "$dir" "$port" "$persist" "$tls" >"$dir/starling.toml"
            cmd=("$STARLING" --config "$dir/starling.toml") ;;
        mosquitto)
            mosquitto_config "$dir" "$port" "$persist" "$tls" >"$dir/mosquitto.conf"
            cmd=("$MOSQUITTO" -c "$dir/mosquitto.conf") ;;
        rumqttd)
            next_port
            rumqttd_config "$port" "$PORT" >"$dir/rumqttd.toml"
            cmd=("$RUMQTTD" -q -c "$dir/rumqttd.toml") ;;
        nats)
            nats_config "$dir" "$port" >"$dir/nats.conf"
            cmd=("$NATS" -c "$dir/nats.conf") ;;
        *) die "unknown broker '$broker'" ;;
    esac
    (ulimit -n "$NOFILE"; exec "${cmd[@]}") >"$dir/broker.log" 2>&1 &
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
    local pid=$1 state=alive
    # a broker that exited is a zombie until reaped, and kill -0 still finds a zombie
    if ! kill -0 "$pid" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
        state=died
    fi
    kill -TERM "$pid" 2>/dev/null || true
    # gone = exited (a zombie until bash reaps it, which can happen between any two checks)
    local gone=0
    for _ in $(seq 1 150); do
        if [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo X)" = Z ] || ! kill -0 "$pid" 2>/dev/null; then
            gone=1
            break
        fi
        sleep 0.1
    done
    if [ "$gone" = 0 ]; then
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
        # TLS handshakes/s: every client shares one session cache, so after the first
        # handshakes most resume (the JSON line's tls_resumed counts them).
        conn_tls) echo conn --clients "$CONN_TLS_CLIENTS" --source-ips 4 --duration "$DURATION" \
            --tls --cafile "$CERTS/ca.pem" ;;
        # QoS 1 into persistent sessions: subscribers connect with clean session 0, so Starling
        # stores every message and sends PUBACK after the batch's fdatasync (sync = "batch").
        persist) echo p2p --pairs 100 --qos 1 --persistent-subs "${t[@]}" ;;
        # the same at 10,000 msg/s in total: latency and CPU at an ordinary load
        persist_10k) echo p2p --pairs 100 --qos 1 --persistent-subs --rate 100 "${t[@]}" ;;
        # 100,000 retained messages of 1 KB: RSS per message, then one subscriber to all of them
        retained_q0) echo retained --messages 100000 --size 1024 --qos 0 ;;
        retained_q1) echo retained --messages 100000 --size 1024 --qos 1 ;;
    esac
}

# `conn` leaves ~CONN_CLIENTS client sockets in TIME_WAIT for 60 s; the bench binds its source
# addresses explicitly, and a conn run started on top of them can take ~10x longer to connect
# (seen for both brokers). Let them expire first. Sets TW (the count before the run).
TW=0
wait_time_wait() {
    local waited=0
    while TW=$(ss -Htan state time-wait | wc -l); [ "$TW" -gt "$TW_MAX" ] && [ "$waited" -lt 75 ]; do
        [ "$waited" = 0 ] && log "$TW sockets in TIME_WAIT: waiting for them to expire (up to 75 s)"
        sleep 5
        waited=$((waited + 5))
    done
}

# One measured run: a fresh broker on a new port, starling-bench against it, and one JSON line in
# $RESULTS: the bench's report plus broker/round/noise fields (and the object in RUN_EXTRA).
run_one() { # scenario broker round
    local id=$1 broker=$2 round=$3 persist=0 tls=0 tag rc state
    case $id in persist | persist_10k) persist=1 ;; esac
    if [ "$id" = conn_tls ]; then
        tls=1
        make_certs
    fi
    next_port
    local port=$PORT
    tag="$id-$broker-r$round-p$port"
    TW=0
    case $id in conn | conn_tls) wait_time_wait ;; esac
    wait_for_quiet
    local load_before; load_before=$(load1)
    start_broker "$broker" "$port" "$persist" "$tag" "$tls"
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
    ( "$BENCH" $args --port "$port" --json --broker-pid "$pid" --label "$tag" \
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
    local line extra=${RUN_EXTRA:-}
    [ -n "$extra" ] || extra='{}'
    line=$(head -1 "$dir/bench.json")
    [ -n "$line" ] || line='{}'
    echo "$line" | jq -c \
        --arg case "$id" --arg broker "$broker" --argjson round "$round" \
        --argjson bench_rc "$rc" --arg broker_state "$state" --arg args "$args" \
        --argjson load1 "$load_before" --argjson load1_after "$(load1)" \
        --argjson others_before_pct "$OTHERS_BEFORE" --argjson listen_overflows "$((lo1 - lo0))" \
        --argjson time_wait_before "$TW" \
        --argjson c0 "${c0% *}" --argjson c1 "${c1% *}" --argjson s0 "${c0#* }" --argjson s1 "${c1#* }" \
        --argjson b0 "$b0" --argjson b1 "$b1" --argjson t0 "$t0" --argjson t1 "$t1" \
        --argjson bench_cpu "$bench_cpu" --argjson hz "$CLK_TCK" --argjson extra "$extra" '
        . + {case: $case, broker: $broker, round: $round, bench_rc: $bench_rc,
             broker_state: $broker_state, args: $args, load1: $load1, load1_after: $load1_after,
             others_before_pct: $others_before_pct, listen_overflows: $listen_overflows,
             time_wait_before: $time_wait_before,
             wall_s: ($t1 - $t0),
             # CPU of everything else on the machine while this run went on, in % of one core
             other_cpu_pct: ((($c1 - $c0) / $hz - ($b1 - $b0) / $hz - $bench_cpu) / ($t1 - $t0) * 100),
             steal_pct: (($s1 - $s0) / $hz / ($t1 - $t0) * 100)} + $extra' >>"$RESULTS"
}

# --- report ------------------------------------------------------------------------------------
# One line per run of a results file (a line with `skipped` says why that run did not happen).
print_runs() { # results-file
    jq -r '
  def r: if . == null then "-" else (. | round | tostring) end;
  "  \(.case) r\(.round) \(.broker): " +
  (if .skipped then "n/a (\(.skipped))"
   else
  (if .retained_messages then "\(.retained_bytes_per_msg | r) B per retained message, \(.retained_delivered | r) of \(.retained_messages | r) streamed at QoS \(.qos) in \(.retained_delivery_s * 100 | round / 100) s: \(.retained_delivery_rate | r) msg/s"
   elif (.case == "conn" or .case == "conn_tls") then "\(.held | r) held, \(.connect_rate | r) conn/s (\(.connect_s * 10 | round / 10) s)\(if .tls_resumed != null then ", \(.tls_resumed) resumed" else "" end), broker/bench cpu while connecting \(.broker_cpu_pct_connect | r)%/\(.bench_cpu_pct_connect | r)% (\(.broker_cpu_us_per_connect | r)/\(.bench_cpu_us_per_connect | r) us per connect), \(.broker_bytes_per_conn | r) B/conn, \(.listen_overflows // "-") SYNs dropped (listen queue full), \(.time_wait_before // "-") TIME_WAIT sockets before"
   else "\(.delivered_rate | r) msg/s, p99 \(.latency_us_p99 | r) us, lost \(.lost | r), dropped \(.dropped | r), rss peak \((.broker_rss_peak // 0) / 1048576 | r) MiB" end) +
  ", broker cpu \(.broker_cpu_pct | r)%, bench cpu \(.bench_cpu_pct | r)%, others \(.other_cpu_pct | r)% (\(.others_before_pct // "-")% just before), load1 \(.load1)" +
  (if .broker_state != "alive" then "  BROKER \(.broker_state)" else "" end) +
  (if .bench_rc != 0 then "  BENCH EXIT \(.bench_rc)" else "" end)
   end)
' "$1"
}

# --- shared by bridge.sh and cluster.sh: processes, settings, rounds ------------------------------
# Brokers this script started and has not stopped yet, stopped on exit whatever happens.
LIVE=()
cleanup() {
    local p
    for p in "${LIVE[@]}"; do
        if [ -n "$p" ]; then kill -TERM "$p" 2>/dev/null || true; fi
    done
    if [ -n "${RM_WORKDIR:-}" ]; then rm -rf "$WORKDIR"; fi
}

PROC_PID=

is_gone() { # pid: exited (a zombie until reaped) or not there
    ! kill -0 "$1" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo X)" = Z ]
}

mosquitto_bridge() { # central-port qos
    printf '\nconnection central\naddress 127.0.0.1:%s\nremote_clientid %s\n' "$1" "$BRIDGE_ID"
    printf 'topic bench/# out %s\ncleansession false\ntry_private true\n' "$2"
}

run_all() {
    local meta id round pair n=${#PAIRS[@]} i order
    meta=$(run_meta)
    log "results: $RESULTS   workdir: $WORKDIR"
    log "machine: $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
    log "brokers: $(jq -r '.versions | [.[]] | join("; ")' <<<"$meta")"
    for id in "${SCENARIOS[@]}"; do
        for round in $(seq 1 "$RUNS"); do
            order=()
            for i in $(seq 0 $((n - 1))); do order+=("${PAIRS[$(((i + round - 1) % n))]}"); done
            for pair in "${order[@]}"; do
                RUN_EXTRA=$(jq -c --arg t "$(date -u +%FT%TZ)" --arg o "${order[*]}" \
                    '. + {started: $t, order: $o}' <<<"$meta")
                run_pair "$id" "$pair" "$round"
            done
        done
    done
}

# A duration as the bench takes it (10s, 500ms, 2m, 1.5) in seconds, 3 decimals.
secs() {
    awk -v d="$1" 'BEGIN {
        u = d; sub(/^[0-9]+(\.[0-9]*)?/, "", u)
        if (u == d) exit 1
        if (u == "" || u == "s") f = 1; else if (u == "ms") f = 0.001
        else if (u == "m" || u == "min") f = 60; else if (u == "h") f = 3600; else exit 1
        printf "%.3f", (d + 0) * f }' || die "bad duration '$1' (e.g. 10s, 500ms, 2m)"
}

start_proc() { # port log cmd...
    local port=$1 logf=$2
    shift 2
    (ulimit -n "$NOFILE"; exec "$@") >"$logf" 2>&1 &
    PROC_PID=$!
    LIVE+=("$PROC_PID")
    if ! wait_listening "$port" "$PROC_PID"; then
        tail -20 "$logf" >&2
        die "${1##*/} did not start listening on 127.0.0.1:$port (log: $logf)"
    fi
}

stop_proc() { # pid (sets STATE as lib.sh's stop_broker)
    stop_broker "$1"
    local i
    for i in "${!LIVE[@]}"; do [ "${LIVE[$i]}" = "$1" ] && LIVE[i]=; done
    return 0
}

# Waits until the COUNT subscribers of bench process PID each have their CONNACK and SUBACK:
# 4 + 5 bytes received on each of its sockets to PORT (nothing else is sent to a subscriber of
# bench/<run>/in/+ before the first publish). The bench's own limit is 15 s.
wait_subscribed() { # port pid count
    local i n
    for i in $(seq 1 750); do
        is_gone "$2" && return 1
        n=$(ss -HtinpO state established "( dport = :$1 )" | awk -v p="pid=$2," '
            index($0, p) && match($0, /bytes_received:[0-9]+/) {
                if (substr($0, RSTART + 15, RLENGTH - 15) + 0 >= 9) n++ }
            END { print n + 0 }')
        [ "$n" -ge "$3" ] && return 0
        [ "$i" -lt 750 ] && sleep 0.02
    done
    return 1
}

add_secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }

# Checks the settings: the variables named (positive integers), LAT_RATE, and DURATION, WARMUP
# and DRAIN (sets DURATION_S, WARMUP_S, DRAIN_S in seconds).
# shellcheck disable=SC2153 # DURATION and WARMUP come from default_settings
check_settings() { # integer-variable...
    local v
    for v in "$@"; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (is '${!v}')"
    done
    if ! [[ $LAT_RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] || [ "$(awk -v r="$LAT_RATE" 'BEGIN { print (r > 0) }')" != 1 ]; then
        die "LAT_RATE must be a positive number (is '$LAT_RATE')"
    fi
    DURATION_S=$(secs "$DURATION")
    WARMUP_S=$(secs "$WARMUP")
    DRAIN_S=$(secs "$DRAIN")
    [ "$(awk -v d="$DURATION_S" -v w="$WARMUP_S" 'BEGIN { print (d > 0 && w > 0) }')" = 1 ] ||
        die "DURATION and WARMUP must be more than 0"
}

scenario_qos() { case $1 in tput_q0) echo 0 ;; *) echo 1 ;; esac; }
# messages/s per publisher, 0 = unthrottled
scenario_rate() { case $1 in lat_q1) awk -v r="$LAT_RATE" -v n="$PUBS" 'BEGIN { printf "%g", r / n }' ;; *) echo 0 ;; esac; }
