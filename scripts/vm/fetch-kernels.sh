#!/usr/bin/env bash
# Download and unpack the pinned kernels of scripts/vm/kernels.lock into
# .cache/kernels/<name>/ (git-ignored). Idempotent: a kernel whose stamp
# matches its pin is reused without touching apt or the network.
#   scripts/vm/fetch-kernels.sh [name ...]      default: every pinned kernel
# Prints "<name> <path-to-vmlinuz>" per kernel on stdout; progress on stderr.
# Needs root the first time (adds the bullseye apt source, apt-get update).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
lock=$root/scripts/vm/kernels.lock
cache=${BPFMAP_KERNEL_CACHE:-$root/.cache/kernels}
mkdir -p "$cache"
want=("$@")

selected() {
    ((${#want[@]} == 0)) && return 0
    local k
    for k in "${want[@]}"; do [[ $k == "$1" ]] && return 0; done
    return 1
}

# Debian 11 (bullseye) carries 5.10: add it as an apt source once. The 5.10,
# 6.1 and 6.12 images are served from the -security suites.
ensure_sources() {
    local src=/etc/apt/sources.list.d/bpfmap-bullseye.sources
    [[ -e $src ]] && return 1
    echo "fetch-kernels: adding the bullseye apt source ($src)" >&2
    cat > "$src" <<'SRC'
# Added by bpfmap-exporter scripts/vm/fetch-kernels.sh: the kernel matrix
# downloads Debian 11's 5.10 kernel image (apt-get download only).
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye bullseye-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bullseye-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    return 0
}

updated=0
apt_update() {
    ((updated)) && return 0
    echo "fetch-kernels: apt-get update" >&2
    apt-get update -qq >&2 || { echo "fetch-kernels: apt-get update failed" >&2; exit 1; }
    updated=1
}

# Whether apt knows exactly this version of the package.
known() {
    apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$2"
}

found=0
while read -r name suite pkg ver; do
    [[ -z $name || $name == \#* ]] && continue
    selected "$name" || continue
    found=$((found + 1))
    dir=$cache/$name
    stamp=$dir/.version
    if [[ ! -f $stamp || $(cat "$stamp") != "$pkg=$ver" ]]; then
        ensure_sources && apt_update
        known "$pkg" "$ver" || apt_update
        if ! known "$pkg" "$ver"; then
            echo "fetch-kernels: $pkg=$ver is not in the archive ($suite) any more." >&2
            echo "fetch-kernels: Debian's -security suites keep only the newest ABI; what apt knows now:" >&2
            apt-cache search --names-only "^linux-image-$(echo "$pkg" | sed -E 's/^linux-image-([0-9]+\.[0-9]+).*/\1/')" 2>/dev/null |
                grep -E -- '-amd64-unsigned ' | sort -V | tail -3 | sed 's/^/    /' >&2
            echo "fetch-kernels: pick the newest with apt-cache madison <package> and update scripts/vm/kernels.lock." >&2
            exit 1
        fi
        echo "fetch-kernels: downloading $pkg=$ver" >&2
        tmp=$(mktemp -d "$cache/.dl-$name.XXXXXX")
        if ! (cd "$tmp" && apt-get download -q "$pkg=$ver" > "$tmp/apt.log" 2>&1); then
            cat "$tmp/apt.log" >&2
            rm -rf "$tmp"
            echo "fetch-kernels: apt-get download $pkg=$ver failed" >&2
            exit 1
        fi
        mkdir "$tmp/root"
        dpkg -x "$tmp"/*.deb "$tmp/root"
        rm -rf "$dir"
        mv "$tmp/root" "$dir"
        rm -rf "$tmp"
        echo "$pkg=$ver" > "$stamp"
    fi
    vmlinuz=$(ls "$dir"/boot/vmlinuz-* 2>/dev/null | head -1 || true)
    kver=${vmlinuz##*/vmlinuz-}
    # virtme-ng shares the host's root over 9p (virtiofsd fails here); the
    # generic flavour builds 9p as a module, the cloud flavour lacks it.
    if [[ -z $vmlinuz ]] || ! ls "$dir/lib/modules/$kver/kernel/fs/9p/"9p.ko* > /dev/null 2>&1; then
        echo "fetch-kernels: $dir has no vmlinuz or no 9p module: use the generic (not cloud) flavour in kernels.lock" >&2
        exit 1
    fi
    echo "$name $vmlinuz"
done < "$lock"
if ((found == 0 && ${#want[@]} > 0)); then
    echo "fetch-kernels: none of '${want[*]}' is in $lock" >&2
    exit 1
fi
