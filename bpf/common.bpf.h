/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Definitions the exporter's BPF programs share. Include after vmlinux.h,
 * <bpf/bpf_helpers.h> and <bpf/bpf_core_read.h>. */
#ifndef BPFMAP_COMMON_BPF_H
#define BPFMAP_COMMON_BPF_H

#include "census.h"

/* Map, program, link and io_uring files are anonymous-inode files
 * (bpf_map_new_fd -> anon_inode_getfd("bpf-map", &bpf_map_fops, ...)).
 * Matching on the anon inode superblock magic plus the dentry name needs no
 * kallsyms: bpf_map_fops is a data symbol, absent without CONFIG_KALLSYMS_ALL. */
#define ANON_INODE_FS_MAGIC 0x09041934

/* File type bits of inode->i_mode (include/uapi/linux/stat.h). */
#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* The kinds of object file the walks classify: BPFMAP_OBJ_MAP, _PROG, _LINK,
 * _RING and _PERF (census.h). */
#define BPFMAP_OBJ_KINDS 5

/* f_op of map, program, link, io_uring and perf event files (bpf_map_fops,
 * bpf_prog_fops, bpf_link_fops, io_uring_fops, perf_fops), learned from the first file
 * of each kind that passes the name check. Every file of a kind shares it, so
 * later files compare a pointer instead of reading the dentry name. Each
 * object file has its own copy. */
const void *learned_fops[BPFMAP_OBJ_KINDS] = {};

/* The kind (BPFMAP_OBJ_*) of an anon inode file by its dentry name, or -1:
 * "bpf-map", "bpf-prog" or "bpf_link" (bpf_map_new_fd, bpf_prog_new_fd,
 * bpf_link_prime), "[io_uring]", or "[perf_event]" (perf_event_open's
 * anon_inode_getfile). Callers check the anon inode magic first. */
static __always_inline int obj_kind_of_name(const unsigned char *dname)
{
	char n[16] = {};
	long len = bpf_probe_read_kernel_str(n, sizeof(n), dname);

	if (len == 13 && n[0] == '[' && n[1] == 'p' && n[2] == 'e' && n[3] == 'r' && n[4] == 'f' &&
	    n[5] == '_' && n[6] == 'e' && n[7] == 'v' && n[8] == 'e' && n[9] == 'n' && n[10] == 't' &&
	    n[11] == ']')
		return BPFMAP_OBJ_PERF;
	if (len == 11 && n[0] == '[' && n[1] == 'i' && n[2] == 'o' && n[3] == '_' && n[4] == 'u' &&
	    n[5] == 'r' && n[6] == 'i' && n[7] == 'n' && n[8] == 'g' && n[9] == ']')
		return BPFMAP_OBJ_RING;
	if (n[0] != 'b' || n[1] != 'p' || n[2] != 'f')
		return -1;
	if (len == 8 && n[3] == '-' && n[4] == 'm' && n[5] == 'a' && n[6] == 'p')
		return BPFMAP_OBJ_MAP;
	if (len == 9 && n[3] == '-' && n[4] == 'p' && n[5] == 'r' && n[6] == 'o' && n[7] == 'g')
		return BPFMAP_OBJ_PROG;
	if (len == 9 && n[3] == '_' && n[4] == 'l' && n[5] == 'i' && n[6] == 'n' && n[7] == 'k')
		return BPFMAP_OBJ_LINK;
	return -1;
}

/* The kind whose learned f_op is fops (not NULL), or -1. */
static __always_inline int learned_kind(const void *fops)
{
	int k;

#pragma unroll
	for (k = 0; k < BPFMAP_OBJ_KINDS; k++)
		if (fops == learned_fops[k])
			return k;
	return -1;
}

/* Records fops as the f_op of kind's files; returns kind. */
static __always_inline int learn_kind(const void *fops, int kind)
{
	if (kind >= 0 && kind < BPFMAP_OBJ_KINDS)
		learned_fops[kind] = fops;
	return kind;
}

/* The object kind of a file (BPFMAP_OBJ_*), or -1. file is a trusted BTF
 * pointer from an iterator context: the field walks are direct loads (CO-RE
 * relocated), not bpf_probe_read calls. */
static __always_inline int obj_kind_of(struct file *file)
{
	const void *fops = file->f_op;
	int kind;

	if (!fops)
		return -1;
	kind = learned_kind(fops);
	if (kind >= 0)
		return kind;
	if (file->f_inode->i_sb->s_magic != ANON_INODE_FS_MAGIC)
		return -1;
	return learn_kind(fops, obj_kind_of_name(BPF_CORE_READ(file, f_path.dentry, d_name.name)));
}

/* obj_kind_of for a file reached by probe reads (an untrusted pointer, such
 * as one read from an skb or an io_uring's file table). */
static __always_inline int obj_kind_of_untrusted(struct file *f)
{
	const void *fops = BPF_CORE_READ(f, f_op);
	int kind;

	if (!fops)
		return -1;
	kind = learned_kind(fops);
	if (kind >= 0)
		return kind;
	if (BPF_CORE_READ(f, f_inode, i_sb, s_magic) != ANON_INODE_FS_MAGIC)
		return -1;
	return learn_kind(fops, obj_kind_of_name(BPF_CORE_READ(f, f_path.dentry, d_name.name)));
}

/* One program reference a socket or perf event keeps: the kernel object
 * holding it (BPFMAP_OBJ_SOCK_FILTER's vm_start) and the program's id. */
struct attach_ref {
	__u64 obj;
	__u32 prog_id;
	__u32 kind; /* BPFMAP_OBJ_PERF, _SOCK_FILTER, _REUSEPORT */
};

/* The id of an eBPF program, 0 for none or for a classic filter (classic
 * socket and reuseport filters are converted programs with no id). */
static __always_inline __u32 ebpf_prog_id(struct bpf_prog *prog)
{
	return prog ? BPF_CORE_READ(prog, aux, id) : 0;
}

/* The program references a socket keeps, into out[0..2): its filter
 * (sk->sk_filter, shared with the children a listener accepts) and its
 * reuseport group's selector (sk->sk_reuseport_cb, shared by the group).
 * *attr gets family | type << 16, *flags BPFMAP_ATTACH_UNSEEN when the
 * socket has unaccepted children. Returns how many were found. */
static __always_inline int sock_refs(struct socket *sock, struct attach_ref *out, __u32 *attr,
				     __u64 *flags)
{
	struct sock *sk = BPF_CORE_READ(sock, sk);
	struct sk_filter *filt;
	struct sock_reuseport *group;
	int n = 0;

	if (!sk)
		return 0;
	filt = BPF_CORE_READ(sk, sk_filter);
	if (filt) {
		out[0].prog_id = ebpf_prog_id(BPF_CORE_READ(filt, prog));
		if (out[0].prog_id) {
			out[0].obj = (__u64)(unsigned long)filt;
			out[0].kind = BPFMAP_OBJ_SOCK_FILTER;
			n = 1;
			if (BPF_CORE_READ(sk, sk_ack_backlog))
				*flags = BPFMAP_ATTACH_UNSEEN;
		}
	}
	group = BPF_CORE_READ(sk, sk_reuseport_cb);
	if (group) {
		__u32 id = ebpf_prog_id(BPF_CORE_READ(group, prog));

		if (id) {
			out[n & 1].prog_id = id;
			out[n & 1].obj = (__u64)(unsigned long)group;
			out[n & 1].kind = BPFMAP_OBJ_REUSEPORT;
			n++;
		}
	}
	if (n)
		*attr = BPF_CORE_READ(sk, __sk_common.skc_family) |
			((__u32)(__u16)BPF_CORE_READ(sock, type) << 16);
	return n;
}

/* The program reference a perf event keeps (event->prog: set by
 * PERF_EVENT_IOC_SET_BPF or a perf link, and copied with a reference into
 * inherited child events). Returns 1 when it has one; *attr and *config get
 * attr.type and attr.config, *flags BPFMAP_ATTACH_UNSEEN when child
 * events exist. */
static __always_inline int perf_ref(struct perf_event *ev, struct attach_ref *out, __u32 *attr,
				    __u64 *config, __u64 *flags)
{
	struct list_head *next;

	if (!bpf_core_field_exists(ev->prog))
		return 0;
	out->prog_id = ebpf_prog_id(BPF_CORE_READ(ev, prog));
	if (!out->prog_id)
		return 0;
	out->obj = (__u64)(unsigned long)ev;
	out->kind = BPFMAP_OBJ_PERF;
	*attr = BPF_CORE_READ(ev, attr.type);
	*config = BPF_CORE_READ(ev, attr.config);
	next = BPF_CORE_READ(ev, child_list.next);
	*flags = next && next != &ev->child_list ? BPFMAP_ATTACH_UNSEEN : 0;
	return 1;
}

#endif /* BPFMAP_COMMON_BPF_H */
