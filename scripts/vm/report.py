#!/usr/bin/env python3
"""Verdicts and the per-kernel table of a matrix run.

report.py <results-dir> <markdown-out>. Exit 1 when any kernel failed.
A kernel fails when: it never wrote `done`; a test binary exited non-zero;
`--check` failed; its console or dmesg has a kernel `BUG:` or `WARNING:`;
or any log shows a verifier rejection.
"""
import os
import re
import sys

res, md_out = sys.argv[1], sys.argv[2]
KERNEL_SPLAT = re.compile(r"\]\s+(BUG|WARNING):|^\s*(BUG|WARNING):", re.M)
VERIFIER = re.compile(
    r"load failed: (Permission denied|Invalid argument|Argument list too long)"
    r"|failed to load object|BPF program is too large|processed \d+ insns .* limit"
)
TEST_RESULT = re.compile(r"test result: \w+\. (\d+) passed; (\d+) failed")


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


order = ["host"] + [l.split()[0] for l in read(os.path.join(os.path.dirname(__file__), "kernels.lock")).splitlines()
                    if l.strip() and not l.startswith("#")]
rows, failed_any = [], False
probes_all = []
for name in order:
    d = os.path.join(res, name)
    if not os.path.isdir(d):
        continue
    reasons = []
    release = read(os.path.join(d, "release")).strip() or "?"
    if not os.path.exists(os.path.join(d, "done")):
        reasons.append("guest never reported (no done marker)")
    passed = failed = 0
    tests = [l.split()[0] for l in read(os.path.join(d, "tests.list")).splitlines() if l.strip()]
    if os.path.exists(os.path.join(d, "injected_failure.rc")):
        tests.append("injected_failure")
    for t in tests:
        log = read(os.path.join(d, t + ".log"))
        rc = read(os.path.join(d, t + ".rc")).strip()
        p = sum(int(m.group(1)) for m in TEST_RESULT.finditer(log))
        f = sum(int(m.group(2)) for m in TEST_RESULT.finditer(log))
        if rc != "0":
            f = max(f, 1)
            reasons.append(f"{t}: exit {rc or 'missing'}")
            for line in log.splitlines():
                if line.startswith("test ") and line.endswith("FAILED"):
                    reasons.append("  " + line)
        passed += p
        failed += f
        if VERIFIER.search(log):
            reasons.append(f"{t}: verifier rejection in log")
    check = read(os.path.join(d, "check.txt"))
    check_rc = read(os.path.join(d, "check.rc")).strip()
    if check_rc != "0":
        reasons.append(f"--check exit {check_rc or 'missing'}: " + read(os.path.join(d, "check.stderr")).strip()[-300:])
    if VERIFIER.search(read(os.path.join(d, "check.stderr"))):
        reasons.append("--check: verifier rejection")
    console = read(os.path.join(d, "console.log")) + read(os.path.join(d, "dmesg.txt"))
    for m in KERNEL_SPLAT.finditer(console):
        line = console[m.start():].splitlines()[0]
        reasons.append("kernel splat: " + line.strip()[:160])
        break
    probes = {}
    for m in re.finditer(r"^probe=(\S+) mode=(\S+) attached=(\d)", check, re.M):
        probes[m.group(1)] = m.group(2) if m.group(3) == "1" else f"{m.group(2)} (not attached)"
        if m.group(1) not in probes_all:
            probes_all.append(m.group(1))
    feats = {m.group(1): m.group(2) == "1" for m in re.finditer(r"^feature=(\S+) available=(\d)", check, re.M)}
    secs = read(os.path.join(d, "vm.seconds")).strip()
    ok = not reasons
    failed_any |= not ok
    rows.append(dict(name=name, release=release, passed=passed, failed=failed, probes=probes,
                     feats=feats, ok=ok, reasons=reasons, secs=secs))

feat_names = sorted({f for r in rows for f in r["feats"]})
head = ["kernel", "release", "tests passed", "tests failed"] + [f"probe {p}" for p in probes_all] + \
       [f"feature {f}" for f in feat_names] + ["seconds", "verdict"]
lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for r in rows:
    cells = [r["name"], r["release"], str(r["passed"]), str(r["failed"])] + \
            [r["probes"].get(p, "-") for p in probes_all] + \
            ["yes" if r["feats"].get(f) else "no" for f in feat_names] + \
            [r["secs"] or "-", "ok" if r["ok"] else "FAILED"]
    lines.append("| " + " | ".join(cells) + " |")
table = "\n".join(lines)
print(table)
for r in rows:
    for why in r["reasons"]:
        print(f"{r['name']}: {why}")
if not rows:
    print("matrix: no kernel ran")
    failed_any = True
with open(md_out, "w") as f:
    f.write(table + "\n")
sys.exit(1 if failed_any else 0)
