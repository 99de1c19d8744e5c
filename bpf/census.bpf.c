// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Census iterators: every live map (iter/bpf_map), every live program
 * (iter/bpf_prog), every map, program and link file in an fd table and the
 * program references its socket and perf event files keep (iter/task_file),
 * and every map file behind a vma (iter/task_vma).
 * All field reads are CO-RE relocated through vmlinux.h. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "census.h"
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* bpf_map_sum_elem_count() is a kfunc from 6.6; only dump_map_count uses it
 * and user space loads that program only where the kernel's BTF has it. */
extern s64 bpf_map_sum_elem_count(const struct bpf_map *map) __ksym __weak;

/* bpf_rdonly_cast() is a kfunc from 6.2 (bpf_core_cast() in libbpf's
 * headers); where the kernel lacks it, libbpf resolves it to 0 and the
 * verifier drops the branch that calls it. */
static __always_inline __u32 map_id_of(struct file *file)
{
	if (bpf_ksym_exists(bpf_rdonly_cast)) {
		/* A direct (exception-table) load, not a helper call: the
		 * probe read was ~100 ns per map file on our 6.18 host. */
		struct bpf_map *map = bpf_core_cast(file->private_data, struct bpf_map);

		return map->id;
	}
	return BPF_CORE_READ((struct bpf_map *)file->private_data, id);
}

/* The id of the object behind a program or link file. */
static __always_inline __u32 obj_id_of(struct file *file, int kind)
{
	if (bpf_ksym_exists(bpf_rdonly_cast)) {
		/* Direct loads, as in map_id_of. */
		if (kind == BPFMAP_OBJ_PROG) {
			struct bpf_prog *prog = bpf_core_cast(file->private_data, struct bpf_prog);

			return prog->aux->id;
		}
		return bpf_core_cast(file->private_data, struct bpf_link)->id;
	}
	if (kind == BPFMAP_OBJ_PROG)
		return BPF_CORE_READ((struct bpf_prog *)file->private_data, aux, id);
	return BPF_CORE_READ((struct bpf_link *)file->private_data, id);
}

/* Inodes of the sockets whose receive queues hold files in flight (filled by
 * user space from the iter/unix walk before each task walk): their fds in
 * task_file name the receiving processes. want_sockets is 0 while the set is
 * empty, so a node with nothing in flight pays one load per file. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} receiver_sockets SEC(".maps");

__u32 want_sockets = 0;

/* struct bpf_map before 5.19 held its memory cgroup directly (5.11-5.18). */
struct bpf_map___old {
	struct mem_cgroup *memcg;
} __attribute__((preserve_access_index));

#define CSS_ONLINE_FLAG 2 /* enum CSS_ONLINE: css.flags bit while the cgroup exists */

/* The memory cgroup the map is charged to, which is the creator's
 * (bpf_map_save_memcg at creation). 5.19+: map->objcg, NULL for the root
 * cgroup. Removing a cgroup reparents its objcgs (memcg_reparent_objcgs:
 * memcg->objcg is cleared and every objcg on its list gets objcg->memcg =
 * parent), so a live creator is exactly objcg->memcg->objcg == objcg; after
 * a removal objcg->memcg is the nearest live ancestor, whose own objcg is
 * another one (or NULL for the root). 5.11-5.18: map->memcg holds a css
 * reference, so the removed cgroup stays readable, offline. */
static __always_inline void fill_creator(struct map_rec *r, struct bpf_map *map)
{
	if (bpf_core_field_exists(map->objcg)) {
		struct obj_cgroup *objcg = map->objcg;
		struct mem_cgroup *memcg;

		if (!objcg) {
			r->memcg_state = BPFMAP_MEMCG_ROOT;
			return;
		}
		memcg = objcg->memcg;
		if (!memcg)
			return;
		r->memcg_id = memcg->css.cgroup->kn->id;
		r->memcg_state = memcg->objcg == objcg ? BPFMAP_MEMCG_LIVE : BPFMAP_MEMCG_GONE;
	} else if (bpf_core_field_exists(((struct bpf_map___old *)map)->memcg)) {
		struct mem_cgroup *memcg = BPF_CORE_READ((struct bpf_map___old *)map, memcg);

		if (!memcg) {
			r->memcg_state = BPFMAP_MEMCG_ROOT;
			return;
		}
		r->memcg_id = BPF_CORE_READ(memcg, css.cgroup, kn, id);
		r->memcg_state = BPF_CORE_READ(memcg, css.flags) & CSS_ONLINE_FLAG
					 ? BPFMAP_MEMCG_LIVE
					 : BPFMAP_MEMCG_GONE;
	}
}

/* sk_psock_progs before sockmap links (before 6.10): no *_link members;
 * before 5.13 the stream members were skb_parser and skb_verdict. */
struct sk_psock_progs___old {
	struct bpf_prog *msg_parser;
	struct bpf_prog *skb_parser;
	struct bpf_prog *skb_verdict;
} __attribute__((preserve_access_index));

static __always_inline __u32 prog_id_at(struct bpf_prog *prog)
{
	return prog ? BPF_CORE_READ(prog, aux, id) : 0;
}

static __always_inline __u32 link_id_at(struct bpf_link *link)
{
	return link ? BPF_CORE_READ(link, id) : 0;
}

/* The programs a sockmap or sockhash holds (sock_map_prog_update keeps a
 * reference per slot, whether BPF_PROG_ATTACH or a sockmap link set it).
 * Slots: msg_parser, stream_parser, stream_verdict, skb_verdict. */
static __always_inline void fill_sockmap_progs(struct map_rec *r, struct bpf_map *map)
{
	struct sk_psock_progs *progs;

	/* Without these types (no stream parser support) there are no
	 * sockmaps; the guard keeps the relocations below out. */
	if (!bpf_core_type_exists(struct bpf_stab) || !bpf_core_type_exists(struct bpf_shtab))
		return;
	if (map->map_type == BPF_MAP_TYPE_SOCKMAP)
		progs = &((struct bpf_stab *)map)->progs;
	else if (map->map_type == BPF_MAP_TYPE_SOCKHASH)
		progs = &((struct bpf_shtab *)map)->progs;
	else
		return;
	if (bpf_core_field_exists(progs->stream_parser)) {
		r->held_progs[0] = prog_id_at(BPF_CORE_READ(progs, msg_parser));
		r->held_progs[1] = prog_id_at(BPF_CORE_READ(progs, stream_parser));
		r->held_progs[2] = prog_id_at(BPF_CORE_READ(progs, stream_verdict));
		if (bpf_core_field_exists(progs->skb_verdict))
			r->held_progs[3] = prog_id_at(BPF_CORE_READ(progs, skb_verdict));
	} else {
		struct sk_psock_progs___old *old = (void *)progs;

		r->held_progs[0] = prog_id_at(BPF_CORE_READ(old, msg_parser));
		r->held_progs[1] = prog_id_at(BPF_CORE_READ(old, skb_parser));
		r->held_progs[2] = prog_id_at(BPF_CORE_READ(old, skb_verdict));
	}
	if (bpf_core_field_exists(progs->msg_parser_link)) {
		r->held_links[0] = link_id_at(BPF_CORE_READ(progs, msg_parser_link));
		r->held_links[1] = link_id_at(BPF_CORE_READ(progs, stream_parser_link));
		r->held_links[2] = link_id_at(BPF_CORE_READ(progs, stream_verdict_link));
		r->held_links[3] = link_id_at(BPF_CORE_READ(progs, skb_verdict_link));
	}
}

/* The iterator hands us a trusted BTF pointer: read its fields directly
 * (CO-RE relocated through vmlinux.h's preserve_access_index). Direct loads
 * are JITed as plain loads; BPF_CORE_READ would call bpf_probe_read_kernel
 * per field, which dominated the census's kernel time at 10k maps. */
static __always_inline void fill_map(struct map_rec *r, struct bpf_map *map)
{
	r->map_ptr = (__u64)(unsigned long)map;
	r->id = map->id;
	r->map_type = map->map_type;
	r->key_size = map->key_size;
	r->value_size = map->value_size;
	r->max_entries = map->max_entries;
	r->map_flags = map->map_flags;
	if (bpf_core_field_exists(map->map_extra))
		r->map_extra = map->map_extra;
	r->frozen = map->frozen;
	r->refcnt = map->refcnt.counter;
	r->usercnt = map->usercnt.counter;
	r->inner_meta = map->inner_map_meta != NULL;
	__builtin_memcpy(r->name, map->name, sizeof(r->name));
	r->elem_count = -1;
	fill_creator(r, map);
	fill_sockmap_progs(r, map);
}

SEC("iter/bpf_map")
int dump_map(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;
	struct map_rec r = {};

	if (!map)
		return 0;
	fill_map(&r, map);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

SEC("iter/bpf_map")
int dump_map_count(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;
	struct map_rec r = {};

	if (!map)
		return 0;
	fill_map(&r, map);
	r.elem_count = bpf_map_sum_elem_count(map);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* bpf_prog_aux before 5.10: the target program was linked_prog. */
struct bpf_prog_aux___old {
	struct bpf_prog *linked_prog;
} __attribute__((preserve_access_index));

/* The program this one was loaded against (attach_prog_fd: freplace,
 * fentry/fexit on a program), held until the program is attached (the
 * attach moves that reference to the tracing link's tgt_prog). */
static __always_inline __u32 dst_prog_id(struct bpf_prog_aux *aux)
{
	struct bpf_prog *dst = NULL;

	if (bpf_core_field_exists(aux->dst_prog)) {
		/* aux is a trusted pointer: direct loads. */
		dst = aux->dst_prog;
		return dst ? dst->aux->id : 0;
	}
	if (bpf_core_field_exists(((struct bpf_prog_aux___old *)aux)->linked_prog))
		dst = BPF_CORE_READ((struct bpf_prog_aux___old *)aux, linked_prog);
	return prog_id_at(dst);
}

/* iter/bpf_prog (5.9+): every live program, with the maps it uses. The
 * used_maps array is a plain kernel pointer (not a BTF-typed one), read with
 * probe reads; the kernel fills it at load and only appends under its mutex
 * (BPF_PROG_BIND_MAP), so a racing reader sees a prefix. */
/* Map pointers read per probe read of used_maps (the stack holds them). */
#define USED_CHUNK 8

SEC("iter/bpf_prog")
int dump_prog(struct bpf_iter__bpf_prog *ctx)
{
	struct bpf_prog *prog = ctx->prog;
	struct bpf_prog_aux *aux;
	struct bpf_map **used;
	struct prog_rec r = {};
	__u32 i, n;

	if (!prog)
		return 0;
	aux = prog->aux;
	r.prog_ptr = (__u64)(unsigned long)prog;
	r.id = aux->id;
	r.prog_type = prog->type;
	r.expected_attach_type = prog->expected_attach_type;
	r.pages = prog->pages;
	r.refcnt = aux->refcnt.counter;
	r.load_time = aux->load_time;
	__builtin_memcpy(r.tag, prog->tag, sizeof(r.tag));
	__builtin_memcpy(r.name, aux->name, sizeof(r.name));
	n = aux->used_map_cnt;
	r.used_map_cnt = n;
	used = aux->used_maps;
	if (bpf_ksym_exists(bpf_rdonly_cast)) {
		/* One probe read per USED_CHUNK pointers, then direct loads
		 * of each map's id (a probe read per pointer and per id cost
		 * ~100 ns each). */
		for (i = 0; i < BPFMAP_PROG_MAX_MAPS && i < n; i += USED_CHUNK) {
			struct bpf_map *ms[USED_CHUNK] = {};
			__u32 j, k = n - i;
			__u64 size;

			if (k > USED_CHUNK)
				k = USED_CHUNK;
			/* A 64-bit size, bounded on the register passed: the
			 * compiler may otherwise pass a fresh zero-extension of
			 * the unclamped difference. */
			size = (__u64)k * sizeof(ms[0]);
			barrier_var(size);
			if (size > sizeof(ms))
				break;
			if (bpf_probe_read_kernel(ms, size, &used[i]))
				break;
			for (j = 0; j < USED_CHUNK && j < k; j++) {
				if (!ms[j] || i + j >= BPFMAP_PROG_MAX_MAPS)
					goto done;
				r.map_ids[i + j] = bpf_core_cast(ms[j], struct bpf_map)->id;
			}
		}
done:;
	} else {
		for (i = 0; i < BPFMAP_PROG_MAX_MAPS && i < n; i++) {
			struct bpf_map *m = NULL;

			if (bpf_probe_read_kernel(&m, sizeof(m), &used[i]) || !m)
				break;
			r.map_ids[i] = BPF_CORE_READ(m, id);
		}
	}
	r.dst_prog_id = dst_prog_id(aux);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* Link structs before the attach type moved to struct bpf_link (6.17). */
struct bpf_cgroup_link___old {
	enum bpf_attach_type type;
} __attribute__((preserve_access_index));
struct bpf_netns_link___old {
	enum bpf_attach_type type;
} __attribute__((preserve_access_index));
struct bpf_tracing_link___old {
	enum bpf_attach_type attach_type;
} __attribute__((preserve_access_index));
struct tcx_link___old {
	__u32 location;
} __attribute__((preserve_access_index));
/* netkit (6.7+, CONFIG_NETKIT) is absent from this vmlinux.h; location
 * until 6.17, as tcx's. */
struct netkit_link {
	struct bpf_link link;
	struct net_device *dev;
	__u32 location;
} __attribute__((preserve_access_index));

/* A device link's target: the device (NULL once it is unregistered or the
 * link detached). */
static __always_inline void link_dev(struct link_rec *r, struct net_device *dev)
{
	r->target |= BPFMAP_LINK_DEVICE;
	if (!dev) {
		r->target |= BPFMAP_LINK_DETACHED;
		return;
	}
	r->ifindex = BPF_CORE_READ(dev, ifindex);
	r->netns_ino = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	bpf_core_read_str(r->name, 16, &dev->name);
}

/* The attach type a link type kept in its own struct before 6.17. */
static __always_inline void link_attach_type(struct link_rec *r, __u32 t)
{
	r->attach_type = t;
	r->target |= BPFMAP_LINK_ATTACH_TYPE;
}

/* iter/bpf_link (5.19+): every live link, its program, for an iterator
 * link the map it is bound to, and what it is attached to (its target).
 * link is a trusted pointer: direct loads. */
SEC("iter/bpf_link")
int dump_link(struct bpf_iter__bpf_link *ctx)
{
	struct bpf_link *link = ctx->link;
	struct link_rec r = {};
	struct bpf_prog *prog;
	__u32 type;

	if (!link)
		return 0;
	r.id = link->id;
	type = link->type;
	r.type = type;
	prog = link->prog;
	if (prog)
		r.prog_id = prog->aux->id;
	/* 6.17+: every link's attach type is in struct bpf_link. 0 is a
	 * cgroup attach type, which only cgroup links can have. */
	if (bpf_core_field_exists(link->attach_type)) {
		__u32 t = link->attach_type;

		if (t != 0 || type == BPF_LINK_TYPE_CGROUP)
			link_attach_type(&r, t);
	}
	if (type == BPF_LINK_TYPE_PERF_EVENT && bpf_core_type_exists(struct bpf_perf_link)) {
		/* The link is the first member of struct bpf_perf_link. */
		struct file *pf = BPF_CORE_READ((struct bpf_perf_link *)link, perf_file);

		if (pf)
			r.perf_event = (__u64)(unsigned long)BPF_CORE_READ(pf, private_data);
	}
	if (type == BPF_LINK_TYPE_ITER) {
		/* The link is the first member of struct bpf_iter_link. */
		struct bpf_iter_link *il = (struct bpf_iter_link *)link;
		struct bpf_map *map = BPF_CORE_READ(il, aux.map);

		if (map)
			r.iter_map_id = BPF_CORE_READ(map, id);
	} else if (type == BPF_LINK_TYPE_TRACING) {
		struct bpf_tracing_link *tl = (struct bpf_tracing_link *)link;
		struct bpf_trampoline *tr = BPF_CORE_READ(tl, trampoline);

		/* A tracing link to a program (freplace, fentry on a program)
		 * holds that program (tgt_prog); to a kernel function, NULL. */
		r.tgt_prog_id = prog_id_at(BPF_CORE_READ(tl, tgt_prog));
		if (tr) {
			/* The trampoline's key: the BTF object (or target
			 * program) id above, the BTF id below (as the link
			 * info's target_obj_id and target_btf_id). */
			__u64 key = BPF_CORE_READ(tr, key);

			r.target_obj_id = key >> 32;
			r.target_btf_id = (__u32)key;
			r.target |= BPFMAP_LINK_TRAMPOLINE;
		}
		if (bpf_core_field_exists(((struct bpf_tracing_link___old *)tl)->attach_type))
			link_attach_type(&r, BPF_CORE_READ((struct bpf_tracing_link___old *)tl, attach_type));
	} else if (type == BPF_LINK_TYPE_CGROUP && bpf_core_type_exists(struct bpf_cgroup_link)) {
		struct bpf_cgroup_link *cl = (struct bpf_cgroup_link *)link;
		struct cgroup *cg = BPF_CORE_READ(cl, cgroup);

		r.target |= BPFMAP_LINK_CGROUP;
		if (cg)
			r.cgroup_id = BPF_CORE_READ(cg, kn, id);
		else
			r.target |= BPFMAP_LINK_DETACHED;
		if (bpf_core_field_exists(((struct bpf_cgroup_link___old *)cl)->type))
			link_attach_type(&r, BPF_CORE_READ((struct bpf_cgroup_link___old *)cl, type));
	} else if (type == BPF_LINK_TYPE_XDP && bpf_core_type_exists(struct bpf_xdp_link)) {
		link_dev(&r, BPF_CORE_READ((struct bpf_xdp_link *)link, dev));
	} else if (type == BPF_LINK_TYPE_TCX && bpf_core_type_exists(struct tcx_link)) {
		link_dev(&r, BPF_CORE_READ((struct tcx_link *)link, dev));
		if (bpf_core_field_exists(((struct tcx_link___old *)link)->location))
			link_attach_type(&r, BPF_CORE_READ((struct tcx_link___old *)link, location));
	} else if (type == BPF_LINK_TYPE_NETKIT && bpf_core_type_exists(struct netkit_link)) {
		link_dev(&r, BPF_CORE_READ((struct netkit_link *)link, dev));
		if (bpf_core_field_exists(((struct netkit_link *)link)->location))
			link_attach_type(&r, BPF_CORE_READ((struct netkit_link *)link, location));
	} else if (type == BPF_LINK_TYPE_NETNS && bpf_core_type_exists(struct bpf_netns_link)) {
		struct net *net = BPF_CORE_READ((struct bpf_netns_link *)link, net);

		r.target |= BPFMAP_LINK_NETNS;
		if (net)
			r.netns_ino = BPF_CORE_READ(net, ns.inum);
		else
			r.target |= BPFMAP_LINK_DETACHED;
		if (bpf_core_field_exists(((struct bpf_netns_link___old *)link)->type))
			link_attach_type(&r, BPF_CORE_READ((struct bpf_netns_link___old *)link, type));
	} else if (type == BPF_LINK_TYPE_STRUCT_OPS && bpf_core_type_exists(struct bpf_struct_ops_link)) {
		struct bpf_map *map = BPF_CORE_READ((struct bpf_struct_ops_link *)link, map);

		r.target |= BPFMAP_LINK_MAP;
		if (map)
			r.target_map_id = BPF_CORE_READ(map, id);
		else
			r.target |= BPFMAP_LINK_DETACHED;
	} else if (type == BPF_LINK_TYPE_NETFILTER && bpf_core_type_exists(struct bpf_nf_link)) {
		struct bpf_nf_link *nl = (struct bpf_nf_link *)link;
		struct net *net = BPF_CORE_READ(nl, net);

		r.target |= BPFMAP_LINK_NETFILTER;
		r.nf_pf = BPF_CORE_READ(nl, hook_ops.pf);
		r.nf_hooknum = BPF_CORE_READ(nl, hook_ops.hooknum);
		r.nf_priority = BPF_CORE_READ(nl, hook_ops.priority);
		if (bpf_core_field_exists(nl->defrag_hook))
			r.nf_defrag = BPF_CORE_READ(nl, defrag_hook) != 0;
		if (net)
			r.netns_ino = BPF_CORE_READ(net, ns.inum);
		if (BPF_CORE_READ(nl, dead))
			r.target |= BPFMAP_LINK_DETACHED;
	} else if (type == BPF_LINK_TYPE_RAW_TRACEPOINT && bpf_core_type_exists(struct bpf_raw_tp_link)) {
		const char *name;

		/* The cast makes the rest direct loads (one probe read, of the
		 * name, instead of four). */
		if (bpf_ksym_exists(bpf_rdonly_cast)) {
			struct bpf_raw_tp_link *rl = bpf_core_cast(link, struct bpf_raw_tp_link);

			name = rl->btp ? rl->btp->tp->name : NULL;
		} else {
			name = BPF_CORE_READ((struct bpf_raw_tp_link *)link, btp, tp, name);
		}

		if (name && bpf_probe_read_kernel_str(r.name, sizeof(r.name), name) > 0)
			r.target |= BPFMAP_LINK_TP_NAME;
	}
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* Elements visited so far in the current iter/bpf_map_elem walk, and that
 * walk's iterator session. User space runs one walk at a time (the census
 * thread); every new iterator instance has a new session id (from 1), whose
 * first call resets the count, so an abandoned walk cannot leak into the
 * next. (seq_num cannot tell: the final call of a one-element walk and the
 * first element both have seq_num 0.) */
__u64 elem_walk_count = 0;
__u64 elem_walk_session = 0;

/* Elements between two progress records of a walk: user space reads one
 * record per read(2), so it can stop a walk between chunks. The hash
 * iterator resumes at the element a read ended before (bucket and skip
 * count in its seq state), so a walk read in chunks counts each element
 * once. A power of two. */
#define ELEM_WALK_CHUNK 1024
/* Set in progress records; the final record (the total) has it clear. */
#define ELEM_WALK_PROGRESS (1ULL << 63)

/* Counts a hash map's live elements where the kernel lacks
 * bpf_map_sum_elem_count (before 6.6): attached to one map at a time
 * (hash, percpu_hash, lru_hash, lru_percpu_hash: the types this iterator
 * accepts). It reads no key or value bytes, so it attaches to any value
 * size. Every record is one u64: a progress record (the count so far with
 * ELEM_WALK_PROGRESS set) every ELEM_WALK_CHUNK elements, and the total,
 * written by the final call (key NULL), last. */
SEC("iter/bpf_map_elem")
int count_elems(struct bpf_iter__bpf_map_elem *ctx)
{
	__u64 n;

	if (ctx->meta->session_id != elem_walk_session) {
		elem_walk_session = ctx->meta->session_id;
		elem_walk_count = 0;
	}
	if (ctx->key) {
		n = ++elem_walk_count;
		if ((n & (ELEM_WALK_CHUNK - 1)) == 0) {
			n |= ELEM_WALK_PROGRESS;
			bpf_seq_write(ctx->meta->seq, &n, sizeof(n));
		}
		return 0;
	}
	n = elem_walk_count;
	elem_walk_count = 0;
	bpf_seq_write(ctx->meta->seq, &n, sizeof(n));
	return 0;
}

static __always_inline void fill_task(struct file_rec *r, struct task_struct *task)
{
	r->tgid = task->tgid;
	r->pid = task->pid;
	__builtin_memcpy(r->comm, task->comm, sizeof(r->comm));
	r->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
}

/* Attachment records for the program references a socket or perf event
 * file keeps (see BPFMAP_OBJ_SOCK_FILTER in census.h). */
static __always_inline void write_attachments(struct bpf_iter__task_file *ctx,
					      struct task_struct *task, struct file *file, int kind)
{
	struct attach_ref refs[2] = {};
	struct file_rec r = {};
	__u64 config = 0, flags = 0;
	__u32 attr = 0;
	int i, n;

	if (kind == BPFMAP_OBJ_PERF)
		n = perf_ref(file->private_data, &refs[0], &attr, &config, &flags);
	else
		n = sock_refs(file->private_data, refs, &attr, &flags);
	if (!n)
		return;
	r.file_ptr = (__u64)(unsigned long)file;
	r.fd = ctx->fd;
	r.attr = attr;
	r.vm_end = config;
	r.sock_ino = flags;
	fill_task(&r, task);
	for (i = 0; i < 2; i++) {
		if (i >= n)
			break;
		r.obj_kind = refs[i].kind;
		r.map_id = refs[i].prog_id;
		r.vm_start = refs[i].obj;
		bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	}
}

SEC("iter/task_file")
int dump_task_file(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct file_rec r = {};
	int kind;

	if (!task || !file)
		return 0;
	kind = obj_kind_of(file);
	if (kind == BPFMAP_OBJ_PERF) {
		write_attachments(ctx, task, file, kind);
		return 0;
	}
	if (kind < 0) {
		struct inode *inode = file->f_inode;
		__u64 ino;

		if ((inode->i_mode & S_IFMT) != S_IFSOCK)
			return 0;
		write_attachments(ctx, task, file, kind);
		/* A receiver of files in flight: a socket user space asked for. */
		if (!want_sockets)
			return 0;
		ino = inode->i_ino;
		if (!bpf_map_lookup_elem(&receiver_sockets, &ino))
			return 0;
		r.sock_ino = ino;
	} else if (kind == BPFMAP_OBJ_MAP) {
		r.map_id = map_id_of(file);
	} else if (kind == BPFMAP_OBJ_RING) {
		r.obj_kind = kind;
	} else {
		r.map_id = obj_id_of(file, kind);
		r.obj_kind = kind;
	}
	r.file_ptr = (__u64)(unsigned long)file;
	r.fd = ctx->fd;
	fill_task(&r, task);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

SEC("iter/task_vma")
int dump_task_vma(struct bpf_iter__task_vma *ctx)
{
	struct task_struct *task = ctx->task;
	struct vm_area_struct *vma = ctx->vma;
	struct file *file;
	struct file_rec r = {};

	if (!task || !vma)
		return 0;
	file = vma->vm_file;
	if (!file)
		return 0;
	if (obj_kind_of(file) != BPFMAP_OBJ_MAP)
		return 0;
	r.file_ptr = (__u64)(unsigned long)file;
	r.map_id = map_id_of(file);
	r.vm_start = vma->vm_start;
	r.vm_end = vma->vm_end;
	fill_task(&r, task);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}
