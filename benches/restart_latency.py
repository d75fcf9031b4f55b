#!/usr/bin/env python3
"""Restart-to-first-CONNACK after SIGKILL, over several crashes in a row, on a realistic store.

  python3 benches/restart_latency.py --bin target/release/starling [--sessions 30000]
      [--rounds 6] [--churn 30000] [--queued 100] [--keep]

Starts Starling on a free 127.0.0.1 port with a fresh store, then:
  1. --sessions persistent sessions (clean session 0, id rl-s-N) subscribe at QoS 1 to
     rl/g/<N % 100> and disconnect; --queued QoS 1 messages to random groups are queued for
     them while they are offline (about --sessions / 100 queue entries per message);
  2. each round: 10 online persistent subscribers take --churn QoS 1 messages on rl/live
     (enqueue + dequeue churn, as in production), then the broker gets SIGKILL and is started
     again on the same store; the time from the spawn until a CONNECT gets its CONNACK is
     measured, with the journal bytes on disk before the kill and after the restart.
Journal files are fjall's (*.jnl; a new one is preallocated to 64 MiB, a replayed one is cut to
what it holds); every start replays all of them. The broker's own `store opened` line (with ms,
the time to open, load and restore the store) is shown for each start.
Needs only the Python standard library; raw MQTT 3.1.1 packets.
"""

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(x):
    x = x.encode()
    return len(x).to_bytes(2, "big") + x


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect_pkt(cid, clean):
    flags = 0x02 if clean else 0x00
    return packet(0x10, s("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big") + s(cid))


async def read_packet(r):
    first = (await r.readexactly(1))[0]
    n, shift = 0, 0
    while True:
        b = (await r.readexactly(1))[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first, await r.readexactly(n)


async def open_session(port, cid, clean=False):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(connect_pkt(cid, clean))
    first, body = await read_packet(r)
    if first >> 4 != 2 or body[1] != 0:
        raise RuntimeError(f"{cid}: CONNACK refused {body!r}")
    return r, w


async def subscribe(r, w, topic):
    w.write(packet(0x82, (1).to_bytes(2, "big") + s(topic) + b"\x01"))
    while True:
        first, _ = await read_packet(r)
        if first >> 4 == 9:
            return


async def make_sessions(port, n, conc=200):
    sem = asyncio.Semaphore(conc)

    async def one(i):
        async with sem:
            r, w = await open_session(port, f"rl-s-{i}")
            await subscribe(r, w, f"rl/g/{i % 100}")
            w.write(b"\xe0\x00")
            await w.drain()
            w.close()

    await asyncio.gather(*(one(i) for i in range(n)))


async def publish(port, cid, topics, window=200):
    """QoS 1 PUBLISHes to `topics` in order, at most `window` unacknowledged."""
    r, w = await open_session(port, cid, clean=True)
    acked = asyncio.Semaphore(window)
    done = asyncio.Event()
    left = [len(topics)]

    async def reader():
        while left[0]:
            first, _ = await read_packet(r)
            if first >> 4 == 4:
                left[0] -= 1
                acked.release()
        done.set()

    task = asyncio.create_task(reader())
    for i, t in enumerate(topics):
        await acked.acquire()
        pid = i % 65535 + 1
        w.write(packet(0x32, s(t) + pid.to_bytes(2, "big") + b"x" * 100))
    await done.wait()
    await task
    w.close()


async def live_subscriber(r, w, seen):
    """Acknowledges every QoS 1 PUBLISH; `seen[0]` is when the last one came."""
    while True:
        first, body = await read_packet(r)
        if first >> 4 == 3:
            tlen = int.from_bytes(body[:2], "big")
            w.write(b"\x40\x02" + body[2 + tlen : 4 + tlen])
            seen[0] = time.monotonic()


async def churn(port, n, subs=10):
    """n QoS 1 messages to `subs` online persistent sessions, which acknowledge them; returns
    once the publisher has its PUBACKs and the subscribers got nothing for a second (the broker
    may drop some for slow consumers: this is about store churn, not delivery)."""
    conns = []
    for i in range(subs):
        r, w = await open_session(port, f"rl-live-{i}")
        await subscribe(r, w, "rl/live")
        conns.append((r, w))
    seen = [time.monotonic()]
    tasks = [asyncio.create_task(live_subscriber(r, w, seen)) for r, w in conns]
    await publish(port, "rl-pub", ["rl/live"] * n)
    while time.monotonic() - seen[0] < 1.0:
        await asyncio.sleep(0.1)
    for t in tasks:
        t.cancel()
    for _, w in conns:
        w.close()


def journal_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".jnl"))


def probe_connack(port, deadline):
    """Seconds until a CONNECT on `port` gets a CONNACK, polling every 10 ms."""
    while time.monotonic() < deadline:
        try:
            c = socket.create_connection(("127.0.0.1", port), 0.5)
        except OSError:
            time.sleep(0.01)
            continue
        try:
            c.settimeout(max(0.1, deadline - time.monotonic()))
            c.sendall(connect_pkt("rl-probe", True))
            if c.recv(4)[:1] == b"\x20":
                return True
        except OSError:
            pass
        finally:
            c.close()
    return False


class Broker:
    def __init__(self, binary, work, port):
        self.binary, self.work, self.port = binary, work, port
        self.cfg = os.path.join(work, "starling.toml")
        self.data = os.path.join(work, "data")
        with open(self.cfg, "w") as f:
            f.write(
                f'[[listeners]]\nbind = "127.0.0.1:{port}"\n'
                f'[persistence]\nenabled = true\ndir = "{self.data}"\n'
            )
        self.logpath = os.path.join(work, "broker.log")
        self.proc = None

    def start(self):
        """Spawns the broker; returns seconds until the first CONNACK (None: none in 120 s)."""
        self.log_from = os.path.getsize(self.logpath) if os.path.exists(self.logpath) else 0
        log = open(self.logpath, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([self.binary, "-c", self.cfg], stdout=log, stderr=log)
        ok = probe_connack(self.port, t0 + 120)
        return time.monotonic() - t0 if ok else None

    def store_line(self):
        with open(self.logpath, "rb") as f:
            f.seek(self.log_from)
            for line in f.read().decode(errors="replace").splitlines():
                if "store opened" in line:
                    return line.split("store opened", 1)[1].strip()
        return "(no `store opened` line)"

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/starling")
    ap.add_argument("--sessions", type=int, default=30000)
    ap.add_argument("--queued", type=int, default=100)
    ap.add_argument("--churn", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    work = tempfile.mkdtemp(prefix="starling-restart-")
    b = Broker(os.path.abspath(a.bin), work, port)
    try:
        t = b.start()
        if t is None:
            sys.exit("broker did not start; see " + b.logpath)
        print(f"fresh start: CONNACK after {t:.3f}s (store in {b.data})", flush=True)
        t0 = time.monotonic()
        asyncio.run(make_sessions(port, a.sessions))
        rnd = random.Random(1)
        topics = [f"rl/g/{rnd.randrange(100)}" for _ in range(a.queued)]
        asyncio.run(publish(port, "rl-pub-q", topics))
        print(f"{a.sessions} sessions, {a.queued} queued messages in {time.monotonic() - t0:.1f}s",
              flush=True)
        times = []
        for i in range(a.rounds):
            t0 = time.monotonic()
            asyncio.run(churn(port, a.churn))
            before = journal_bytes(b.data)
            b.kill()
            t = b.start()
            after = journal_bytes(b.data)
            times.append(t)
            shown = f"{t:.3f}s" if t is not None else "NONE in 120s"
            print(f"round {i + 1}: churn {a.churn} msgs in {time.monotonic() - t0:.1f}s, "
                  f"journal files {before / 1e6:.1f} MB at kill, {after / 1e6:.1f} MB after restart; "
                  f"SIGKILL restart -> first CONNACK {shown}", flush=True)
            print(f"    {b.store_line()}", flush=True)
        ok = [t for t in times if t is not None]
        if ok:
            print(f"restart-to-CONNACK: min {min(ok):.3f}s max {max(ok):.3f}s "
                  f"last {times[-1] if times[-1] is not None else float('nan'):.3f}s")
        b.kill(signal.SIGTERM)
    finally:
        if b.proc and b.proc.poll() is None:
            b.kill()
        if a.keep:
            print("work directory kept:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
