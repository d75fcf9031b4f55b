"""One clean-session MQTT 3.1.1 client subscribes N filters (dev/<i>/+/temp and t/<i>, QoS 1)
in SUBSCRIBEs of 1000, waits for every SUBACK, then runs the command given as the remaining
arguments (the RSS probe), sends DISCONNECT and waits until the broker's metrics show no
subscriptions left."""
import socket, subprocess, sys, time, urllib.request

N, PORT, MPORT, PROBE = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]

def varint(n):
    out = bytearray()
    while True:
        b = n % 128; n //= 128
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)

def s(b): return len(b).to_bytes(2, "big") + b

def recv_packet(sock):
    head = sock.recv(1, socket.MSG_WAITALL)
    length, shift = 0, 0
    while True:
        b = sock.recv(1, socket.MSG_WAITALL)[0]
        length |= (b & 0x7F) << shift; shift += 7
        if not b & 0x80: break
    return head[0], sock.recv(length, socket.MSG_WAITALL) if length else b""

def subscriptions():
    text = urllib.request.urlopen(f"http://127.0.0.1:{MPORT}/metrics").read().decode()
    return int([l for l in text.splitlines() if l.startswith("starling_subscriptions ")][0].split()[1])

c = socket.create_connection(("127.0.0.1", PORT))
body = s(b"MQTT") + bytes([4, 2]) + (0).to_bytes(2, "big") + s(b"big-session")
c.sendall(bytes([0x10]) + varint(len(body)) + body)
assert recv_packet(c)[0] == 0x20
filters = [f"dev/{i}/+/temp" if i % 2 else f"t/{i}" for i in range(N)]
for pid, start in enumerate(range(0, N, 1000), 1):
    b = (pid % 65536).to_bytes(2, "big") + b"".join(s(f.encode()) + b"\x01" for f in filters[start:start + 1000])
    c.sendall(bytes([0x82]) + varint(len(b)) + b)
    kind, ack = recv_packet(c)
    assert kind == 0x90 and all(x == 1 for x in ack[2:]), ack[:8]
assert subscriptions() >= N
subprocess.run(PROBE, check=True)
c.sendall(b"\xe0\x00")
c.close()
while subscriptions() > 0:
    time.sleep(0.1)
