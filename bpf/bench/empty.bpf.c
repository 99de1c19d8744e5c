// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The lifecycle benchmark's named baseline: an empty program at each attach
 * point the lifecycle programs use. Built into its own skeleton, which only
 * examples/bench_lifecycle.rs loads, to measure in the same run what merely
 * being attached costs (the kernel's dispatch, and BPF stats when on). The
 * exporter never contains these programs. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";


SEC("fexit/__x64_sys_bpf")
int BPF_PROG(bench_empty_fexit) { return 0; }

SEC("tracepoint/syscalls/sys_exit_bpf")
int bench_empty_tp(void *ctx) { return 0; }

SEC("tp_btf/sys_exit")
int BPF_PROG(bench_empty_btf) { return 0; }

SEC("raw_tp/sys_exit")
int bench_empty_raw(void *ctx) { return 0; }

/* fentry/kprobe/kretprobe twins sit on __x64_sys_bpf too: the refcount
 * functions that fire on a close differ between kernels, every loop of the
 * benchmark makes bpf() calls. */
SEC("fentry/__x64_sys_bpf")
int BPF_PROG(bench_empty_fentry) { return 0; }

SEC("kprobe/__x64_sys_bpf")
int bench_empty_kprobe(void *ctx) { return 0; }

SEC("kretprobe/__x64_sys_bpf")
int bench_empty_kretprobe(void *ctx) { return 0; }
