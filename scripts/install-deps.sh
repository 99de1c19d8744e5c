#!/usr/bin/env bash
# Install everything the build and the test suite need on Debian 12 (root).
# Idempotent: packages already present are skipped, so a second run is quick.
#   build:  clang llvm libelf-dev zlib1g-dev pkg-config make
#   tests:  bpftool (baseline + inspection), xdp-tools (real XDP software),
#           golang-go (the origins test's Go program),
#           prometheus (promtool and the
#           end-to-end Prometheus), python3-yaml, jq, curl, openssl (test CA of
#           the e2e TLS scrape and check-deploy)
#   matrix: qemu-system-x86, virtme-ng (PyPI), busybox-static (guest tools)
#   container test: podman, runc (crun fails on hybrid cgroup hosts),
#           mmdebstrap (local Debian base images, no image registry needed)
set -euo pipefail

want=(clang llvm libelf-dev zlib1g-dev pkg-config make bpftool prometheus
      jq curl openssl python3-yaml qemu-system-x86 busybox-static procps iproute2 kmod
      xdp-tools golang-go
      podman runc mmdebstrap binutils)
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # prometheus' postinst starts a service on :9090; our tests start their
    # own Prometheus on a free port, so stop the packaged one if it started.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if command -v systemctl >/dev/null && systemctl is-active -q prometheus 2>/dev/null; then
        systemctl stop prometheus || true
    fi
fi
pkill -x prometheus-node-exporter 2>/dev/null || true

# Python tools: virtme-ng for the kernel matrix, kubernetes-validate for the
# offline manifest check.
py_missing=()
command -v vng >/dev/null || py_missing+=(virtme-ng)
python3 -c 'import kubernetes_validate' 2>/dev/null || py_missing+=(kubernetes-validate)
if ((${#py_missing[@]})); then
    echo "install-deps: pip install ${py_missing[*]}"
    pip install -q "${py_missing[@]}"
fi

# bpffs for the tests' pins.
if ! grep -q ' /sys/fs/bpf bpf ' /proc/self/mounts; then
    mount -t bpf bpf /sys/fs/bpf
fi
# tracefs: not needed by the exporter (it uses tp_btf / raw tracepoints), kept
# out on purpose.
echo "install-deps: ok"
