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
  connack [--client-id ID] [--rri 0|1] [--expect Name=value ...] [--absent Name ...]
      Connects (keep alive 60) and checks the CONNACK properties: each --expect property has the
      value given (compared as text), each --absent one is not there. An empty --client-id must
      get a non-empty AssignedClientIdentifier.
  alias --topic T
      Outgoing Topic Aliases: PUBLISH T with alias 1, then topic "" with alias 1, then T/2 with
      alias 1 (remapped), then "" again; a subscriber gets full topics [T, T, T/2, T/2]. Then an
      alias above the server's Topic Alias Maximum gets DISCONNECT 0x94.
  subid --topic T
      Overlapping subscriptions T/+ (id 1), T/# (id 2) and T/x (no id): one copy of a message on
      T/x carrying identifiers {1, 2}; T/y likewise; a plain subscription gets none.
  subopts --topic T
      No Local, Retain As Published and Retain Handling 0/1/2 with SubscribeOptions.
  takeover
      A second connection with the same client id: the first gets DISCONNECT 0x8E.
  will --topic T
      Will Delay Interval: a will (with User Properties, Content Type) published only after the
      delay once the connection drops, and not at all if the client reconnects within it.
  badauth
      CONNECT with an Authentication Method the server does not know: CONNACK 0x8C.

Every wait is bounded. Prints progress lines on stdout, ends with "OK" and exit code 0; on any
failure prints "FAIL: reason" on stderr and exits 1.
"""

import argparse
import os
import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

TIMEOUT = 5.0


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def say(msg):
    print(msg, flush=True)


class Client:
    def __init__(self, host, port, client_id):
        self.host, self.port, self.name = host, port, client_id or "<empty id>"
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        self.disconnect_reason = None
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
            self.disconnect_reason = reason_code
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

    def connect(self, clean_start=True, session_expiry=None, props=None, keepalive=30,
                refused_ok=False):
        self.connack = None
        self.disconnected = False
        if session_expiry is not None:
            props = props or Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
        self.c.connect(
            self.host, self.port, keepalive=keepalive, clean_start=clean_start, properties=props
        )
        self.c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")
        session_present, rc, _props = self.connack
        if rc.is_failure and not refused_ok:
            fail(f"{self.name}: CONNACK refused: {rc}")
        return session_present

    def drop(self):
        """Ends the connection without DISCONNECT (as a network failure would)."""
        self.c.socket().shutdown(socket.SHUT_RDWR)
        self.wait(lambda: self.disconnected, "the dropped connection to end")
        self.c.loop_stop()

    def subscribe(self, topic, qos, options=None, properties=None):
        if options is not None:
            rc, mid = self.c.subscribe(topic, options=options, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos, properties=properties)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            fail(f"{self.name}: subscribe returned {rc}")
        self.wait(lambda: mid in self.subacks, "SUBACK")
        codes = [c.value for c in self.subacks[mid]]
        if codes != [qos]:
            fail(f"{self.name}: SUBACK codes {codes}, expected [{qos}]")

    def next_message(self, what):
        """The next message not yet taken."""
        self.taken = getattr(self, "taken", 0)
        self.wait(lambda: len(self.messages) > self.taken, what)
        m = self.messages[self.taken]
        self.taken += 1
        return m

    def quiet(self, what, secs=0.3):
        """Nothing new arrives for `secs` (always followed by a positive check)."""
        self.taken = getattr(self, "taken", 0)
        time.sleep(secs)
        with self.cv:
            if len(self.messages) > self.taken:
                m = self.messages[self.taken]
                fail(f"{self.name}: expected nothing ({what}), got {m.topic} {m.payload!r}")

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


def connack(a):
    props = Properties(PacketTypes.CONNECT)
    if a.rri is not None:
        props.RequestResponseInformation = a.rri
    c = Client(a.host, a.port, a.client_id)
    c.connect(props=props, keepalive=60)
    _present, rc, got = c.connack
    seen = got.json() if got is not None else {}
    say(f"CONNACK {rc} {seen}")
    for e in a.expect:
        name, want = e.split("=", 1)
        if name not in seen:
            fail(f"CONNACK lacks {name} (expected {want}): {seen}")
        if str(seen[name]) != want:
            fail(f"CONNACK {name} = {seen[name]!r}, expected {want}")
    for name in a.absent:
        if name in seen:
            fail(f"CONNACK has {name} = {seen[name]!r}, expected it absent")
    if a.client_id == "" and not seen.get("AssignedClientIdentifier"):
        fail(f"empty client id without an AssignedClientIdentifier: {seen}")
    c.disconnect()
    say("OK")


def alias(a):
    sub = Client(a.host, a.port, "paho5-alias-sub")
    sub.connect()
    sub.subscribe(f"{a.topic}/#", 1)
    pub = Client(a.host, a.port, "paho5-alias-pub")
    pub.connect()
    steps = [(a.topic, "set"), ("", "use"), (f"{a.topic}/2", "remap"), ("", "use-remapped")]
    for topic, payload in steps:
        props = Properties(PacketTypes.PUBLISH)
        props.TopicAlias = 1
        pub.publish(topic, payload, 1, properties=props)
    got = []
    for _ in steps:
        m = sub.next_message("aliased message")
        got.append((m.topic, m.payload.decode(), getattr(m.properties, "TopicAlias", None)))
    say(f"RECV {got}")
    want = [(a.topic, "set"), (a.topic, "use"), (f"{a.topic}/2", "remap"),
            (f"{a.topic}/2", "use-remapped")]
    if [(t, p) for t, p, _ in got] != want:
        fail(f"aliases resolved to {got}, expected {want}")
    if any(x is not None for _, _, x in got):
        fail(f"the publisher's alias reached a subscriber that allows none: {got}")
    # The server's Topic Alias Maximum is 10: alias 11 is invalid.
    props = Properties(PacketTypes.PUBLISH)
    props.TopicAlias = 11
    pub.c.publish(a.topic, "bad", 0, properties=props)
    pub.wait(lambda: pub.disconnected, "DISCONNECT after alias 11")
    if pub.disconnect_reason is None or pub.disconnect_reason.value != 0x94:
        fail(f"alias 11: disconnect reason {pub.disconnect_reason}, expected 0x94")
    say(f"ALIAS 11 -> {pub.disconnect_reason}")
    sub.disconnect()
    say("OK")


def subid(a):
    sub = Client(a.host, a.port, "paho5-subid")
    sub.connect()
    for filt, ident in [(f"{a.topic}/+", 1), (f"{a.topic}/#", 2), (f"{a.topic}/x", None)]:
        props = None
        if ident is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = ident
        sub.subscribe(filt, 1, properties=props)
    plain = Client(a.host, a.port, "paho5-subid-plain")
    plain.connect()
    plain.subscribe(f"{a.topic}/#", 1)
    pub = Client(a.host, a.port, "paho5-subid-pub")
    pub.connect()
    for leaf in ("x", "y"):
        pub.publish(f"{a.topic}/{leaf}", leaf, 1)
        m = sub.next_message(f"{leaf}")
        ids = sorted(getattr(m.properties, "SubscriptionIdentifier", []))
        say(f"RECV {m.topic} ids={ids}")
        if ids != [1, 2]:
            fail(f"{m.topic}: subscription identifiers {ids}, expected [1, 2]")
        p = plain.next_message(f"plain {leaf}")
        if getattr(p.properties, "SubscriptionIdentifier", None):
            fail(f"identifiers on a subscription that had none: {p.properties}")
    pub.publish(f"{a.topic}/z/z", "marker", 1)
    m = sub.next_message("marker")
    if m.payload != b"marker":
        fail(f"one copy per message: got a second copy {m.topic} {m.payload!r}")
    if sorted(getattr(m.properties, "SubscriptionIdentifier", [])) != [2]:
        fail(f"marker on {m.topic}: identifiers {m.properties}, expected [2]")
    for c in (sub, plain, pub):
        c.disconnect()
    say("OK")


def subopts(a):
    t = a.topic
    pub = Client(a.host, a.port, "paho5-so-pub")
    pub.connect()

    # No Local [MQTT-3.8.3-3]: own messages are not delivered back.
    nl = Client(a.host, a.port, "paho5-so-nl")
    nl.connect()
    nl.subscribe(f"{t}/nl", 1, options=SubscribeOptions(qos=1, noLocal=True))
    nl.publish(f"{t}/nl", "own", 1)
    pub.publish(f"{t}/nl", "other", 1)
    m = nl.next_message("message from another client")
    if m.payload != b"other":
        fail(f"No Local: received {m.payload!r}, expected only b'other'")
    say("NOLOCAL OK")

    # Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13], on live messages.
    rap1 = Client(a.host, a.port, "paho5-so-rap1")
    rap0 = Client(a.host, a.port, "paho5-so-rap0")
    for c, flag in ((rap1, True), (rap0, False)):
        c.connect()
        c.subscribe(f"{t}/rap", 1, options=SubscribeOptions(qos=1, retainAsPublished=flag))
    info = pub.c.publish(f"{t}/rap", "live-retained", 1, retain=True)
    info.wait_for_publish(TIMEOUT)
    m1, m0 = rap1.next_message("RAP=1"), rap0.next_message("RAP=0")
    say(f"RAP retain flags: rap1={m1.retain} rap0={m0.retain}")
    if not m1.retain or m0.retain:
        fail(f"Retain As Published: RAP=1 got retain={m1.retain}, RAP=0 got retain={m0.retain}")

    # Retain Handling [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11].
    info = pub.c.publish(f"{t}/rh", "retained", 1, retain=True)
    info.wait_for_publish(TIMEOUT)
    rh = Client(a.host, a.port, "paho5-so-rh")
    rh.connect()
    cases = [
        (SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE, True, "0 (new)"),
        (SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE, True, "0 (again)"),
    ]
    for handling, want, label in cases:
        rh.subscribe(f"{t}/rh", 1, options=SubscribeOptions(qos=1, retainHandling=handling))
        m = rh.next_message(f"retained for Retain Handling {label}")
        if m.payload != b"retained" or not m.retain:
            fail(f"Retain Handling {label}: got {m.payload!r} retain={m.retain}")
    rh.c.unsubscribe(f"{t}/rh")
    rh.subscribe(f"{t}/rh", 1, options=SubscribeOptions(qos=1, retainHandling=1))
    m = rh.next_message("retained for Retain Handling 1 (new)")
    if m.payload != b"retained":
        fail(f"Retain Handling 1 (new subscription): got {m.payload!r}")
    rh.subscribe(f"{t}/rh", 1, options=SubscribeOptions(qos=1, retainHandling=1))
    rh.quiet("retained again for Retain Handling 1 on an existing subscription")
    rh2 = Client(a.host, a.port, "paho5-so-rh2")
    rh2.connect()
    rh2.subscribe(f"{t}/rh", 1, options=SubscribeOptions(qos=1, retainHandling=2))
    rh2.quiet("retained for Retain Handling 2")
    pub.publish(f"{t}/rh", "marker", 1)
    for c in (rh, rh2):
        m = c.next_message("marker")
        if m.payload != b"marker":
            fail(f"{c.name}: got {m.payload!r} before the marker")
    say("RETAIN HANDLING OK")
    for c in (pub, nl, rap1, rap0, rh, rh2):
        c.disconnect()
    say("OK")


def takeover(a):
    first = Client(a.host, a.port, "paho5-takeover")
    first.connect()
    second = Client(a.host, a.port, "paho5-takeover")
    second.connect()
    first.wait(lambda: first.disconnected, "DISCONNECT of the first connection")
    rc = first.disconnect_reason
    say(f"FIRST DISCONNECT {rc}")
    if rc is None or rc.value != 0x8E:
        fail(f"first connection: disconnect reason {rc}, expected 0x8E Session taken over")
    second.disconnect()
    say("OK")


def will(a):
    t = a.topic
    watcher = Client(a.host, a.port, "paho5-will-watch")
    watcher.connect()
    watcher.subscribe(f"{t}/#", 1)

    def with_will(cid, delay, topic):
        c = Client(a.host, a.port, cid)
        wp = Properties(PacketTypes.WILLMESSAGE)
        wp.WillDelayInterval = delay
        wp.ContentType = "text/plain"
        wp.UserProperty = [("k", "v1"), ("k", "v2")]
        c.c.will_set(topic, f"will of {cid}", 1, properties=wp)
        return c

    # Delay 1 s: published after the delay, with its properties [MQTT-3.1.3-10].
    a1 = with_will("paho5-will-a", 1, f"{t}/a")
    a1.connect(session_expiry=30)
    t0 = time.monotonic()
    a1.drop()
    m = watcher.next_message("will after its delay")
    waited = time.monotonic() - t0
    say(f"WILL {m.topic} {m.payload!r} after {waited:.2f}s props={m.properties}")
    if m.topic != f"{t}/a":
        fail(f"unexpected message {m.topic} {m.payload!r}")
    if waited < 0.9:
        fail(f"will published after {waited:.2f}s, before its 1 s delay")
    if getattr(m.properties, "ContentType", None) != "text/plain":
        fail(f"will Content Type lost: {m.properties}")
    if getattr(m.properties, "UserProperty", None) != [("k", "v1"), ("k", "v2")]:
        fail(f"will User Properties lost or reordered: {m.properties}")

    # Delay 2 s, reconnect within it: no will [MQTT-3.1.3-9].
    b1 = with_will("paho5-will-b", 2, f"{t}/b")
    b1.connect(session_expiry=30)
    b1.drop()
    b2 = Client(a.host, a.port, "paho5-will-b")
    present = b2.connect(clean_start=False, session_expiry=30)
    if not present:
        fail("reconnect within the session expiry: session present = 0")
    watcher.quiet("will published although the client reconnected in time", 2.5)
    b2.publish(f"{t}/b", "marker", 1)
    m = watcher.next_message("marker")
    if m.payload != b"marker":
        fail(f"will published although the client reconnected: {m.payload!r}")
    b2.disconnect()
    watcher.disconnect()
    say("OK")


def badauth(a):
    props = Properties(PacketTypes.CONNECT)
    props.AuthenticationMethod = "SCRAM-SHA-256"
    c = Client(a.host, a.port, "paho5-badauth")
    c.connect(props=props, refused_ok=True)
    _present, rc, _p = c.connack
    say(f"CONNACK {rc} ({rc.value:#04x})")
    if rc.value != 0x8C:
        fail(f"CONNACK {rc}, expected 0x8C Bad authentication method")
    c.wait(lambda: c.disconnected, "the server to close the connection")
    say("OK")


def main():
    ap = argparse.ArgumentParser()
    modes = {
        "userprops": userprops, "session": session, "shared": shared, "connack": connack,
        "alias": alias, "subid": subid, "subopts": subopts, "takeover": takeover,
        "will": will, "badauth": badauth,
    }
    ap.add_argument("mode", choices=sorted(modes))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--topic", default="paho5/t")
    ap.add_argument("--client-id", default="paho5-connack")
    ap.add_argument("--rri", type=int, default=None)
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--absent", action="append", default=[])
    a = ap.parse_args()
    watchdog = threading.Timer(20.0, lambda: fail("watchdog: run took over 20 s"))
    watchdog.daemon = True
    watchdog.start()
    modes[a.mode](a)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
