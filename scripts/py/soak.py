#!/usr/bin/env python3
"""Soak: the exporter scraped every second under the simulator's churn.

Starts `bpfmap-exporter simulate-leak` (maps created and destroyed at
--churn-rate, a fixed set of leaked files, pins and orphans; no in-flight
leaks by default, so the node shows no unexplained references) and the
exporter itself on a loopback port, then scrapes /metrics once a second for
--duration. After each scrape it samples the exporter's RSS (VmRSS) and open
fd count from /proc, and writes one CSV row per sample.

The exporter's memory follows the node's map count (the census holds every
map's record), and an allocator keeps its high-water mark; on a shared node
another process creating thousands of maps would read as drift. So during
the warm-up a second simulator holds --prime-maps maps (default 10,000,
one-slot maps) for --prime-seconds and exits: the exporter reaches the
high-water mark of a 10,000-map node before the drift baseline is taken.
The node's map count is recorded with each sample; a drift that coincides
with a map count above the prime level says so.

Pass criteria (printed with the figures, exit status 1 when one fails):
  - every scrape answered 200 with a complete exposition;
  - RSS drift at most --max-rss-drift (default 5%) after --warmup: the median
    RSS of the last minute against the median of the first minute after the
    warm-up (medians, so one scrape's transient buffer is not a trend);
  - fds flat: the median fd count of the last minute equals the median of the
    first minute after the warm-up, and no sample after the warm-up exceeds it
    by more than --fd-slack (connections and census cursors are transient).

Usage (root): scripts/dev soak --duration 1h [--binary FILE] [--out DIR]
"""
import argparse
import resource
import csv
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request


NODE_MAPS = re.compile(rb'^bpfmap_maps\{[^}]*\} (\S+)$', re.M)
COLLECTOR_FAILED = re.compile(rb'^bpfmap_scrape_collector_success\{collector="([^"]+)"\} 0$', re.M)


def parse_duration(s: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", s.strip())
    if not m:
        raise argparse.ArgumentTypeError(
            f"duration {s!r}: expected a number with an optional unit ms, s, m or h (e.g. 3m, 1h)"
        )
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"pid {pid}: no VmRSS in /proc/{pid}/status")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(url: str, timeout: float):
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read()
        status = r.status
    ms = (time.monotonic() - t0) * 1000
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return status, len(body), series, ms, body


def wait_ready(url: str, proc: subprocess.Popen, deadline: float):
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exporter exited with status {proc.returncode} before serving")
        try:
            status, *_ = scrape(url, 10)
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
        time.sleep(0.5)
    raise RuntimeError(f"exporter did not serve {url} within the start timeout: {last}")


def window_median(rows, t_from, t_to, key):
    vals = [r[key] for r in rows if t_from <= r["t"] < t_to]
    return statistics.median(vals) if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/bpfmap-exporter",
                    help="exporter binary (copy it to /tmp for a long soak, so rebuilds do not replace it)")
    ap.add_argument("--duration", type=parse_duration, default=parse_duration("1h"))
    ap.add_argument("--warmup", type=parse_duration, default=None,
                    help="excluded from the drift figure (default 5m, or a third of --duration when that is shorter than 15m)")
    ap.add_argument("--interval", type=parse_duration, default=1.0, help="between scrapes")
    ap.add_argument("--port", type=int, default=19873)
    ap.add_argument("--churn-rate", type=float, default=20.0, help="simulator maps created and destroyed per second")
    ap.add_argument("--leak-inflight", type=int, default=0,
                    help="simulator in-flight leaks (unexplained references); 0 keeps a shared node clean")
    ap.add_argument("--prime-maps", type=int, default=10000,
                    help="maps held for --prime-seconds early in the warm-up (0 = none)")
    ap.add_argument("--prime-seconds", type=int, default=15)
    ap.add_argument("--max-rss-drift", type=float, default=5.0, help="percent")
    ap.add_argument("--fd-slack", type=int, default=4)
    ap.add_argument("--out", default=".cache/soak", help="directory for samples.csv and the logs")
    ap.add_argument("--exporter-arg", action="append", default=[], help="extra exporter flag (repeatable)")
    a = ap.parse_args()

    if os.geteuid() != 0:
        print("soak: loads BPF programs and must run as root", file=sys.stderr)
        return 2
    if not os.access(a.binary, os.X_OK):
        print(f"soak: {a.binary} is not an executable; build it (cargo build --release) or pass --binary", file=sys.stderr)
        return 2
    warmup = a.warmup if a.warmup is not None else (300.0 if a.duration >= 900 else a.duration / 3)
    if warmup + 60 > a.duration:
        print(f"soak: --duration must exceed the warm-up ({warmup:.0f} s) by at least a minute", file=sys.stderr)
        return 2
    if a.prime_maps and warmup < a.prime_seconds + 30:
        print(f"soak: the warm-up ({warmup:.0f} s) must exceed --prime-seconds by 30 s (or --prime-maps 0)",
              file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if a.prime_maps + 1024 > hard:
        print(f"soak: --prime-maps {a.prime_maps} needs {a.prime_maps + 1024} fds; the hard RLIMIT_NOFILE is {hard}",
              file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    url = f"http://127.0.0.1:{a.port}/metrics"
    sim_log = open(os.path.join(a.out, "simulate.log"), "w")
    exp_log = open(os.path.join(a.out, "exporter.log"), "w")
    sim_dir = f"/sys/fs/bpf/bpfmap-soak-{os.getpid()}"
    # The simulator outlives the soak by a margin and is stopped with SIGTERM
    # (it cleans up its maps, pins and cgroups on exit).
    sim = subprocess.Popen(
        [a.binary, "simulate-leak", f"--duration={int(a.duration + warmup + 120)}",
         f"--churn-rate={a.churn_rate}", f"--leak-inflight={a.leak_inflight}",
         f"--pin-dir={sim_dir}", "--name-prefix=soak", "--comm=bpfmap-soak"],
        stdout=sim_log, stderr=subprocess.STDOUT)
    exp = subprocess.Popen(
        [a.binary, f"--web.listen-address=127.0.0.1:{a.port}", *a.exporter_arg],
        stdout=exp_log, stderr=subprocess.STDOUT)
    rows = []
    failures = []
    prime = None

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        wait_ready(url, exp, time.monotonic() + 120)
        print(f"soak: exporter pid {exp.pid}, simulator pid {sim.pid}, {a.duration:.0f} s, "
              f"warm-up {warmup:.0f} s, samples in {a.out}/samples.csv", flush=True)
        if a.prime_maps:
            n = a.prime_maps

            def fds():
                resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1024, hard))

            prime = subprocess.Popen(
                [a.binary, "simulate-leak", f"--duration={a.prime_seconds}", f"--leak-files={n}",
                 f"--leak-rate={max(n, 1)}", "--leak-inflight=0", "--leak-pins=0", "--leak-orphans=0", "--leak-orphan-chains=0",
                 "--full-maps=0", "--churn-rate=0", "--map-entries=1", f"--pin-dir={sim_dir}-prime",
                 "--name-prefix=prime", "--comm=bpfmap-prime"],
                stdout=sim_log, stderr=subprocess.STDOUT, preexec_fn=fds)
        t_start = time.monotonic()
        next_t = t_start
        last_report = t_start
        with open(os.path.join(a.out, "samples.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "rss_kib", "fds", "status", "bytes", "series", "scrape_ms", "node_maps"])
            while True:
                now = time.monotonic()
                if now - t_start >= a.duration:
                    break
                if exp.poll() is not None:
                    failures.append(f"exporter exited with status {exp.returncode} at {now - t_start:.0f} s")
                    break
                if prime is not None and prime.poll() is not None:
                    if prime.returncode != 0:
                        failures.append(f"the priming simulator exited with status {prime.returncode}")
                    prime = None
                if sim.poll() is not None:
                    failures.append(f"simulator exited with status {sim.returncode} at {now - t_start:.0f} s")
                    break
                node_maps = 0
                try:
                    status, nbytes, series, ms, body = scrape(url, 30)
                    node_maps = int(sum(float(v) for v in NODE_MAPS.findall(body)))
                    if b"bpfmap_build_info" not in body or b"bpfmap_scrape_collector_success" not in body:
                        failures.append(f"incomplete exposition at {now - t_start:.0f} s")
                    failed = sorted(set(COLLECTOR_FAILED.findall(body)))
                    if failed:
                        failures.append(f"scrape at {now - t_start:.0f} s: collectors failed: "
                                        + ", ".join(c.decode() for c in failed))
                except (urllib.error.URLError, ConnectionError, OSError) as e:
                    status, nbytes, series, ms = getattr(e, "code", 0), 0, 0, 0.0
                if status != 200:
                    failures.append(f"scrape at {now - t_start:.0f} s: status {status}")
                row = {"t": now - t_start, "rss": proc_rss_kib(exp.pid), "fds": proc_fds(exp.pid),
                       "status": status, "bytes": nbytes, "series": series, "ms": ms, "maps": node_maps}
                rows.append(row)
                w.writerow([f"{row['t']:.1f}", row["rss"], row["fds"], status, nbytes, series, f"{ms:.1f}",
                            node_maps])
                if now - last_report >= 60:
                    f.flush()
                    last_report = now
                    print(f"soak: {row['t']:.0f} s rss={row['rss']} KiB fds={row['fds']} "
                          f"series={series} bytes={nbytes} scrape={ms:.1f} ms node_maps={node_maps}", flush=True)
                next_t += a.interval
                time.sleep(max(0.0, next_t - time.monotonic()))
    finally:
        procs = [p for p in (exp, sim, prime) if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for d in (sim_dir, f"{sim_dir}-prime"):
            if os.path.isdir(d):
                shutil.rmtree(d, ignore_errors=True)

    if len(rows) < 3:
        print("soak: FAIL: too few samples", *failures, sep="\n  ", file=sys.stderr)
        return 1
    end = rows[-1]["t"]
    base_rss = window_median(rows, warmup, warmup + 60, "rss")
    last_rss = window_median(rows, end - 60, end + 1, "rss")
    base_fds = window_median(rows, warmup, warmup + 60, "fds")
    last_fds = window_median(rows, end - 60, end + 1, "fds")
    after = [r for r in rows if r["t"] >= warmup]
    drift = (last_rss - base_rss) / base_rss * 100
    max_rss = max(r["rss"] for r in after)
    fds_after = [r["fds"] for r in after]
    ok_scrapes = sum(1 for r in rows if r["status"] == 200)
    ms = sorted(r["ms"] for r in rows if r["status"] == 200)
    print(f"soak: {len(rows)} scrapes ({ok_scrapes} ok) over {end:.0f} s, churn {a.churn_rate}/s")
    print(f"soak: RSS after warm-up: first minute median {base_rss / 1024:.1f} MiB, last minute median "
          f"{last_rss / 1024:.1f} MiB, drift {drift:+.2f}% (limit {a.max_rss_drift}%), max {max_rss / 1024:.1f} MiB, "
          f"first sample {rows[0]['rss'] / 1024:.1f} MiB")
    print(f"soak: fds after warm-up: first minute median {base_fds:g}, last minute median {last_fds:g}, "
          f"min {min(fds_after)}, max {max(fds_after)}")
    if ms:
        print(f"soak: scrape ms median {statistics.median(ms):.1f}, p99 {ms[int(len(ms) * 0.99) - 1]:.1f}, "
              f"max {ms[-1]:.1f}; series median {statistics.median(r['series'] for r in rows)}")
    base_maps = max(r["maps"] for r in rows if r["t"] < warmup + 60)
    if a.prime_maps:
        print(f"soak: primed with {a.prime_maps} maps for {a.prime_seconds} s at the start of the warm-up")
    peak_maps = max(r["maps"] for r in after)
    print(f"soak: live maps on the node: at most {base_maps} until the end of the first minute after "
          f"the warm-up, at most {peak_maps} after the warm-up")
    if drift > a.max_rss_drift:
        why = ""
        if peak_maps > base_maps * 1.2 + 100:
            why = (f" (the node's map count rose from at most {base_maps} to {peak_maps} after the warm-up: "
                   "other processes' maps grow the census; re-run on a quiet node)")
        failures.append(f"RSS drift {drift:+.2f}% exceeds {a.max_rss_drift}%{why}")
    if last_fds != base_fds:
        failures.append(f"fd count moved from {base_fds:g} to {last_fds:g}")
    if max(fds_after) > base_fds + a.fd_slack:
        failures.append(f"fd count reached {max(fds_after)} (baseline {base_fds:g} + slack {a.fd_slack})")
    if failures:
        print("soak: FAIL:", *failures[:20], sep="\n  ", file=sys.stderr)
        return 1
    print("soak: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
