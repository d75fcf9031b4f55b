#!/usr/bin/env python3
"""paho-mqtt 2.x driver for Starling's interop tests (tests/interop_paho.rs).

Modes:
  roundtrip  --protocol 31|311 --qos N --count N --topic T
      A subscriber and a publisher; the subscriber must receive COUNT messages at QoS N, in
      order, exactly once (a QoS 0 marker published afterwards must be the next message).
  persistent --protocol 31|311 --topic T --count N
      A clean_session=False subscriber subscribes at QoS 1 and disconnects; COUNT QoS 1
      messages are published while it is offline; on reconnect it must get session present = 1
      (--resume-present; 0 for 3.1, which has no such flag) and every queued message, in order.

Every wait is bounded. Prints progress lines on stdout, ends with "OK" and exit code 0; on any
failure prints "FAIL: reason" on stderr and exits 1.
"""

import argparse
import os
import sys
import threading
import time

import paho.mqtt.client as mqtt

TIMEOUT = 5.0


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def say(msg):
    print(msg, flush=True)


PROTOCOLS = {"31": mqtt.MQTTv31, "311": mqtt.MQTTv311}


class Client:
    def __init__(self, host, port, client_id, protocol, clean_session=True):
        self.host, self.port, self.name = host, port, client_id
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=clean_session,
            reconnect_on_failure=False,
        )
        self.cv = threading.Condition()
        self.connack = None
        self.subacks = {}
        self.messages = []
        self.disconnected = False
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cv:
            self.connack = (bool(flags.session_present), reason_code)
            self.cv.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        with self.cv:
            self.subacks[mid] = reason_code_list
            self.cv.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cv:
            self.messages.append(msg)
            self.cv.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.cv:
            self.disconnected = True
            self.cv.notify_all()

    def wait(self, pred, what):
        deadline = time.monotonic() + TIMEOUT
        with self.cv:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    fail(f"{self.name}: timed out waiting for {what}")
                self.cv.wait(left)

    def connect(self):
        self.connack = None
        self.disconnected = False
        self.c.connect(self.host, self.port, keepalive=30)
        self.c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")
        session_present, rc = self.connack
        if rc.is_failure:
            fail(f"{self.name}: CONNACK refused: {rc}")
        return session_present

    def subscribe(self, topic, qos):
        rc, mid = self.c.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            fail(f"{self.name}: subscribe returned {rc}")
        self.wait(lambda: mid in self.subacks, "SUBACK")
        codes = [c.value for c in self.subacks[mid]]
        if codes != [qos]:
            fail(f"{self.name}: SUBACK codes {codes}, expected [{qos}]")

    def publish(self, topic, payload, qos):
        info = self.c.publish(topic, payload, qos)
        info.wait_for_publish(TIMEOUT)
        if not info.is_published():
            fail(f"{self.name}: publish of {payload!r} at QoS {qos} not completed")

    def disconnect(self):
        self.c.disconnect()
        self.wait(lambda: self.disconnected, "disconnect")
        self.c.loop_stop()

    def wait_messages(self, n):
        self.wait(lambda: len(self.messages) >= n, f"{n} messages (have {len(self.messages)})")


def check_messages(msgs, topic, payloads, qos):
    got = [(m.topic, m.payload.decode(), m.qos) for m in msgs]
    want = [(topic, p, qos) for p in payloads]
    if got != want:
        fail(f"messages {got}, expected {want}")


def roundtrip(a):
    proto = PROTOCOLS[a.protocol]
    sub = Client(a.host, a.port, f"paho-sub-{a.protocol}-{a.qos}", proto)
    pub = Client(a.host, a.port, f"paho-pub-{a.protocol}-{a.qos}", proto)
    sub.connect()
    sub.subscribe(a.topic, a.qos)
    say("SUBSCRIBED")
    pub.connect()
    payloads = [f"paho-{a.protocol}-q{a.qos}-{i}" for i in range(a.count)]
    for p in payloads:
        pub.publish(a.topic, p, a.qos)
    pub.publish(a.topic, "marker", 0)
    sub.wait_messages(a.count + 1)
    for m in sub.messages:
        say(f"RECV {m.topic} {m.qos} {m.payload.decode()}")
    # Order is promised per topic and QoS [MQTT-4.6.0-6], and paho hands a QoS 2 message to the
    # application only on PUBREL, so the QoS 0 marker may overtake the last QoS 2 message.
    data = [m for m in sub.messages if m.payload != b"marker"]
    marker = [m for m in sub.messages if m.payload == b"marker"]
    check_messages(data, a.topic, payloads, a.qos)
    check_messages(marker, a.topic, ["marker"], 0)
    pub.disconnect()
    sub.disconnect()
    say("OK")


def persistent(a):
    proto = PROTOCOLS[a.protocol]
    sub_id = f"paho-persist-{a.protocol}"
    sub = Client(a.host, a.port, sub_id, proto, clean_session=False)
    present = sub.connect()
    say(f"CONNACK session_present={int(present)}")
    if present:
        fail("first connect of a new client id reported session present")
    sub.subscribe(a.topic, 1)
    sub.disconnect()
    say("OFFLINE")

    pub = Client(a.host, a.port, f"paho-persist-pub-{a.protocol}", proto)
    pub.connect()
    payloads = [f"queued-{i}" for i in range(a.count)]
    for p in payloads:
        pub.publish(a.topic, p, 1)
    say("PUBLISHED")

    sub2 = Client(a.host, a.port, sub_id, proto, clean_session=False)
    present = sub2.connect()
    say(f"CONNACK session_present={int(present)}")
    problems = []
    if int(present) != a.resume_present:
        # Reported at the end, so the delivery check below still runs.
        problems.append(
            f"reconnect with clean_session=False reported session present = {int(present)}, "
            f"expected {a.resume_present}"
        )
    sub2.wait_messages(a.count)
    for m in sub2.messages:
        say(f"RECV {m.topic} {m.qos} {m.payload.decode()}")
    check_messages(sub2.messages, a.topic, payloads, 1)
    pub.publish(a.topic, "marker", 0)
    sub2.wait_messages(a.count + 1)
    check_messages(sub2.messages[a.count :], a.topic, ["marker"], 0)
    pub.disconnect()
    sub2.disconnect()
    if problems:
        fail("; ".join(problems))
    say("OK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["roundtrip", "persistent"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="311")
    ap.add_argument("--qos", type=int, default=0)
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--topic", default="paho/t")
    # Session present expected on the persistent reconnect: 1 for 3.1.1; 0 for 3.1, whose
    # CONNACK has no session present flag (the first byte is reserved).
    ap.add_argument("--resume-present", type=int, default=1)
    a = ap.parse_args()
    # A hard bound on the whole run, whatever happens in paho's threads.
    watchdog = threading.Timer(20.0, lambda: fail("watchdog: run took over 20 s"))
    watchdog.daemon = True
    watchdog.start()
    {"roundtrip": roundtrip, "persistent": persistent}[a.mode](a)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
