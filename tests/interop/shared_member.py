#!/usr/bin/env python3
"""paho-mqtt 2.x member of an MQTT 5.0 shared subscription, for tests/interop_shared_churn.rs.

  shared_member.py --port P --id ID --share '$share/g/shared/#'

Connects with clean start and Session Expiry 0 (the session ends with the connection),
subscribes to the shared filter at QoS 1, prints "SUBSCRIBED", then "MSG <payload>" for every
message, flushed before the callback returns: paho acknowledges a QoS 1 message after its
on_message callback, so whatever this prints was printed before the broker saw the PUBACK, and
a message acknowledged to the broker has been printed. Runs until killed; exits 1 with
"FAIL: reason" on stderr if the connection is refused or lost.
"""

import argparse
import os
import sys
import threading

import paho.mqtt.client as mqtt


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--share", required=True)
    a = ap.parse_args()

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=a.id,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=False,
    )

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            fail(f"CONNACK {reason_code}")
        client.subscribe(a.share, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):
            fail(f"SUBACK {reason_codes}")
        print("SUBSCRIBED", flush=True)

    def on_message(client, userdata, msg):
        print("MSG " + msg.payload.decode("utf-8", "replace"), flush=True)

    def on_disconnect(client, userdata, flags, reason_code, properties):
        fail(f"disconnected: {reason_code}")

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.on_disconnect = on_disconnect
    c.connect(a.host, a.port, keepalive=30, clean_start=True)
    c.loop_forever()


if __name__ == "__main__":
    main()
