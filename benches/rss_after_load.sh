#!/usr/bin/env bash
# Whether a broker's RSS comes back down after a load: starts Starling (persistence on, in a
# fresh temporary store, on an ephemeral 127.0.0.1 port), runs one `starling-bench` load,
# then prints the broker's RSS before the load, at its end, and WAIT seconds later. The
# broker's `starling::memory` debug lines (each trim, what it gave back and how long it took)
# follow.
#
#   benches/rss_after_load.sh                       # QoS 1 into 100 persistent sessions, 8 s
#   benches/rss_after_load.sh fanin --pubs 10 --qos 0 --duration 8s
#
# Environment: BIN_DIR (directory holding starling and starling-bench; default
# target/release, built with `cargo build --release --bins` unless NOBUILD=1), WAIT (35 s:
# the trim waits for two quiet 10-second intervals).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
WAIT=${WAIT:-35}
if [ "${NOBUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --bins)
fi
if [ $# -eq 0 ]; then
    set -- p2p --pairs 100 --qos 1 --persistent-subs --duration 8s
fi

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '[[listeners]]\nbind = "127.0.0.1:%s"\n\n[persistence]\nenabled = true\ndir = "%s/store"\n' \
    "$PORT" "$WORK" >"$WORK/starling.toml"
RUST_LOG=info,starling::memory=debug "$BIN_DIR/starling" --config "$WORK/starling.toml" \
    >"$WORK/broker.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
# Listening once the start-up line is logged (the store is restored before the port opens).
for _ in $(seq 1 100); do
    grep -q "started" "$WORK/broker.log" && break
    sleep 0.1
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
before=$(rss)
"$BIN_DIR/starling-bench" "$@" --port "$PORT" --broker-pid "$PID" 2>&1 |
    grep -E "delivered|broker rss" || true
end=$(rss)
sleep "$WAIT"
after=$(rss)
echo "broker RSS kB: before the load $before, at its end $end, $WAIT s later $after"
grep "starling::memory" "$WORK/broker.log" || echo "(no trim)"
