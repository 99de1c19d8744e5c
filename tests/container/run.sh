#!/usr/bin/env bash
# The image, built and run as deployed (as root, no image registry needed):
#   1. build a Debian 12 runtime base with mmdebstrap (cached under
#      .cache/container/, keyed by its package list) and podman-import it;
#   2. build deploy/Dockerfile's target prebuilt on it with the
#      stripped product build of target/release/bpfmap-exporter;
#   3. set up the scenario on the host (scripts/py/container_scenario.py): pins on
#      /sys/fs/bpf, on a second host bpffs and in a private mount namespace, a
#      plain file holder, an fd in flight, an io_uring fixed file;
#   4. run the image with podman under the settings of deploy/daemonset.yaml
#      itself (scripts/py/container_podman_args.py translates every field or fails);
#   5. check the container's process has exactly the DaemonSet's capabilities,
#      no_new_privs, seccomp mode and mounts (ro, propagation), then, from the
#      first scrape on (3 scrapes), promtool check metrics and holders /
#      unexplained per map id (scripts/py/container_check.py).
# Env: DAEMONSET=<file> runs another spec (the proof that the test can fail);
#      BINARY=<file> packages that binary instead of building this tree's.
# Every process, container, pin and mount made here is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
t0=$SECONDS
fail() { echo "container-test: FAIL $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || fail "must run as root (podman, bpffs mounts, BPF maps)"
tools=(podman runc mmdebstrap promtool bpftool python3 curl objcopy)
missing_tools() { local t; for t in "${tools[@]}"; do command -v "$t" >/dev/null || echo "$t"; done; }
if [[ -n $(missing_tools) ]]; then
    ./scripts/install-deps.sh
    [[ -z $(missing_tools) ]] || fail "$(missing_tools | tr '\n' ' ')not installed by scripts/install-deps.sh"
fi
python3 -c 'import yaml' 2>/dev/null || fail "python3-yaml missing: run scripts/install-deps.sh"
daemonset=${DAEMONSET:-deploy/daemonset.yaml}
# podman on hosts like CI's: crun fails on hybrid cgroups, systemd cgroups are
# not available, and the default ulimits are refused (docs/deploy.md, Building the image).
podman=(podman --runtime runc --cgroup-manager cgroupfs)
ulimits=(--ulimit nofile=16384:16384 --ulimit nproc=4096:4096)

cache=.cache/container
mkdir -p "$cache"
tmp=$(mktemp -d /tmp/bpfmap-ct.XXXXXX)
name=bpfmap-ct-$$
scen_pid=
cleanup() {
    local rc=$?
    if ((rc != 0)) && "${podman[@]}" container exists "$name" 2>/dev/null; then
        echo "--- exporter container log (last 20 lines)" >&2
        "${podman[@]}" logs "$name" 2>&1 | tail -n 20 >&2 || true
    fi
    "${podman[@]}" rm -f -t 2 "$name" >/dev/null 2>&1 || true
    if [[ -n $scen_pid ]]; then
        exec {scen_in}>&- 2>/dev/null || true
        kill -TERM "$scen_pid" 2>/dev/null || true
        wait "$scen_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Runtime base. The key covers everything that decides its content.
suite=bookworm
runtime_pkgs=libelf1,zlib1g,ca-certificates
# merged-usr hook: /usr merged by mmdebstrap and usr-is-merged installed, so
# usrmerge and the perl it pulls in (~50 MB) stay out of the image.
mmdeb_opts=(--variant=minbase --include="$runtime_pkgs"
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/locale/*' --aptopt='Acquire::Languages "none"'
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*')
key=$(printf '%s\n' "$suite" "${mmdeb_opts[@]}" | sha256sum | cut -c1-12)
base_tar=$cache/runtime-base-$key.tar
base_img=localhost/bpfmap-runtime-base:$key
if [[ ! -s $base_tar ]]; then
    t=$SECONDS
    rm -f "$cache"/runtime-base-*.tar  # bases of other package lists
    mmdebstrap --quiet --format=tar "${mmdeb_opts[@]}" "$suite" "$base_tar.part" >"$tmp/mmdebstrap.log" 2>&1 \
        || { tail -n 30 "$tmp/mmdebstrap.log" >&2; rm -f "$base_tar.part"; fail "mmdebstrap of the runtime base failed (needs a Debian mirror)"; }
    mv "$base_tar.part" "$base_tar"
    echo "container-test: runtime base $base_tar built ($((SECONDS - t)) s)"
fi
if ! "${podman[@]}" image exists "$base_img"; then
    "${podman[@]}" import -q "$base_tar" "$base_img" >/dev/null
fi

# 2. The image, from the product build (default features, as the Dockerfile's
#    build stage builds it) on this Debian 12 host (same glibc as the base).
#    Cargo keeps it next to the suite's `testing` build: after the first time,
#    switching between the two costs nothing.
bin=${BINARY:-target/release/bpfmap-exporter}
[[ -n ${BINARY:-} ]] || cargo build --release --locked --bin bpfmap-exporter
[[ -x $bin ]] || fail "$bin is not an executable"
ctx=$tmp/ctx
mkdir -p "$ctx"
objcopy --strip-debug "$bin" "$ctx/bpfmap-exporter"
tag=localhost/bpfmap-exporter:container-test
# Layer cache on: an unchanged
# binary reuses every layer, a new one adds only its own layer. The run uses
# the built image's id, so a concurrent run retagging cannot swap it.
"${podman[@]}" build -q "${ulimits[@]}" -f deploy/Dockerfile --target prebuilt \
    --build-arg RUNTIME_IMAGE="$base_img" \
    -t "$tag" "$ctx" >"$tmp/build.log" 2>"$tmp/build.err" \
    || { cat "$tmp/build.log" "$tmp/build.err" >&2; fail "podman build of deploy/Dockerfile failed"; }
image=$(tail -n 1 "$tmp/build.log")
[[ $image =~ ^[0-9a-f]{64}$ ]] || { cat "$tmp/build.log" >&2; fail "podman build printed no image id"; }
size=$("${podman[@]}" image inspect -f '{{.Size}}' "$image")
echo "container-test: image $tag (${image:0:12}) built ($((size / 1048576)) MiB, base $base_img)"

# 3. Scenario, from outside the container. Its stdin is held open by this
#    shell; closing it (or SIGTERM) makes it clean up.
mkfifo "$tmp/scen.in"
python3 scripts/py/container_scenario.py "$tmp/state.json" <"$tmp/scen.in" >"$tmp/scen.log" 2>&1 &
scen_pid=$!
exec {scen_in}>"$tmp/scen.in"
for ((i = 0; i < 100; i++)); do
    [[ -s $tmp/state.json ]] && break
    kill -0 "$scen_pid" 2>/dev/null || { cat "$tmp/scen.log" >&2; fail "scenario.py exited before setting up"; }
    sleep 0.1
done
[[ -s $tmp/state.json ]] || fail "scenario.py did not set up within 10 s"
# Independent view of the scenario's maps: bpftool must see each id with its name.
python3 - "$tmp/state.json" <<'PY' || fail "bpftool does not agree with the scenario's map ids"
import json, subprocess, sys
st = json.load(open(sys.argv[1]))
for case, m in st["maps"].items():
    out = json.loads(subprocess.check_output(["bpftool", "-j", "map", "show", "id", str(m["id"])]))
    assert out["name"] == m["name"], (case, out)
    print(f"container-test: bpftool: map {m['id']} {m['name']} ({case})")
PY

# 4. The exporter container, with the DaemonSet's settings.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 scripts/py/container_podman_args.py "$daemonset" "$image" "$port" >"$tmp/spec.json" \
    || fail "$daemonset could not be translated into podman flags (see above)"
mapfile -t run_args < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["run"]))' "$tmp/spec.json")
# The check reads the per-map series of the scenario's own small maps, which
# the default per-map budget may leave out on a node with many larger maps:
# every map keeps its series here (the budget itself is unit- and root-tested).
run_args+=(--collector.maps.publish-all --collector.maps.max-series=0)
read -r probe_path scrape_port < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["probe_path"], d["port"])' "$tmp/spec.json")
echo "container-test: podman run ${run_args[*]}"
"${podman[@]}" run -d --name "$name" "${ulimits[@]}" "${run_args[@]}" >/dev/null \
    || fail "podman run with the settings of $daemonset failed"
base_url=http://127.0.0.1:$scrape_port
ready=0
for ((i = 0; i < 300; i++)); do
    if curl -fsS -o /dev/null "$base_url$probe_path" 2>/dev/null; then ready=1; break; fi
    [[ $("${podman[@]}" inspect -f '{{.State.Running}}' "$name" 2>/dev/null) == true ]] \
        || fail "the exporter container exited before $probe_path answered (its log follows)"
    sleep 0.2
done
((ready)) || fail "readinessProbe $probe_path did not answer 200 within 60 s"

# 5a. The running process has what the DaemonSet grants, no more.
cpid=$("${podman[@]}" inspect -f '{{.State.Pid}}' "$name")
python3 - "$daemonset" "/proc/$cpid/status" "/proc/$cpid/mountinfo" <<'PY' || fail "the container's process does not run with the DaemonSet's security settings"
import sys, yaml
CAPS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
        "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13,
        "IPC_LOCK": 14, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_ADMIN": 21, "SYS_RESOURCE": 24,
        "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40}
c = yaml.safe_load(open(sys.argv[1]))["spec"]["template"]["spec"]["containers"][0]
sc = c["securityContext"]
want = sum(1 << CAPS[x] for x in sc["capabilities"]["add"])
st = dict(l.split(":", 1) for l in open(sys.argv[2]).read().splitlines())
bad = []
for k in ("CapEff", "CapPrm", "CapBnd"):
    got = int(st[k].strip(), 16)
    if got != want:
        bad.append(f"{k} {got:#x}, want {want:#x} ({'+'.join(sc['capabilities']['add'])})")
nnp = st["NoNewPrivs"].strip() == "1"
if nnp != (sc.get("allowPrivilegeEscalation") is False):
    bad.append(f"NoNewPrivs {st['NoNewPrivs'].strip()}")
seccomp = st["Seccomp"].strip()
want_seccomp = "0" if sc.get("seccompProfile", {}).get("type") == "Unconfined" else "2"
if seccomp != want_seccomp:
    bad.append(f"Seccomp mode {seccomp}, want {want_seccomp}")
# Mounts as the container sees them: read-only where the spec says so, and a
# slave of the host's mount (mountinfo optional field master:N) for
# HostToContainer, so pins created later, also in new sub-mounts, show up.
def mountinfo(path):
    out = {}
    for line in open(path):
        left, _ = line.split(" - ", 1)
        f = left.split()
        out[f[4]] = (f[5].split(","), f[6:])
    return out
mounts = mountinfo(sys.argv[3])
host = mountinfo("/proc/self/mountinfo")
hostpaths = {v["name"]: v["hostPath"]["path"] for v in yaml.safe_load(open(sys.argv[1]))["spec"]["template"]["spec"]["volumes"]}
for m in c.get("volumeMounts", []):
    if m["mountPath"] not in mounts:
        bad.append(f"mount {m['mountPath']} missing")
        continue
    opts, tags = mounts[m["mountPath"]]
    if ("ro" in opts) != bool(m.get("readOnly")):
        bad.append(f"mount {m['mountPath']} options {','.join(opts)}, readOnly {m.get('readOnly')}")
    # A slave needs a shared master: where the host's mount is private (no
    # shared:N, e.g. a host whose init is not systemd), the runtime's rslave
    # has nothing to follow, on Kubernetes as here.
    src = hostpaths[m["name"]]
    host_shared = src in host and any(t.startswith("shared:") for t in host[src][1])
    want_slave = m.get("mountPropagation") in ("HostToContainer", "Bidirectional") and host_shared
    slave = any(t.startswith("master:") for t in tags)
    if slave != want_slave:
        bad.append(f"mount {m['mountPath']}: propagation {m.get('mountPropagation', 'None')}, host mount "
                   f"{'shared' if host_shared else 'private'}, container tags {tags or 'none'}")
    elif m.get("mountPropagation") == "HostToContainer" and not host_shared:
        print(f"container-test: note: host mount {src} is private (no shared:N in /proc/self/mountinfo), so "
              f"mountPropagation HostToContainer of {m['mountPath']} cannot take effect here; "
              f"`mount --make-shared {src}` (systemd does it at boot) makes it a slave")
root_opts = mounts["/"][0]
if ("ro" in root_opts) != bool(sc.get("readOnlyRootFilesystem")):
    bad.append(f"root file system options {','.join(root_opts)}")
for b in bad:
    print(f"container-test: FAIL process: {b}", file=sys.stderr)
if bad:
    sys.exit(1)
print(f"container-test: process: CapEff {want:#x}, NoNewPrivs {int(nnp)}, Seccomp {seccomp}; "
      + "; ".join(f"{m['mountPath']} {','.join(mounts[m['mountPath']][0][:1] + [t for t in mounts[m['mountPath']][1] if ':' in t])}"
                  for m in c.get("volumeMounts", [])) + f"; / {root_opts[0]}")
PY
[[ $("${podman[@]}" inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$name") == true ]] \
    || fail "the container's root filesystem is writable"

# 5b. Scrapes, from the first one on.
for n in 1 2 3; do
    curl -fsS -o "$tmp/metrics.$n" "$base_url/metrics" || fail "scrape $n of $base_url/metrics failed"
    # promtool lints names and help too; its exit status covers only errors in
    # the exposition, which is what we assert.
    promtool check metrics <"$tmp/metrics.$n" >"$tmp/promtool.$n" 2>&1 \
        || { cat "$tmp/promtool.$n" >&2; fail "scrape $n: promtool check metrics rejected the exposition"; }
    echo "container-test: scrape $n: ok   promtool check metrics ($(wc -l <"$tmp/metrics.$n") lines)"
    if ! python3 scripts/py/container_check.py "$tmp/metrics.$n" "$tmp/state.json" "$n"; then
        cp "$tmp/metrics.$n" "$cache/failed-scrape.txt"
        cp "$tmp/state.json" "$cache/failed-state.json"
        fail "scrape $n: assertions failed (see FAIL lines above; the scrape is in $cache/failed-scrape.txt)"
    fi
    sleep 1
done
echo "container-test: ok ($((SECONDS - t0)) s)"
