# Sourced by the benchmark scripts: the exporter of a baseline revision.

# baseline_exporter ROOT NAME REV: build REV's exporter once into
# ROOT/.cache/NAME/baseline-REV/ (from a git worktree removed afterwards)
# and print the binary's path; a later call with the same REV reuses it.
# Fails when the worktree or the build fails.
baseline_exporter() {
    local root=$1 name=$2 rev=$3
    local dir=$root/.cache/$name/baseline-$rev
    if [[ ! -x $dir/target/release/bpfmap-exporter ]]; then
        rm -rf "$dir/src"
        mkdir -p "$dir" || return
        git -C "$root" worktree add --force --detach "$dir/src" "$rev" > /dev/null 2>&1 ||
            { git -C "$root" worktree prune && git -C "$root" worktree add --force --detach "$dir/src" "$rev" > /dev/null; } ||
            return
        (cd "$dir/src" && CARGO_TARGET_DIR=$dir/target cargo build --release --quiet --locked --bin bpfmap-exporter) >&2 ||
            return
        git -C "$root" worktree remove --force "$dir/src" || return
    fi
    echo "$dir/target/release/bpfmap-exporter"
}
