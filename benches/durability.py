#!/usr/bin/env python3
"""Client side of benches/durability.sh: what a broker acknowledged, and what it delivered
after a kill -9 and a restart on the same store.

Phases (one per invocation, so the shell can kill the broker between them):
  subscribe  SUBS persistent sessions (clean session 0, client id dur-sub-N) subscribe to
             dur/N at QoS 1 and disconnect: they are offline while the messages come.
  publish    QoS 1 PUBLISHes round-robin to dur/0..dur/SUBS-1, payload "N:I", at most
             --inflight unacknowledged, until --count are sent or the connection drops (the
             broker was killed). Each PUBACK is appended to --acked at once ("N I" lines,
             flushed), so the record survives whatever happens to the broker.
  collect    reconnects every session (clean session 0), acknowledges everything, stops after
             --idle seconds without a message, and writes what arrived to --delivered.
  report     acked-but-never-delivered and the other counts, as one JSON object.

Uses paho-mqtt 2.x, MQTT 3.1.1.
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


def client(cid, clean):
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=cid,
        clean_session=clean,
        protocol=mqtt.MQTTv311,
    )
    return c


def connect(c, port):
    done = threading.Event()
    result = {}

    def on_connect(_c, _u, flags, rc, _p):
        result["rc"] = rc
        result["present"] = flags.session_present
        done.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    if not done.wait(10) or result["rc"] != 0:
        sys.exit(f"connect {c._client_id!r} failed: {result}")
    return result["present"]


def subscribe(a):
    for n in range(a.subs):
        c = client(f"dur-sub-{n}", False)
        connect(c, a.port)
        acked = threading.Event()
        c.on_subscribe = lambda *_: acked.set()
        c.subscribe(f"dur/{n}", qos=1)
        if not acked.wait(10):
            sys.exit(f"no SUBACK for dur-sub-{n}")
        c.disconnect()
        c.loop_stop()


def publish(a):
    c = client("dur-pub", True)
    c.max_inflight_messages_set(a.inflight)
    c.max_queued_messages_set(a.inflight)
    out = open(a.acked, "w", buffering=1)
    lock = threading.Lock()
    pending = {}
    room = threading.Semaphore(a.inflight)
    gone = threading.Event()

    # PUBACKs whose publish() call has not returned its mid yet. (The lock is never held
    # across a paho call: paho holds its own lock while it runs this callback.)
    early = set()

    def on_publish(_c, _u, mid, _rc, _p):
        with lock:
            key = pending.pop(mid, None)
            if key is None:
                early.add(mid)
        if key is not None:
            out.write(f"{key[0]} {key[1]}\n")
        room.release()

    def on_disconnect(*_):
        gone.set()
        for _ in range(a.inflight):
            room.release()

    c.on_publish = on_publish
    c.on_disconnect = on_disconnect
    connect(c, a.port)
    interval = 1.0 / a.rate if a.rate else 0.0
    start = time.monotonic()
    sent = 0
    for i in range(a.count):
        room.acquire()
        if gone.is_set():
            break
        n = i % a.subs
        info = c.publish(f"dur/{n}", f"{n}:{i}".encode(), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            break
        with lock:
            if info.mid in early:
                early.discard(info.mid)
                out.write(f"{n} {i}\n")
            else:
                pending[info.mid] = (n, i)
        sent += 1
        if interval:
            delay = start + sent * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    # Wait for the last acks (or for the broker to go).
    deadline = time.monotonic() + 10
    while pending and not gone.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()
    out.close()
    print(json.dumps({"sent": sent}))


def collect(a):
    lock = threading.Lock()
    got = []
    last = [time.monotonic()]
    present = 0
    clients = []

    def on_message(_c, _u, m):
        with lock:
            got.append(m.payload.decode())
            last[0] = time.monotonic()

    for n in range(a.subs):
        c = client(f"dur-sub-{n}", False)
        c.on_message = on_message
        present += connect(c, a.port)
        clients.append(c)
    while time.monotonic() - last[0] < a.idle:
        time.sleep(0.1)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    with open(a.delivered, "w") as f:
        for p in got:
            n, i = p.split(":")
            f.write(f"{n} {i}\n")
    print(json.dumps({"sessions_present": present, "received": len(got)}))


def report(a):
    def read(path):
        with open(path) as f:
            return [tuple(line.split()) for line in f if line.strip()]

    acked = read(a.acked)
    delivered = read(a.delivered)
    lost = set(acked) - set(delivered)
    print(
        json.dumps(
            {
                "acked": len(acked),
                "delivered": len(delivered),
                "distinct_delivered": len(set(delivered)),
                "acked_lost": len(lost),
                "delivered_not_acked": len(set(delivered) - set(acked)),
            }
        )
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=["subscribe", "publish", "collect", "report"])
    p.add_argument("--port", type=int)
    p.add_argument("--subs", type=int, default=10)
    p.add_argument("--count", type=int, default=8000)
    p.add_argument("--rate", type=float, default=2000, help="msg/s, 0 = as fast as acked")
    p.add_argument("--inflight", type=int, default=100)
    p.add_argument("--idle", type=float, default=3.0)
    p.add_argument("--acked")
    p.add_argument("--delivered")
    a = p.parse_args()
    {"subscribe": subscribe, "publish": publish, "collect": collect, "report": report}[a.phase](a)


if __name__ == "__main__":
    main()
