#!/usr/bin/env bash
# What a broker that acknowledged QoS 1 messages for persistent sessions still delivers after
# kill -9: for each broker (Starling with `sync = "batch"`, Mosquitto with `persistence true`,
# the configs of benches/lib.sh's `persist` scenario), in a fresh store:
#   1. SUBS persistent sessions (clean session 0) subscribe at QoS 1 and go offline;
#   2. a publisher sends COUNT QoS 1 messages to them at RATE msg/s, recording every PUBACK
#      as it arrives (benches/durability.py);
#   3. KILL_AFTER seconds in, the broker gets SIGKILL (mid-stream);
#   4. it is restarted on the same store, the sessions reconnect (clean session 0) and take
#      everything the broker still has;
#   5. acknowledged-but-never-delivered messages are counted.
# One JSON line per broker and round in $RESULTS; a table on stdout.
#
# Environment: BIN_DIR (directory holding the starling binary; default target/profiling, built
# with `cargo build --profile profiling --bins` unless NOBUILD=1), BROKERS (default
# "starling mosquitto"), RUNS (3), SUBS (10), COUNT (8000: 800 per session, below both
# brokers' 1000-message queue limit, so nothing is dropped for being over it), RATE (2000),
# KILL_AFTER (2 s), KEEP=1 keeps the work directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
default_settings $((30000 + RANDOM % 20000)) durability
SUBS=${SUBS:-10}
COUNT=${COUNT:-8000}
RATE=${RATE:-2000}
KILL_AFTER=${KILL_AFTER:-2}
BROKERS=${BROKERS:-starling mosquitto}
CLIENT=$ROOT/benches/durability.py

need_tools
python3 -c 'import paho.mqtt.client' 2>/dev/null ||
    die "python3 with paho-mqtt 2.x is needed (Debian: python3-paho-mqtt)"
if [ -z "${BIN_DIR:-}" ]; then
    if [ "${NOBUILD:-0}" != 1 ]; then
        log "cargo build --profile profiling --bins"
        (cd "$ROOT" && cargo build --profile profiling --bins >&2)
    fi
    BIN_DIR=$ROOT/target/profiling
fi
STARLING=$BIN_DIR/starling
BENCH=$BIN_DIR/starling-bench
[ -x "$STARLING" ] || die "no starling binary in $BIN_DIR"
prepare_workdir starling-durability
log "results: $RESULTS   workdir: $WORKDIR"

# One kill -9 round for one broker: prints one JSON line.
round() { # broker round
    local broker=$1 r=$2 tag port dir pub_pid
    next_port
    port=$PORT
    tag="dur-$broker-r$r-p$port"
    dir=$WORKDIR/$tag
    start_broker "$broker" "$port" 1 "$tag"
    python3 "$CLIENT" subscribe --port "$port" --subs "$SUBS"
    python3 "$CLIENT" publish --port "$port" --subs "$SUBS" --count "$COUNT" --rate "$RATE" \
        --acked "$dir/acked.txt" >"$dir/publish.json" 2>"$dir/publish.err" &
    pub_pid=$!
    sleep "$KILL_AFTER"
    local acked_at_kill
    acked_at_kill=$(wc -l <"$dir/acked.txt" 2>/dev/null || echo 0)
    kill -KILL "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    wait "$pub_pid" || true
    log "$tag: killed with $acked_at_kill acknowledged; restarting on the same store"
    start_broker "$broker" "$port" 1 "$tag"
    python3 "$CLIENT" collect --port "$port" --subs "$SUBS" --delivered "$dir/delivered.txt" \
        >"$dir/collect.json"
    stop_broker "$BROKER_PID"
    local rep
    rep=$(python3 "$CLIENT" report --acked "$dir/acked.txt" --delivered "$dir/delivered.txt")
    jq -c -n --arg broker "$broker" --argjson round "$r" --argjson rep "$rep" \
        --slurpfile pub "$dir/publish.json" --slurpfile col "$dir/collect.json" \
        --argjson kill_after "$KILL_AFTER" --argjson rate "$RATE" \
        '{broker: $broker, round: $round, rate: $rate, kill_after_s: $kill_after}
         + $rep + {sent: $pub[0].sent, sessions_present: $col[0].sessions_present}'
}

for r in $(seq 1 "$RUNS"); do
    for b in $BROKERS; do
        round "$b" "$r" | tee -a "$RESULTS"
    done
done

echo
echo "| broker | round | sent | acknowledged | delivered after restart | acknowledged but lost | sessions present |"
echo "|---|---|---|---|---|---|---|"
jq -r '"| \(.broker) | \(.round) | \(.sent) | \(.acked) | \(.distinct_delivered) | \(.acked_lost) | \(.sessions_present)/'"$SUBS"' |"' "$RESULTS"
