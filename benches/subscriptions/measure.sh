#!/bin/sh
# RSS of the release broker before, during and after one clean session with N subscriptions.
set -e
BIN=$1; N=$2
$BIN --config bench.toml >/dev/null 2>&1 &
PID=$!
sleep 1
rss() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }
before=$(rss)
python3 session.py "$N" 18941 18942 sh -c "awk '/VmRSS/ {print \$2}' /proc/$PID/status > rss_during"
during=$(cat rss_during); rm -f rss_during
sleep 1
after=$(rss)
kill $PID; wait $PID 2>/dev/null || true
echo "N=$N rss_before_kib=$before rss_with_subscriptions_kib=$during rss_after_session_end_kib=$after per_sub_bytes=$(( (during - before) * 1024 / N ))"
