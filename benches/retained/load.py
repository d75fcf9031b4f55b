"""Publishes N retained QoS 0 messages of SIZE bytes on ret/<i>, pipelined over one raw
MQTT 3.1.1 connection, then waits until the broker reports them all retained."""
import socket, sys, time, urllib.request

N, SIZE, PORT, MPORT = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def varint(n):
    out = bytearray()
    while True:
        b = n % 128; n //= 128
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)

def s(b): return len(b).to_bytes(2, "big") + b

s_ = socket.create_connection(("127.0.0.1", PORT))
body = s(b"MQTT") + bytes([4, 2]) + (0).to_bytes(2, "big") + s(b"loader")
s_.sendall(bytes([0x10]) + varint(len(body)) + body)
assert s_.recv(4)[0] == 0x20
payload = b"x" * SIZE
buf = bytearray()
for i in range(N):
    b = s(f"ret/{i}".encode()) + payload
    buf += bytes([0x31]) + varint(len(b)) + b
    if len(buf) > 1 << 20:
        s_.sendall(buf); buf.clear()
s_.sendall(buf)
while True:
    text = urllib.request.urlopen(f"http://127.0.0.1:{MPORT}/metrics").read().decode()
    n = [l for l in text.splitlines() if l.startswith("starling_retained_messages ")]
    if n and int(n[0].split()[1]) >= N: break
    time.sleep(0.2)
s_.close()
