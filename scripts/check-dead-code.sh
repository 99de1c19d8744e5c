#!/usr/bin/env bash
# Dead code the compiler cannot see through the library's public modules:
# builds src/ once more as one binary crate (the modules private, main.rs as
# the root, without the `testing` feature), so rustc's dead-code and
# unused-import lints report every item the binary does not use. Items only
# tests use are gated by `cfg(any(test, feature = "testing"))`. Any such
# warning fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work="$repo/target/dead-code"
rm -rf "$work/crate"
mkdir -p "$work/crate/src"
cp "$repo/Cargo.toml" "$repo/Cargo.lock" "$repo/build.rs" "$work/crate/"
ln -s "$repo/bpf" "$work/crate/bpf"
python3 - "$repo" "$work/crate" <<'PY'
import os, re, sys
repo, out = sys.argv[1], sys.argv[2]
lib = open(f"{repo}/src/lib.rs").read()
main = open(f"{repo}/src/main.rs").read()
lines = []
for m in re.findall(r"^pub mod (\w+);", lib, re.M):
    p = f"{repo}/src/{m}.rs"
    if not os.path.exists(p):
        p = f"{repo}/src/{m}/mod.rs"
    lines.append(f'#[path = "{p}"] mod {m};')
for l in main.splitlines():
    if l.startswith("//!") or re.fullmatch(r"use bpfmap_exporter::\w+;", l.strip()):
        continue
    lines.append(l.replace("bpfmap_exporter::", "crate::"))
open(f"{out}/src/main.rs", "w").write("\n".join(lines) + "\n")
# One binary target: no library, tests, examples or benches.
toml = open(f"{out}/Cargo.toml").read()
toml = re.sub(r"\n\[(lib|\[test\]|\[example\]|\[bench\])\]\n(?:[^\[\n].*\n)*", "\n", toml)
open(f"{out}/Cargo.toml", "w").write(toml)
PY
log="$work/check.log"
CARGO_TARGET_DIR="$work/target" cargo check --quiet \
    --manifest-path "$work/crate/Cargo.toml" 2>"$log" || { cat "$log" >&2; exit 1; }
if grep -qE '^warning: .*(never (used|read|constructed)|unused)' "$log"; then
    grep -E -A4 '^warning: .*(never (used|read|constructed)|unused)' "$log" | sed "s|$repo/||" >&2
    echo "check-dead-code: items above are not used by the binary: delete them, or gate them with #[cfg(any(test, feature = \"testing\"))] if only tests use them" >&2
    exit 1
fi
echo "check-dead-code: no dead code"
