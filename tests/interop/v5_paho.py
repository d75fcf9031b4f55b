#!/usr/bin/env python3
"""paho-mqtt 2.x MQTT 5.0 driver for Starling's interop tests (tests/v5_interop.rs).

Modes:
  userprops --topic T
      A v5 subscriber and publisher; PUBLISH with User Properties (duplicate keys, in a given
      order), Content Type, Response Topic, Correlation Data and Payload Format Indicator at QoS
      0, 1 and 2. The subscriber must receive every property unchanged, user properties in order.
  session --topic T --count N
      A v5 subscriber (clean_start=True, Session Expiry Interval 30) subscribes at QoS 1 and
      disconnects; N QoS 1 messages are published; on reconnect with clean_start=False it must
      get session present = 1 and the N messages in order.
  shared --topic T --count N
      Two v5 subscribers on $share/g/T; N QoS 1 messages; each message must reach exactly one
      member, and with round robin each member gets N/2.

Every wait is bounded. Prints progress lines on stdout, ends with "OK" and exit code 0; on any
failure prints "FAIL: reason" on stderr and exits 1.
"""

import argparse
import os
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT = 5.0


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def say(msg):
    print(msg, flush=True)


class Client:
    def __init__(self, host, port, client_id):
        self.host, self.port, self.name = host, port, client_id
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
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
            self.connack = (bool(flags.session_present), reason_code, properties)
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

    def connect(self, clean_start=True, session_expiry=None):
        self.connack = None
        self.disconnected = False
        props = None
        if session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
        self.c.connect(
            self.host, self.port, keepalive=30, clean_start=clean_start, properties=props
        )
        self.c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")
        session_present, rc, _props = self.connack
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

    def publish(self, topic, payload, qos, properties=None):
        info = self.c.publish(topic, payload, qos, properties=properties)
        info.wait_for_publish(TIMEOUT)
        if not info.is_published():
            fail(f"{self.name}: publish of {payload!r} at QoS {qos} not completed")

    def disconnect(self):
        self.c.disconnect()
        self.wait(lambda: self.disconnected, "disconnect")
        self.c.loop_stop()

    def wait_messages(self, n):
        self.wait(lambda: len(self.messages) >= n, f"{n} messages (have {len(self.messages)})")


USER_PROPS = [("b", "2"), ("a", "1"), ("a", "0"), ("empty", ""), ("ключ", "значение")]


def userprops(a):
    sub = Client(a.host, a.port, "paho5-up-sub")
    pub = Client(a.host, a.port, "paho5-up-pub")
    sub.connect()
    sub.subscribe(a.topic, 2)
    say("SUBSCRIBED")
    pub.connect()
    for qos in (0, 1, 2):
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = list(USER_PROPS)
        props.ContentType = "application/json"
        props.ResponseTopic = f"{a.topic}/reply"
        props.CorrelationData = b"\x00\x01corr"
        props.PayloadFormatIndicator = 1
        pub.publish(a.topic, f'{{"qos":{qos}}}', qos, properties=props)
    sub.wait_messages(3)
    for qos, m in enumerate(sub.messages):
        p = m.properties
        got = getattr(p, "UserProperty", None)
        say(f"RECV qos={m.qos} {m.payload.decode()} user={got}")
        if got != USER_PROPS:
            fail(f"QoS {qos}: user properties {got}, expected {USER_PROPS} in order")
        checks = [
            ("ContentType", "application/json"),
            ("ResponseTopic", f"{a.topic}/reply"),
            ("CorrelationData", b"\x00\x01corr"),
            ("PayloadFormatIndicator", 1),
        ]
        for name, want in checks:
            have = getattr(p, name, None)
            if have != want:
                fail(f"QoS {qos}: {name} = {have!r}, expected {want!r}")
        if m.qos != qos:
            fail(f"message {qos} arrived at QoS {m.qos}")
    pub.disconnect()
    sub.disconnect()
    say("OK")


def session(a):
    sid = "paho5-session"
    sub = Client(a.host, a.port, sid)
    present = sub.connect(clean_start=True, session_expiry=30)
    say(f"CONNACK session_present={int(present)}")
    if present:
        fail("clean start reported session present")
    sub.subscribe(a.topic, 1)
    sub.disconnect()
    say("OFFLINE")

    pub = Client(a.host, a.port, "paho5-session-pub")
    pub.connect()
    payloads = [f"queued-{i}" for i in range(a.count)]
    for p in payloads:
        pub.publish(a.topic, p, 1)
    say("PUBLISHED")

    sub2 = Client(a.host, a.port, sid)
    present = sub2.connect(clean_start=False, session_expiry=30)
    say(f"CONNACK session_present={int(present)}")
    if not present:
        fail("reconnect within the Session Expiry Interval reported session present = 0")
    sub2.wait_messages(a.count)
    got = [m.payload.decode() for m in sub2.messages]
    say(f"RECV {got}")
    if got[: a.count] != payloads:
        fail(f"queued messages {got}, expected {payloads}")
    pub.publish(a.topic, "marker", 1)
    sub2.wait_messages(a.count + 1)
    if sub2.messages[a.count].payload != b"marker":
        fail(f"after the queued messages: {sub2.messages[a.count].payload!r}, expected marker")
    pub.disconnect()
    sub2.disconnect()
    say("OK")


def shared(a):
    members = [Client(a.host, a.port, f"paho5-shared-{i}") for i in range(2)]
    for m in members:
        m.connect()
        m.subscribe(f"$share/g/{a.topic}", 1)
    say("SUBSCRIBED")
    pub = Client(a.host, a.port, "paho5-shared-pub")
    pub.connect()
    payloads = [f"s{i}" for i in range(a.count)]
    for p in payloads:
        pub.publish(a.topic, p, 1)
    deadline = time.monotonic() + TIMEOUT
    while sum(len(m.messages) for m in members) < a.count:
        if time.monotonic() > deadline:
            fail(f"timed out: members got {[len(m.messages) for m in members]}")
        time.sleep(0.01)
    # Anything more (a duplicate) would show up now; then a marker must reach one member.
    time.sleep(0.3)
    pub.publish(a.topic, "marker", 1)
    deadline = time.monotonic() + TIMEOUT
    while sum(len(m.messages) for m in members) < a.count + 1:
        if time.monotonic() > deadline:
            fail("marker not delivered")
        time.sleep(0.01)
    got = [[x.payload.decode() for x in m.messages] for m in members]
    say(f"MEMBERS {got}")
    flat = sorted(p for g in got for p in g if p != "marker")
    if flat != sorted(payloads):
        fail(f"each message must reach exactly one member: got {got}")
    if sum(g.count("marker") for g in got) != 1:
        fail(f"marker delivered {sum(g.count('marker') for g in got)} times")
    counts = [len([p for p in g if p != "marker"]) for g in got]
    if counts != [a.count // 2, a.count - a.count // 2]:
        fail(f"round robin should split {a.count} evenly, got {counts}")
    for m in members:
        m.disconnect()
    pub.disconnect()
    say("OK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["userprops", "session", "shared"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--topic", default="paho5/t")
    a = ap.parse_args()
    watchdog = threading.Timer(20.0, lambda: fail("watchdog: run took over 20 s"))
    watchdog.daemon = True
    watchdog.start()
    {"userprops": userprops, "session": session, "shared": shared}[a.mode](a)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
