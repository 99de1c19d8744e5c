#!/usr/bin/env python3
"""Verdicts and tables of a kernel-matrix run (scripts/vm/matrix.sh).

matrix_report.py <results-dir> <markdown-out>; exits 1 when any kernel failed.
A kernel fails when: it never wrote `done` (crashed, hung or timed out); a
test binary exited non-zero or is missing its result; `--check` failed; its
console or dmesg shows a kernel BUG:, WARNING:, Oops, panic or general
protection fault; or any log shows a verifier rejection (a program load
refused with EACCES/E2BIG). Fallback loads that fail with ENOTSUPP/EINVAL
(e.g. fentry where the kernel cannot attach it) are the exporter's business
and show in the probe table instead.
"""
import os
import re
import sys

res, md_out = sys.argv[1], sys.argv[2]
KERNEL_SPLAT = re.compile(
    r"^(?:\[\s*\d+\.\d+\]\s+)?(?:\S+:\s+)?(BUG:|WARNING:|Oops|Kernel panic|general protection fault)",
    re.M)
VERIFIER = re.compile(
    r"BPF program load failed: -?(EACCES|E2BIG|Permission denied|Argument list too long)"
    r"|BPF program is too large")
# Verifier rejections that are a known, handled fallback, not a failure:
# (kernel, program, text of its load log). Each one is printed as a note.
# Empty: the exporter decides from BTF what a kernel can load (e.g. fexit on
# __x64_sys_bpf only where its pt_regs argument is a complete struct, which
# 5.10's BTF lacks), so every kernel of the matrix must show none.
EXPECTED_REJECTIONS = []
LOAD_FAILED = re.compile(r"prog '([^']+)': BPF program load failed")
TEST_RESULT = re.compile(r"test result: \w+\. (\d+) passed; (\d+) failed")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return ANSI.sub("", f.read())
    except OSError:
        return default


def rejections(kernel, text, where, reasons, notes):
    """Verifier rejections in `text`: unexpected ones go to reasons."""
    for m in VERIFIER.finditer(text):
        line = text[text.rfind("\n", 0, m.start()) + 1:m.end()]
        prog = LOAD_FAILED.search(line)
        prog = prog.group(1) if prog else "?"
        end = text.find("END PROG LOAD LOG", m.end())
        log = text[m.end():end if end > 0 else m.end() + 4000]
        if any(k == kernel and p == prog and t in log for k, p, t in EXPECTED_REJECTIONS):
            note = f"{where}: expected verifier rejection of {prog} (handled fallback, see matrix_report.py)"
            if note not in notes:
                notes.append(note)
        else:
            reasons.append(f"{where}: verifier rejection: {line.strip()[-200:]}")


def version(release):
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


here = os.path.dirname(os.path.abspath(__file__))
order = ["host"] + [l.split()[0] for l in read(os.path.join(here, "..", "vm", "kernels.lock")).splitlines()
                    if l.strip() and not l.startswith("#")]
rows, failed_any, probes_all = [], False, []
for name in order:
    d = os.path.join(res, name)
    if not os.path.isdir(d):
        continue
    p = lambda f: os.path.join(d, f)
    reasons, notes = [], []
    release = read(p("release")).strip() or "?"
    vm_rc = read(p("vm.rc")).strip()
    if not os.path.exists(p("done")):
        why = "timed out (BPFMAP_VM_TIMEOUT)" if vm_rc in ("124", "137") else f"vng exit {vm_rc or '?'}"
        reasons.append(f"guest never reported (no done marker; {why}); see {name}/console.log")
    passed = failed = 0
    tests = [l.split()[0] for l in read(p("tests.list")).splitlines() if l.strip()]
    if os.path.exists(p("injected_failure.rc")):
        tests.append("injected_failure")
    per_test = []
    for t in tests:
        log = read(p(t + ".log"))
        rc = read(p(t + ".rc")).strip()
        tp = sum(int(m.group(1)) for m in TEST_RESULT.finditer(log))
        tf = sum(int(m.group(2)) for m in TEST_RESULT.finditer(log))
        if rc != "0":
            tf = max(tf, 1)
            what = {"": "no result", "124": "timed out (BPFMAP_VM_TEST_TIMEOUT)"}.get(rc, f"exit {rc}")
            reasons.append(f"{t}: {what}")
            for line in log.splitlines():
                if line.startswith("test ") and "FAILED" in line:
                    reasons.append("  " + line)
        passed += tp
        failed += tf
        per_test.append(f"{t} {tp}/{tp + tf}")
        rejections(name, log, t, reasons, notes)
    check = read(p("check.txt"))
    check_rc = read(p("check.rc")).strip()
    check_err = read(p("check.stderr"))
    if check_rc != "0":
        reasons.append(f"--check exit {check_rc or 'missing'}: " + check_err.strip()[-300:])
    rejections(name, check_err, "--check", reasons, notes)
    console = read(p("console.log")) + "\n" + read(p("dmesg.txt"))
    m = KERNEL_SPLAT.search(console)
    if m:
        reasons.append("kernel splat: " + console[m.start():].splitlines()[0].strip()[:200])
    probes = {}
    for m in re.finditer(r"^probe=(\S+) mode=(\S+) attached=(\d)", check, re.M):
        probes[m.group(1)] = m.group(2) if m.group(3) == "1" else "none"
        if m.group(1) not in probes_all:
            probes_all.append(m.group(1))
    feats = {m.group(1): m.group(2) == "1" for m in re.finditer(r"^feature=(\S+) available=(\d)", check, re.M)}
    mem = dict(kv.split("=", 1) for kv in read(p("memory.txt")).split() if "=" in kv)
    env = dict(kv.split("=", 1) for kv in read(p("env.txt")).split() if "=" in kv)
    lacks = []
    if feats.get("task_vma") is False:
        lacks.append("iter/task_vma (mmap holders read as unexplained)")
    if mem.get("real_memory") == "0":
        lacks.append("real map memory (memlock is " + ("charged pages" if version(release) < (5, 11) else "an estimate") + ")")
    elif not mem:
        lacks.append("real map memory: not measured (no bpftool)")
    if feats.get("elem_count") is False:
        if feats.get("elem_iter"):
            lacks.append("elem_count kfunc (bpfmap_map_entries by iter/bpf_map_elem walks)")
        else:
            lacks.append("elem_count kfunc (bpfmap_map_entries by GET_NEXT_KEY walks)")
    if feats.get("map_memcg") is False:
        lacks.append("map_memcg (creator of maps unknown: no bpfmap_creator_* series)")
    memcg = dict(kv.split("=", 1) for kv in read(p("check.memcg")).split() if "=" in kv)
    progs = {m.group(1): (int(m.group(2)), int(m.group(3)))
             for m in re.finditer(r"^program=(\S+) object=\S+ verified_insns=(\d+) peak_states=(\d+)", check, re.M)}
    ok = not reasons
    failed_any |= not ok
    rows.append(dict(name=name, release=release, passed=passed, failed=failed, probes=probes, notes=notes,
                     lacks=lacks, ok=ok, reasons=reasons, secs=read(p("vm.seconds")).strip() or "-",
                     per_test=per_test, memlock=env.get("memlock_rlimit_kib", "?"), memcg=memcg,
                     progs=progs))

out = []
head = ["kernel", "release", "tests passed", "tests failed", "lacks", "seconds", "verdict"]
out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for r in rows:
    out.append("| " + " | ".join([r["name"], r["release"], str(r["passed"]), str(r["failed"]),
                                  "; ".join(r["lacks"]) or "nothing", r["secs"],
                                  "ok" if r["ok"] else "FAILED"]) + " |")
out.append("")
if probes_all:
    head = ["kernel"] + probes_all
    out += ["Attach mode per probe (from `--check`; `none` = not attached):", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join([r["name"]] + [r["probes"].get(q, "-") for q in probes_all]) + " |")
else:
    out.append("Attach modes: `--check` printed no `probe=` lines (no lifecycle collector in this build).")
out.append("")
mib = lambda v: f"{int(v) / 1048576:.1f}" if v.isdigit() else v
out += ["Start-up cost (`--check` in a fresh memory cgroup: scripts/memcg-run.sh):", "",
        "| kernel | peak MiB (user + kernel) | kernel memory peak MiB | peak from |", "|---|---|---|---|"]
for r in rows:
    m = r["memcg"]
    out.append(f"| {r['name']} | {mib(m.get('memcg_peak_bytes', '-'))} | {mib(m.get('memcg_kmem_peak_bytes', '-'))} "
               f"| {m.get('peak_source', '-')} |")
out.append("")
progs_all = []
for r in rows:
    progs_all += [q for q in r["progs"] if q not in progs_all]
if progs_all:
    out += ["Verifier cost per program (instructions processed / peak states; `-` = not loaded):", "",
            "| program | " + " | ".join(r["name"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for q in progs_all:
        cells = [(f"{r['progs'][q][0]} / {r['progs'][q][1]}" if q in r["progs"] else "-") for r in rows]
        out.append(f"| {q} | " + " | ".join(cells) + " |")
    out.append("")
table = "\n".join(out)
print(table)
for r in rows:
    print(f"{r['name']}: tests {', '.join(r['per_test'])}; RLIMIT_MEMLOCK {r['memlock']} KiB")
for r in rows:
    for n in r["notes"]:
        print(f"{r['name']}: note: {n}")
for r in rows:
    for why in r["reasons"]:
        print(f"{r['name']}: FAILED: {why}")
if not rows:
    print("matrix: no kernel ran")
    failed_any = True
total = sum(r["passed"] for r in rows), sum(r["failed"] for r in rows)
# The plain closing line CI readers look for.
print(f"matrix: {total[0]} passed, {total[1]} failed")
with open(md_out, "w") as f:
    f.write(table + "\n")
sys.exit(1 if failed_any else 0)
