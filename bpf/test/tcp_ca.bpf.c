// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* A minimal BPF TCP congestion control (struct_ops tcp_congestion_ops) for
 * the root tests: three member programs in one struct_ops map, registered
 * by the test and used by no socket. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("struct_ops")
__u32 BPF_PROG(bpfmap_ssthresh, struct sock *sk)
{
	return 10;
}

SEC("struct_ops")
void BPF_PROG(bpfmap_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
}

SEC("struct_ops")
__u32 BPF_PROG(bpfmap_undo_cwnd, struct sock *sk)
{
	return 10;
}

SEC(".struct_ops")
struct tcp_congestion_ops bpfmap_ca = {
	.ssthresh = (void *)bpfmap_ssthresh,
	.cong_avoid = (void *)bpfmap_cong_avoid,
	.undo_cwnd = (void *)bpfmap_undo_cwnd,
	.name = "bpfmap_test_ca",
};
