#!/bin/sh
# RSS of the release broker before and after N retained messages of SIZE bytes.
set -e
BIN=$1; N=$2; SIZE=$3
$BIN --config bench.toml >/dev/null 2>&1 &
PID=$!
sleep 1
before=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
python3 load.py $N $SIZE 18931 18932
sleep 1
after=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
kill $PID; wait $PID 2>/dev/null || true
echo "N=$N SIZE=$SIZE rss_before_kib=$before rss_after_kib=$after per_msg_bytes=$(( (after - before) * 1024 / N ))"
