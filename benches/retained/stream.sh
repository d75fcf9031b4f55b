#!/bin/sh
# RSS of the release broker holding N retained messages of SIZE bytes, then while and after a
# subscriber to ret/# receives all of them at QoS 1 (mosquitto_sub).
set -e
BIN=$1; N=$2; SIZE=$3
$BIN --config bench.toml >/dev/null 2>&1 &
PID=$!
sleep 1
python3 load.py $N $SIZE 18931 18932
loaded=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
mosquitto_sub -p 18931 -q 1 -t 'ret/#' -C $N -W 120 > /dev/null
after=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
kill $PID; wait $PID 2>/dev/null || true
echo "N=$N SIZE=$SIZE rss_loaded_kib=$loaded rss_after_stream_kib=$after peak_kib=$hwm"
