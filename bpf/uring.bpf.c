// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Files in io_uring registered-file tables (IORING_REGISTER_FILES): for every
 * io_uring fd in an fd table, the map, program and link files its ring holds.
 * A registered file keeps its struct file (and so the object's reference)
 * with no fd anywhere.
 *
 * This is its own object: the table walk is a bpf_loop (5.17+), and the
 * census object must keep loading where it is missing. The ring context and
 * its table are read with probe reads (not trusted pointers; the table is
 * read without the ring's lock, so a racing (un)registration is seen or
 * not). Two layouts, chosen by CO-RE: from 6.13 the table is
 * file_table.data (nr, nodes[] of struct io_rsrc_node, file_ptr inside);
 * before, file_table.files[] of struct io_fixed_file with nr_user_files. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "census.h"
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Slots walked per ring at most (BPF_MAX_LOOPS is bpf_loop's ceiling); a
 * ring with more says BPFMAP_URING_TRUNCATED. */
#define MAX_SLOTS (1 << 20)
/* Records one ring visit may write: one bpf_seq_write of the buffer. */
#define MAX_OUT 64
/* file_ptr's low bits are flags (FFS_*); struct files are 8-aligned. */
#define FFS_MASK (~7UL)

struct io_fixed_file___old {
	unsigned long file_ptr;
} __attribute__((preserve_access_index));

struct io_file_table___old {
	struct io_fixed_file___old *files;
} __attribute__((preserve_access_index));

struct io_ring_ctx___old {
	struct io_file_table___old file_table;
	unsigned int nr_user_files;
} __attribute__((preserve_access_index));

/* One ring visit's state, a global (so the callback is verified once, with
 * every field an unknown scalar) and its records, written once after the
 * walk (the callback cannot reach the seq_file). One walk runs at a time
 * per loaded object. */
struct uctx {
	void *slots;  /* nodes[] (6.13+) or files[] */
	__u64 ring;
	__u32 nr;
	__u32 n;
	__u32 flags;
	__u32 pad;
};

struct uctx cur;
struct uring_rec out[MAX_OUT];

/* Records the kernel dropped (the seq buffer was full). */
__u64 lost_writes = 0;

static long step(__u64 i, void *unused)
{
	struct uctx *u = &cur;
	unsigned long ptr = 0;
	struct uring_rec *r;
	struct file *f;
	void *priv;
	int kind;

	if (i >= u->nr)
		return 1;
	/* A relocated constant, not u's state: the verifier then drops the
	 * layout this kernel lacks (its relocations are poisoned). */
	if (bpf_core_field_exists(struct io_file_table, data)) {
		struct io_rsrc_node *node = NULL;

		bpf_probe_read_kernel(&node, sizeof(node), (struct io_rsrc_node **)u->slots + i);
		if (!node)
			return 0;
		ptr = BPF_CORE_READ(node, file_ptr);
	} else {
		bpf_probe_read_kernel(&ptr, sizeof(ptr), (unsigned long *)u->slots + i);
	}
	f = (struct file *)(ptr & FFS_MASK);
	if (!f)
		return 0;
	kind = obj_kind_of_untrusted(f);
	/* A ring's fixed file that is itself a ring holds no BPF object. */
	if (kind == BPFMAP_OBJ_RING)
		return 0;
	priv = BPF_CORE_READ(f, private_data);
	if (kind == BPFMAP_OBJ_PERF ||
	    (kind < 0 && (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) == S_IFSOCK)) {
		/* A socket or perf event keeping a program: reported by its
		 * first reference's kind, which user space does not resolve
		 * further (the source is then incomplete). */
		struct attach_ref refs[2] = {};
		__u64 config = 0, flags = 0;
		__u32 attr = 0;
		int n = kind == BPFMAP_OBJ_PERF ? perf_ref(priv, &refs[0], &attr, &config, &flags)
						: sock_refs(priv, refs, &attr, &flags);

		if (!n)
			return 0;
		if (u->n >= MAX_OUT) {
			u->flags |= BPFMAP_URING_TRUNCATED;
			return 1;
		}
		r = &out[u->n & (MAX_OUT - 1)];
		r->obj_id = refs[0].prog_id;
		r->file_ptr = (__u64)(unsigned long)f;
		r->obj_kind = refs[0].kind;
		u->n++;
		return 0;
	}
	if (kind < 0)
		return 0;
	if (u->n >= MAX_OUT) {
		u->flags |= BPFMAP_URING_TRUNCATED;
		return 1;
	}
	r = &out[u->n & (MAX_OUT - 1)];
	if (kind == BPFMAP_OBJ_MAP)
		r->obj_id = BPF_CORE_READ((struct bpf_map *)priv, id);
	else if (kind == BPFMAP_OBJ_PROG)
		r->obj_id = BPF_CORE_READ((struct bpf_prog *)priv, aux, id);
	else
		r->obj_id = BPF_CORE_READ((struct bpf_link *)priv, id);
	r->file_ptr = (__u64)(unsigned long)f;
	r->obj_kind = kind;
	u->n++;
	return 0;
}

SEC("iter/task_file")
int dump_uring_files(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct seq_file *seq = ctx->meta->seq;
	struct uctx *u = &cur;
	struct uring_rec head = {};
	void *ring;
	__u32 i, n;
	__u64 len;

	if (!task || !file || obj_kind_of(file) != BPFMAP_OBJ_RING)
		return 0;
	ring = file->private_data;
	u->ring = (__u64)(unsigned long)ring;
	u->n = 0;
	u->flags = 0;
	if (bpf_core_field_exists(struct io_file_table, data)) {
		struct io_ring_ctx *c = ring;

		u->nr = BPF_CORE_READ(c, file_table.data.nr);
		u->slots = BPF_CORE_READ(c, file_table.data.nodes);
	} else {
		struct io_ring_ctx___old *c = ring;

		u->nr = BPF_CORE_READ(c, nr_user_files);
		u->slots = BPF_CORE_READ(c, file_table.files);
	}
	if (!u->slots)
		u->nr = 0;
	if (u->nr > MAX_SLOTS)
		u->flags |= BPFMAP_URING_TRUNCATED;
	if (u->nr)
		bpf_loop(u->nr > MAX_SLOTS ? MAX_SLOTS : u->nr, step, NULL, 0);
	/* Every record of this visit names the ring and the task holding it. */
	head.ring_ptr = u->ring;
	head.tgid = task->tgid;
	head.fd = ctx->fd;
	head.cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	__builtin_memcpy(head.comm, task->comm, sizeof(head.comm));
	head.obj_kind = u->flags;
	head.slots = u->nr;
	n = u->n;
	if (n > MAX_OUT)
		n = MAX_OUT;
	for (i = 0; i < MAX_OUT; i++) {
		if (i >= n)
			break;
		out[i].ring_ptr = head.ring_ptr;
		out[i].tgid = head.tgid;
		out[i].fd = head.fd;
		out[i].cgroup_id = head.cgroup_id;
		__builtin_memcpy(out[i].comm, head.comm, sizeof(head.comm));
	}
	if (head.obj_kind && bpf_seq_write(seq, &head, sizeof(head)))
		__sync_fetch_and_add(&lost_writes, 1);
	len = (__u64)n * sizeof(struct uring_rec);
	barrier_var(len);
	if (len > 0 && len <= sizeof(out) && bpf_seq_write(seq, out, len))
		__sync_fetch_and_add(&lost_writes, 1);
	return 0;
}
