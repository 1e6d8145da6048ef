#!/usr/bin/env python3
"""Fleet simulation: many fieldgate processes forwarding to one mosquitto
through a TCP proxy this script cuts (or with the broker itself stopped and
restarted), then what a cloud operator would want to know.

usage: scripts/fleet.py BINARY [--gateways 50] [--mode cut|restart]
                        [--outage 30] [--points 5] [--poll 1s] [--keep]

Each gateway: one simulated device with POINTS counter points polled every
POLL, every reading forwarded at QoS 1 (`fleet/{gateway}/...`), the default
uplink settings (commit window, reconnect {min: 1s, max: 120s, stable: 30s}).
One subscriber (paho-mqtt, persistent session, QoS 1) counts what arrives.

Report:
  lost        counter values missing upstream below the highest one that
              arrived, per series, and not left in the gateway's outbox
              after its stop (must be 0)
  duplicates  values that arrived more than once
  reconnect spread  first to last gateway back after the restore (the
              first CONNECT of each gateway that reached the broker)
  peak connects/s   most CONNECTs that reached the broker in one second
  drain time  from the restore until every gateway's oldest outbox message
              is younger than 3 s (from /metrics)
  RSS         per gateway (VmRSS), min / mean / max

Needs mosquitto and python3-paho-mqtt (PyPI paho-mqtt >= 2). Ports are
chosen free; everything lives in a temporary folder under /var/tmp.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict

import paho.mqtt.client as mqtt


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def client_id(first: bytes):
    """The client id of an MQTT CONNECT at the start of `first`, if any."""
    try:
        if not first or first[0] >> 4 != 1:
            return None
        i, mult = 1, 1
        while first[i] & 0x80:
            i += 1
        i += 1
        n = int.from_bytes(first[i:i + 2], "big")
        i += 2 + n + 1 + 1 + 2  # protocol name, level, flags, keep-alive
        n = int.from_bytes(first[i:i + 2], "big")
        return first[i + 2:i + 2 + n].decode()
    except (IndexError, UnicodeDecodeError):
        return None


class Proxy:
    """TCP proxy in front of the broker; records every CONNECT that reached it."""

    def __init__(self, target):
        self.target = target
        self.up = True
        self.conns = set()
        self.connects = []  # (time, client id)
        self.port = free_port()

    async def handle(self, reader, writer):
        if not self.up:
            writer.close()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.conns.add(writer)
        self.conns.add(uw)
        first = True

        async def pipe(r, w, inbound):
            nonlocal first
            try:
                while True:
                    data = await r.read(65536)
                    if not data:
                        break
                    if inbound and first:
                        first = False
                        self.connects.append((time.monotonic(), client_id(data)))
                    w.write(data)
                    await w.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, uw, True), pipe(ur, writer, False))
        self.conns.discard(writer)
        self.conns.discard(uw)

    def cut(self):
        self.up = False
        for w in list(self.conns):
            w.close()

    def restore(self):
        self.up = True


class Subscriber:
    """Counts every reading upstream, per series."""

    def __init__(self, port):
        self.values = defaultdict(Counter)
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-sub",
                             clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("fleet/#", qos=1)
        self.c.on_message = self.message
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def message(self, _c, _u, m):
        try:
            v = json.loads(m.payload)["value"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.values[m.topic][v] += 1

    def report(self, stored):
        """`stored`: (topic, value) pairs still in the gateways' outboxes."""
        with self.lock:
            lost = dups = got = 0
            for topic, counts in sorted(self.values.items()):
                top = max(counts)
                missing = [v for v in range(0, int(top) + 1)
                           if v not in counts and (topic, v) not in stored]
                if missing and os.environ.get("FLEET_DEBUG"):
                    print(f"  {topic}: missing {missing[:10]}{'...' if len(missing) > 10 else ''} of 0..{top}")
                lost += len(missing)
                dups += sum(n - 1 for n in counts.values())
                got += sum(counts.values())
            return got, lost, dups, len(self.values)


def mosquitto(port, folder):
    conf = os.path.join(folder, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                f"persistence true\npersistence_location {folder}/\n"
                "max_queued_messages 0\nmax_inflight_messages 0\n"
                "max_connections -1\nlog_type error\nlog_type warning\nlog_type notice\n"
                "log_type information\nlog_timestamp_format %H:%M:%S\n")
    return subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(folder, "mosquitto.log"), "a"))


def gateway_yaml(name, folder, uplink, points, poll):
    pts = "".join(f"      - {{ name: p{i}, signal: counter }}\n" for i in range(points))
    return (f'gateway: {{ id: {name}, data_dir: "{folder}/data" }}\n'
            f'broker: {{ listen: "127.0.0.1:{free_port()}" }}\n'
            f'metrics: {{ listen: "127.0.0.1:{{mport}}" }}\n'
            f"devices:\n  - name: dev\n    kind: simulated\n    poll: {poll}\n"
            f"    points:\n{pts}"
            f"rules: {{ qos: 1 }}\n"
            f"uplink:\n  url: mqtt://127.0.0.1:{uplink}\n"
            f'  forward: [{{ filter: "{name}/#", prefix: "fleet/", qos: 1 }}]\n')


def oldest_age(mport):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    m = re.search(r"^fieldgate_outbox_oldest_age_seconds (\d+)", text, re.M)
    return int(m.group(1)) if m else None


def outbox_rows(binary, cfg):
    """(upstream topic, counter value) of every message left in an outbox."""
    out = subprocess.run([binary, "outbox", "list", "-n", "1000000", "-c", cfg],
                         capture_output=True, text=True).stdout
    rows = set()
    for line in out.splitlines():
        m = re.search(r"(fleet/\S+)\s.*\"value\":(\d+)", line)
        if m:
            rows.add((m.group(1), int(m.group(2))))
    return rows


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--gateways", type=int, default=50)
    ap.add_argument("--mode", choices=["cut", "restart"], default="cut")
    ap.add_argument("--outage", type=float, default=30)
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--poll", default="1s")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()

    root = tempfile.mkdtemp(prefix="fleet.", dir="/var/tmp")
    # mosquitto started as root runs as user mosquitto: it must be able to
    # write its persistence file here, or a restart forgets every session
    # (the subscriber's subscription too)
    os.chmod(root, 0o777)
    bport = free_port()
    broker = mosquitto(bport, root)
    time.sleep(0.5)
    proxy = Proxy(bport)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", proxy.port)
    sub = Subscriber(bport)
    gws = []
    for i in range(a.gateways):
        name = f"gw{i:03d}"
        folder = os.path.join(root, name)
        os.makedirs(folder)
        mport = free_port()
        cfg = os.path.join(folder, "gw.yaml")
        with open(cfg, "w") as f:
            f.write(gateway_yaml(name, folder, proxy.port, a.points, a.poll).replace("{mport}", str(mport)))
        p = subprocess.Popen([a.binary, "run", "-c", cfg], env={**os.environ, "RUST_LOG": "warn"},
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(folder, "gw.log"), "w"))
        gws.append((name, p, mport))
    print(f"{a.gateways} gateways, {a.points} readings per {a.poll} each, mode {a.mode}, "
          f"outage {a.outage:.0f} s", flush=True)
    await asyncio.sleep(10)

    # the outage
    if a.mode == "cut":
        proxy.cut()
    else:
        broker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(broker.wait)
    await asyncio.sleep(a.outage)
    restored = time.monotonic()
    if a.mode == "cut":
        proxy.restore()
    else:
        broker = mosquitto(bport, root)
    # drained: every gateway's oldest message younger than 3 s
    drained = None
    while time.monotonic() - restored < 300:
        await asyncio.sleep(0.5)
        ages = await asyncio.to_thread(lambda: [oldest_age(m) for _, _, m in gws])
        if all(x is not None and x < 3 for x in ages) and time.monotonic() - restored > 2:
            drained = time.monotonic() - restored
            break
    rss = [rss_kib(p.pid) for _, p, _ in gws]
    for _, p, _ in gws:
        p.send_signal(signal.SIGTERM)
    for _, p, _ in gws:
        await asyncio.to_thread(p.wait)
    await asyncio.sleep(2)  # the last acknowledged messages reach the subscriber

    back = {}
    for t, cid in proxy.connects:
        if t >= restored and cid and cid.startswith("gw") and cid not in back:
            back[cid] = t - restored
    per_second = Counter(int(t - restored) for t, cid in proxy.connects
                         if t >= restored and cid and cid.startswith("gw"))
    stored = set()
    for name, _, _ in gws:
        stored |= outbox_rows(a.binary, os.path.join(root, name, "gw.yaml"))
    got, lost, dups, series = sub.report(stored)
    print(f"messages received      : {got} in {series} series")
    print(f"left in the outboxes   : {len(stored)} (sent after a restart)")
    print(f"lost                   : {lost}  (neither upstream nor in an outbox; must be 0)")
    print(f"duplicates             : {dups}")
    if back:
        print(f"reconnect spread       : {min(back.values()):.1f} s to {max(back.values()):.1f} s "
              f"after the restore ({len(back)} of {a.gateways} gateways back)")
    print(f"peak connects/s        : {max(per_second.values()) if per_second else 0}")
    print(f"drain time             : {'%.1f s' % drained if drained else 'not drained within 300 s'}")
    print(f"RSS per gateway (KiB)  : min {min(rss)}, mean {sum(rss) // len(rss)}, max {max(rss)}")
    sub.c.loop_stop()
    server.close()
    broker.terminate()
    broker.wait()
    if a.keep:
        print(f"kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
