#!/usr/bin/env python3
"""Basic-auth abuse benchmark of one exporter binary, on loopback only.

  bench_auth.py BINARY LABEL [--flood N] [--seconds S] [--rewrites N]

Four phases, each bounded in count and time, against a fresh exporter
(--no-collector.lifecycle) with a cost-10 basic-auth web config:
  timing   sequential wrong passwords of the known user and of an unknown
           user (median and difference);
  flood    N connections sending wrong passwords (a new connection and
           password per request) for S seconds while one scraper with the
           good credential scrapes /metrics every 250 ms (10 s timeout),
           once on a kept-alive connection (as Prometheus does) and once on
           a new connection: success and latency percentiles of each,
           exporter threads;
  rewrites N non-atomic rewrites of the config (truncate, then three pieces
           1 ms apart) while 4 clients without credentials ask /healthz:
           unauthenticated 200s;
  shutdown seconds from SIGTERM to exit behind N checks of wrong passwords.
Prints one JSON object.
"""
import base64
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time



def basic(user, pw):
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def get(port, path, auth=None, timeout=10.0):
    """(status, seconds); status 0 when nothing answered in time."""
    t = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            req = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            if auth:
                req += f"Authorization: {auth}\r\n"
            s.sendall((req + "\r\n").encode())
            buf = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                buf += b
        code = int(buf[9:12]) if len(buf) >= 12 else 0
    except (OSError, ValueError):
        code = 0
    return code, time.monotonic() - t


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def threads(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    args = sys.argv[1:]
    binary, label = args[0], args[1]
    opts = {"--flood": 200, "--seconds": 60, "--rewrites": 1000}
    i = 2
    while i < len(args):
        opts[args[i]] = int(args[i + 1])
        i += 2
    d = tempfile.mkdtemp(prefix="bench-auth-")
    cfg = os.path.join(d, "web.yml")
    # The deploy example's user: bcrypt cost 10 of "change-me".
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "deploy/web/web-config.yml")) as f:
        text = f.read()
    hash_ = text.split("prometheus:", 1)[1].split()[0].strip("'\"")
    good = (
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        f"basic_auth_users:\n  alice: '{hash_}'\n"
    )
    with open(cfg, "w") as f:
        f.write(good)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    err = open(os.path.join(d, "stderr"), "w")
    p = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={cfg}",
         "--no-collector.lifecycle", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=err)
    out = {"label": label}
    try:
        t0 = time.monotonic()
        while get(port, "/healthz", basic("alice", "change-me"), 5)[0] != 200:
            if p.poll() is not None or time.monotonic() - t0 > 120:
                raise SystemExit(f"{label}: exporter did not come up")
            time.sleep(0.2)
        ok = basic("alice", "change-me")
        get(port, "/metrics", ok, 60)

        # Timing: the known user vs an unknown one, wrong passwords, one at a time.
        known, unknown = [], []
        for n in range(15):
            known.append(get(port, "/healthz", basic("alice", f"x{n}"))[1])
            unknown.append(get(port, "/healthz", basic(f"nobody{n}", f"x{n}"))[1])
        out["known_user_ms"] = round(statistics.median(known) * 1000, 1)
        out["unknown_user_ms"] = round(statistics.median(unknown) * 1000, 1)
        out["unknown_minus_known_ms"] = round(out["unknown_user_ms"] - out["known_user_ms"], 1)

        # Flood.
        stop = threading.Event()
        flood_codes = {}
        lock = threading.Lock()

        def attacker(i):
            n = 0
            while not stop.is_set():
                c, _ = get(port, "/metrics", basic("alice", f"wrong-{i}-{n}"), 30)
                n += 1
                with lock:
                    flood_codes[c] = flood_codes.get(c, 0) + 1

        ts = [threading.Thread(target=attacker, args=(i,), daemon=True)
              for i in range(opts["--flood"])]
        for t in ts:
            t.start()
        time.sleep(1)
        lat, codes, max_threads = [], [], 0
        fresh_lat, fresh_codes = [], []
        conn = None
        end = time.monotonic() + opts["--seconds"]
        while time.monotonic() < end:
            # As Prometheus scrapes: one kept-alive connection.
            t = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/metrics", headers={"Authorization": ok})
                r = conn.getresponse()
                r.read()
                c = r.status
            except (OSError, http.client.HTTPException):
                c = 0
                conn = None
            codes.append(c)
            if c == 200:
                lat.append(time.monotonic() - t)
            # And on a new connection each time (through the connect flood).
            c, dt = get(port, "/metrics", ok, 10)
            fresh_codes.append(c)
            if c == 200:
                fresh_lat.append(dt)
            max_threads = max(max_threads, threads(p.pid))
            time.sleep(0.25)
        if conn is not None:
            conn.close()
        stop.set()
        for t in ts:
            t.join(timeout=40)
        out["flood_connections"] = opts["--flood"]
        out["scrapes"] = len(codes)
        out["scrapes_ok"] = codes.count(200)
        out["scrape_success_pct"] = round(100 * codes.count(200) / max(1, len(codes)), 1)
        out["scrape_p50_ms"] = round(pct(lat, 50) * 1000, 1) if lat else None
        out["scrape_p99_ms"] = round(pct(lat, 99) * 1000, 1) if lat else None
        out["fresh_scrapes"] = len(fresh_codes)
        out["fresh_scrapes_ok"] = fresh_codes.count(200)
        out["fresh_p50_ms"] = round(pct(fresh_lat, 50) * 1000, 1) if fresh_lat else None
        out["fresh_p99_ms"] = round(pct(fresh_lat, 99) * 1000, 1) if fresh_lat else None
        out["flood_responses"] = {str(k): v for k, v in sorted(flood_codes.items())}
        out["exporter_threads_max"] = max_threads

        # Rewrites.
        stop = threading.Event()
        asked = [0]
        served = [0]

        def prober():
            while not stop.is_set():
                c, _ = get(port, "/healthz", None, 10)
                with lock:
                    asked[0] += 1
                    if c == 200:
                        served[0] += 1

        ps = [threading.Thread(target=prober, daemon=True) for _ in range(4)]
        for t in ps:
            t.start()
        data = good.encode()
        step = (len(data) + 2) // 3
        for _ in range(opts["--rewrites"]):
            with open(cfg, "r+b") as f:
                f.truncate(0)
                f.flush()
                time.sleep(0.001)
                for k in range(0, len(data), step):
                    f.write(data[k:k + step])
                    f.flush()
                    time.sleep(0.001)
        stop.set()
        for t in ps:
            t.join(timeout=20)
        out["rewrites"] = opts["--rewrites"]
        out["unauthenticated_requests"] = asked[0]
        out["unauthenticated_200"] = served[0]

        # Shutdown behind a queue of wrong passwords.
        ts = [threading.Thread(target=get, args=(port, "/healthz", basic("alice", f"q{i}"), 60),
                               daemon=True) for i in range(opts["--flood"])]
        for t in ts:
            t.start()
        time.sleep(1)
        t = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=120)
            out["sigterm_exit_s"] = round(time.monotonic() - t, 2)
        except subprocess.TimeoutExpired:
            out["sigterm_exit_s"] = ">120"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    print(json.dumps(out))


if __name__ == "__main__":
    random.seed(1)
    main()
