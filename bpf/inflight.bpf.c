// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Files in flight (iter/unix, 5.17+): for every unix socket of the network
 * namespace the iterator was created in, the files held by the SCM_RIGHTS
 * messages in its receive queue (UNIXCB(skb).fp -> struct scm_fp_list). Map
 * files and unix socket files are reported; a unix socket in flight is itself
 * visited by the iterator (it stays in its namespace's table until its last
 * file reference goes), so user space chains "in flight inside a socket in
 * flight" to the socket a process owns.
 *
 * This is its own object: iter/unix and bpf_loop do not exist before 5.17,
 * and the census object must keep loading there. All field reads are CO-RE
 * relocated; skbs and the files they carry are read with probe reads (they
 * are not trusted pointers, and the queue is read without its lock).
 * Program files, and the program references socket and perf event files in
 * flight keep (their filters, reuseport groups, event programs), are
 * reported too. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "census.h"
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_UNIX 1
#define SCM_MAX_FD 253

/* Steps of one socket's walk (each step visits one queued message or one
 * file of a message: BPF_MAX_LOOPS, bpf_loop's own ceiling), and records one
 * socket may write (one bpf_seq_write: the iterator's seq buffer is 8
 * pages). Beyond either the socket's record says BPFMAP_INFLIGHT_TRUNCATED. */
#define MAX_STEPS (1 << 23)
#define MAX_OUT 512

/* One socket's records, built in the loop callback (which cannot reach the
 * seq_file) and written once by the program. One walk runs at a time per
 * loaded object (the census is taken under a lock). */
struct inflight_rec out[MAX_OUT];

/* The walk's state lives in a global, not on the stack: the verifier then
 * sees every field as an unknown scalar, so the callback is verified once,
 * in a handful of states, whatever the queue holds. The walk is flat: a
 * step either visits file `j` of the current message's scm_fp_list or moves
 * to the next message, so no loop is nested in another: a bounded loop
 * inside the callback is verified iteration by iteration, and kernels that
 * charge the verifier's states to the loader's memory cgroup (6.18 here)
 * would charge hundreds of MiB to the pod for it. */
struct qctx {
	struct sk_buff *head;
	struct sk_buff *skb;
	struct scm_fp_list *fpl; /* the current message's files, NULL between messages */
	__u64 sock_ino;
	__u32 j;                 /* next file of fpl */
	__u32 count;             /* files in fpl, at most SCM_MAX_FD */
	__u32 n;
	__u32 flags;
	__u32 done;
	__u32 pad;
};

struct qctx cur;

/* Sockets whose records did not fit the iterator's buffer: the kernel drops
 * such a socket's output and resumes at the next hash bucket, so the walk is
 * incomplete when this grows. Only ever incremented; user space compares it
 * before and after a walk. */
__u64 lost_writes = 0;

/* Append a record; returns 1 when the record buffer is full. */
static __always_inline int put(struct qctx *q, struct file *f, __u64 inner, __u32 id, __u32 flags)
{
	struct inflight_rec *r;
	__u32 i = q->n;

	if (i >= MAX_OUT) {
		q->flags |= BPFMAP_INFLIGHT_TRUNCATED;
		return 1;
	}
	/* The mask is what bounds the index for the verifier: keep the
	 * compiler from folding it into the check above (older verifiers
	 * lose that bound across inlined calls). */
	barrier_var(i);
	r = &out[i & (MAX_OUT - 1)];
	r->file_ptr = (__u64)(unsigned long)f;
	r->sock_ino = q->sock_ino;
	r->inner_ino = inner;
	r->map_id = id;
	r->flags = flags;
	q->n++;
	return 0;
}

/* The flag of an attachment kind's records (BPFMAP_INFLIGHT_*). */
static __always_inline __u32 attach_flag(__u32 kind)
{
	if (kind == BPFMAP_OBJ_PERF)
		return BPFMAP_INFLIGHT_PERF;
	if (kind == BPFMAP_OBJ_SOCK_FILTER)
		return BPFMAP_INFLIGHT_SOCK_FILTER;
	return BPFMAP_INFLIGHT_REUSEPORT;
}

/* Append the records of in-flight file f: a map or program file, a unix
 * socket file, and the program references a socket or perf event file
 * keeps. Returns 1 when the record buffer is full (the walk can stop). */
static __always_inline int emit(struct qctx *q, struct file *f)
{
	struct attach_ref refs[2] = {};
	struct inode *inode;
	__u64 config = 0, flags = 0;
	__u32 attr = 0;
	void *priv;
	int kind, n = 0;

	if (!f)
		return 0;
	inode = BPF_CORE_READ(f, f_inode);
	priv = BPF_CORE_READ(f, private_data);
	if ((BPF_CORE_READ(inode, i_mode) & S_IFMT) == S_IFSOCK) {
		struct socket *sock = priv;

		n = sock_refs(sock, refs, &attr, &flags);
		if (BPF_CORE_READ(sock, sk, __sk_common.skc_family) == AF_UNIX &&
		    put(q, f, BPF_CORE_READ(inode, i_ino), 0, 0))
			return 1;
	} else {
		kind = obj_kind_of_untrusted(f);
		if (kind == BPFMAP_OBJ_MAP)
			return put(q, f, 0, BPF_CORE_READ((struct bpf_map *)priv, id), 0);
		if (kind == BPFMAP_OBJ_PROG)
			return put(q, f, 0, BPF_CORE_READ((struct bpf_prog *)priv, aux, id),
				   BPFMAP_INFLIGHT_PROG);
		if (kind != BPFMAP_OBJ_PERF)
			return 0;
		n = perf_ref(priv, &refs[0], &attr, &config, &flags);
	}
	if (n > 0 && put(q, f, refs[0].obj, refs[0].prog_id,
			 attach_flag(refs[0].kind) |
				 (flags & BPFMAP_ATTACH_UNSEEN ? BPFMAP_INFLIGHT_UNSEEN : 0)))
		return 1;
	if (n > 1 && put(q, f, refs[1].obj, refs[1].prog_id, attach_flag(refs[1].kind)))
		return 1;
	return 0;
}

static long step(__u64 i, void *ctx)
{
	struct qctx *q = &cur;
	struct sk_buff *skb = q->skb;
	struct scm_fp_list *fpl = q->fpl;
	struct unix_skb_parms *cb;
	int count;

	if (fpl) {
		__u32 j = q->j;

		if (j < q->count && j < SCM_MAX_FD) {
			struct file *f = NULL;

			q->j = j + 1;
			bpf_probe_read_kernel(&f, sizeof(f), &fpl->fp[j]);
			return emit(q, f);
		}
		q->fpl = NULL;
		q->skb = BPF_CORE_READ(skb, next);
		return 0;
	}
	if (!skb || skb == q->head) {
		q->done = 1;
		return 1;
	}
	cb = (struct unix_skb_parms *)&skb->cb;
	fpl = BPF_CORE_READ(cb, fp);
	count = fpl ? BPF_CORE_READ(fpl, count) : 0;
	if (count > 0) {
		q->fpl = fpl;
		q->j = 0;
		q->count = count > SCM_MAX_FD ? SCM_MAX_FD : count;
		return 0;
	}
	q->skb = BPF_CORE_READ(skb, next);
	return 0;
}

SEC("iter/unix")
int dump_unix_inflight(struct bpf_iter__unix *ctx)
{
	struct unix_sock *u = ctx->unix_sk;
	struct seq_file *seq = ctx->meta->seq;
	struct socket *sock;
	struct sock *sk;
	struct qctx *q = &cur;
	__u64 len;

	if (!u)
		return 0;
	sk = &u->sk;
	if (!sk->sk_receive_queue.qlen)
		return 0;
	q->sock_ino = 0;
	q->fpl = NULL;
	q->j = 0;
	q->count = 0;
	q->n = 0;
	q->flags = 0;
	q->done = 0;
	sock = sk->sk_socket;
	if (sock)
		bpf_core_read(&q->sock_ino, sizeof(q->sock_ino),
			      &((struct socket_alloc *)sock)->vfs_inode.i_ino);
	q->head = (struct sk_buff *)&sk->sk_receive_queue;
	q->skb = sk->sk_receive_queue.next;
	bpf_loop(MAX_STEPS, step, NULL, 0);
	if (!q->done)
		q->flags |= BPFMAP_INFLIGHT_TRUNCATED;
	if (q->flags) {
		/* The socket's summary record: file_ptr 0. */
		struct inflight_rec t = { .sock_ino = q->sock_ino, .flags = q->flags };

		if (bpf_seq_write(seq, &t, sizeof(t)))
			__sync_fetch_and_add(&lost_writes, 1);
	}
	len = q->n;
	if (len > MAX_OUT)
		len = MAX_OUT;
	len *= sizeof(struct inflight_rec);
	/* Keep the compiler from writing the unbounded copy to the helper. */
	barrier_var(len);
	if (len > 0 && len <= sizeof(out) && bpf_seq_write(seq, out, len))
		__sync_fetch_and_add(&lost_writes, 1);
	return 0;
}
