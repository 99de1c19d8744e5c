// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Every network namespace of the node, from the kernel's own list
 * (net_namespace_list, RCU-protected). The program is never attached: user
 * space runs it once per read with BPF_PROG_TEST_RUN (raw_tp, 5.10+),
 * which calls it under rcu_read_lock in the reader's own task, so a walk
 * costs one program run whatever the node holds. The walk starts at the
 * reader's own namespace and goes round the circular list once; the one
 * entry that is no namespace is the list head (a global this kernel may
 * not export), told apart by its ns.ops, which every network namespace
 * shares. Entries go to `recs` in .bss, the count and whether the walk came
 * back to its start beside them. Reads are probe reads: a namespace being
 * created or torn down meanwhile is seen or not. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Namespaces walked at most (the verifier follows every iteration of the
 * bounded loop); a longer list leaves `ended` 0 and the list unread. */
#define MAX_NETNS 1024

struct netns_rec {
	__u32 inum;
	/* Nonzero for the list head: its ns.ops differs from the reader's. */
	__u32 other;
};

__u32 walked = 0;
__u32 ended = 0;
struct netns_rec recs[MAX_NETNS + 1] = {};

SEC("raw_tp")
int list_netns(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 off = bpf_core_field_offset(struct net, list);
	struct list_head *start, *pos;
	const void *ops;
	struct net *me;
	__u32 i, n = 0;

	walked = 0;
	ended = 0;
	me = BPF_CORE_READ(task, nsproxy, net_ns);
	ops = BPF_CORE_READ(me, ns.ops);
	start = (struct list_head *)((void *)me + off);
	pos = start;
	/* The namespaces and the head: MAX_NETNS + 1 steps. The body has no
	 * branch but the loop's exit (the verifier follows every iteration):
	 * each entry is written with whether its ns.ops differs from the
	 * reader's (the head), and user space keeps the namespaces. */
	for (i = 0; i <= MAX_NETNS; i++) {
		struct net *net = (struct net *)((void *)pos - off);
		__u64 x = (__u64)BPF_CORE_READ(net, ns.ops) ^ (__u64)ops;

		recs[i].inum = BPF_CORE_READ(net, ns.inum);
		recs[i].other = (__u32)x | (__u32)(x >> 32);
		n++;
		pos = BPF_CORE_READ(pos, next);
		if (pos == start) {
			ended = 1;
			break;
		}
	}
	walked = n;
	return 0;
}
