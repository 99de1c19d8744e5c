#!/usr/bin/env bash
# Download and unpack the pinned kernels of scripts/vm/kernels.lock into
# .cache/kernels/<name>/ (git-ignored). Reuses what is already there.
# Prints "<name> <path-to-vmlinuz>" per kernel.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=$root/.cache/kernels
mkdir -p "$cache"

# Debian 11 (bullseye) carries 5.10; add it as an apt source once.
src=/etc/apt/sources.list.d/bpfmap-bullseye.sources
if [[ ! -e $src ]]; then
    cat > "$src" <<'SRC'
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
    apt-get update -qq
fi

grep -v '^#' "$root/scripts/vm/kernels.lock" | while read -r name suite pkg ver; do
    [[ -z $name ]] && continue
    dir=$cache/$name
    stamp=$dir/.version
    if [[ ! -f $stamp || $(cat "$stamp") != "$pkg=$ver" ]]; then
        rm -rf "$dir" && mkdir -p "$dir"
        (cd "$cache" && rm -f "${pkg}"_*.deb &&
            apt-get download -q "$pkg=$ver" >/dev/null 2>&1) || {
            echo "fetch-kernels: cannot download $pkg=$ver from $suite." >&2
            echo "fetch-kernels: the archive may have dropped this version: pick a current one with" >&2
            echo "  apt-cache policy $pkg   (or apt-cache search linux-image-$name)" >&2
            echo "and update scripts/vm/kernels.lock." >&2
            exit 1
        }
        deb=$(ls "$cache/${pkg}"_*.deb)
        dpkg -x "$deb" "$dir"
        rm -f "$deb"
        echo "$pkg=$ver" > "$stamp"
    fi
    vmlinuz=$(ls "$dir"/boot/vmlinuz-*)
    echo "$name $vmlinuz"
done
