// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Map lifecycle flow: map creations by type, bpf() map commands by
 * result, and refcount increments/decrements, counted per process in per-CPU
 * maps. User space chooses at startup which programs load and attach
 * (fentry/fexit -> kprobe/kretprobe -> tracepoint) from the running kernel;
 * destructions are found by diffing map ids against the census, and timed
 * here where a probe on bpf_map_free_deferred attaches. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lifecycle.h"
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#if defined(__TARGET_ARCH_x86)
#define NR_BPF 321
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, orig_ax)
#define SYSCALL_ARG1(regs) BPF_CORE_READ(regs, di)
#define SYSCALL_ARG2(regs) BPF_CORE_READ(regs, si)
#else
#error "lifecycle.bpf.c: only x86_64 syscall numbers are wired (vendored vmlinux.h is x86_64)"
#endif

/* enum bpf_cmd values (stable UAPI). */
#define CMD_MAP_CREATE 0
#define CMD_PROG_LOAD 5

const volatile __u32 with_pid = 0;
const volatile __u32 log_events = 0;
/* 1 when the kernel has the bpf_rdonly_cast kfunc (6.2+), from its BTF
 * (src/lifecycle/probes.rs): the creation path then reads the new file and
 * map with direct loads. Read-only data, so the verifier drops the branch
 * not taken (and, before 6.2, the kfunc call libbpf left unresolved). */
const volatile __u32 have_rdonly_cast = 0;
/* --collector.origins: capture the user stack of object-creating and
 * file-taking bpf() calls; origins_build_id: also ask the kernel for build
 * id plus file offset per frame (the process may be gone before user space
 * reads /proc). */
const volatile __u32 origins_on = 0;
const volatile __u32 origins_build_id = 0;
/* The exporter's own tgid: its census takes files of every object. */
const volatile __u32 self_tgid = 0;
/* 1 when the fexit/kretprobe program on map_create counts creations; 0 when
 * the syscall-exit program does. Written by user space after attaching. */
__u32 create_from_probe = 0;
/* Id of the most recent creation (a hint for the scan's upper bound). */
__u32 last_id = 0;

/* Per-process counters: (process, kind, arg) -> a counter slot, given out
 * on first use from free_slots and never taken back, so a slot's counter
 * only grows and its key never changes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LC_SLOTS);
	__type(key, struct count_key);
	__type(value, __u32);
} slots SEC(".maps");

/* The counters, by slot, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LC_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

/* Slots not given out yet: user space pushes 0..max_entries-1 before it
 * attaches anything (a queue: atomic on every kernel, unlike a fetch-add
 * before 5.12). LC_SLOTS unless user space resized the three maps. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, LC_SLOTS);
	__type(value, __u32);
} free_slots SEC(".maps");

/* Per-CPU cache of recent keys and their slots, indexed by kind, arg and
 * process: the common case (a process repeating a command) counts without
 * hashing the key. Programs on one CPU can still nest (interrupts) or, under
 * full preemption, interleave (fentry/fexit only disable migration), so an
 * entry is a seqlock: `seq` is odd while a writer rewrites it, a reader
 * takes the slot only when `seq` is even and the same before and after it
 * read the key and the slot, and writers exclude each other with a try-lock
 * built from atomic adds (BPF_XADD: no cmpxchg before 5.12). */
struct cache_ent {
	__u64 key[5];   /* struct count_key, as words */
	__u32 slot;     /* slot + 1; 0 = empty */
	__u32 seq;      /* odd while being written */
	__u32 lock;     /* writers: the one that raised it to 1 writes */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LC_CACHE);
	__type(key, __u32);
	__type(value, struct cache_ent);
} cache SEC(".maps");

/* One value holding every overflow counter, so user space reads them all
 * with one lookup. Used only when every counter slot is taken. */
struct overflow_val {
	__u64 n[LC_OVERFLOW_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct overflow_val);
} overflow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LC_RING);
	__type(key, __u32);
	__type(value, struct create_rec);
} records SEC(".maps");

/* Program loads, by program id modulo LC_PROG_RING (see lifecycle.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LC_PROG_RING);
	__type(key, __u32);
	__type(value, struct load_rec);
} prog_records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Origin records (see lifecycle.h); resized by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} origins SEC(".maps");

/* One origin record being built (sent with its walked frames only), and
 * room past it: the build-id walk writes at ips + (walked bytes & 0x1ff),
 * and older verifiers (5.10, 6.1) bound that offset by the mask alone
 * (511), not by the walk's 384-byte maximum. */
struct origin_scratch {
	struct origin_rec rec;
	__u8 slack[512 - LC_STACK_DEPTH * 8];
};
_Static_assert(sizeof(struct origin_scratch) >= __builtin_offsetof(struct origin_rec, ips) + 0x1ff +
						      sizeof(((struct origin_rec *)0)->bids),
	       "origin_scratch holds the build-id walk at any masked offset");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct origin_scratch);
} origin_scratch SEC(".maps");

/* Stack bytes the frame walk copies at once (walk_user_stack). */
#define WALK_WINDOW 512
#define USER_PAGE 4096

struct walk_window {
	__u8 b[WALK_WINDOW];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk_window);
} origin_window SEC(".maps");

struct origin_key {
	__u32 tgid;
	__u32 pad;
	__u64 stack_hash;
};

/* (process, stack) pairs whose build ids were sent, with the generation
 * of user space's cache of normalized stacks (origin_gen) they were sent
 * in: a pair sent in the current generation is sent again without build
 * ids, since user space holds its frames. Resized by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LC_ORIGIN_SEEN);
	__type(key, struct origin_key);
	__type(value, __u32);
} origin_seen SEC(".maps");

/* The generation of user space's normalized-stack cache, bumped by user
 * space each time it forgets that cache. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} origin_gen SEC(".maps");

/* Events seen but not counted or recorded, by LC_LOST_* index. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LC_LOST_N);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Nesting depth inside bpf_map_put_with_uref (which calls bpf_map_put when
 * that is not inlined): the inner bpf_map_put is the same decrement. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} put_depth SEC(".maps");

/* Destruction time (CLOCK_BOOTTIME ns) by map address, written by the
 * bpf_map_free_deferred probe; user space looks an address up when the
 * census finds its map gone and deletes the entry. LRU: entries nobody
 * reads (the exporter's own debris, maps freed before it tracked them) are
 * evicted instead of filling it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LC_FREED);
	__type(key, __u64);
	__type(value, __u64);
} freed SEC(".maps");

/* Makes the skeleton emit the record type. */
struct create_rec _create_rec = {};
struct load_rec _load_rec = {};
struct origin_rec _origin_rec = {};

/* bpf_get_current_task_btf() (5.11+) gives a BTF pointer to current: its
 * fields are then plain loads (with exception handling), not helper calls.
 * Resolved by libbpf against the running kernel's BTF (CO-RE): on 5.10 the
 * branches that use it are dead code the verifier never visits. */
#define HAVE_TASK_BTF \
	bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf)

/* The bytes of a comm word from its first NUL on cleared: the kernel may
 * leave bytes of an older, longer name after the NUL (strlcpy before 6.x),
 * and bpf_get_current_comm() returns them as zeros. Little endian. */
static __always_inline __u64 comm_word(__u64 w, __u64 *done)
{
	const __u64 ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	__u64 z = (w - ones) & ~w & highs; /* lowest set bit: the first NUL */

	if (*done)
		return 0;
	if (!z)
		return w;
	*done = 1;
	z &= -z;                /* 0x80 << 8k: byte k is the first NUL */
	return w & ((z >> 7) - 1);
}

/* The memory controller's index in css_set.subsys, from the running
 * kernel's BTF (a constant after relocation); -1 without the controller. */
#define MEMCG_SUBSYS                                                              \
	(bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)        \
		 ? (long)bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id) \
		 : -1L)

/* The kernfs id of the memory cgroup of task `t` (a BTF pointer): the
 * cgroup of its memory css, in the hierarchy that holds the memory
 * controller (v1 `memory` on hybrid hosts, else the unified one). The
 * kernel charges a new map to this cgroup (the census reads it back from
 * the map), so both attribute a map to the same cgroup. 0 when unknown. */
static __always_inline __u64 memcg_id_btf(struct task_struct *t)
{
	long i = MEMCG_SUBSYS;
	struct cgroup_subsys_state *css;

	if (i < 0 || i >= CGROUP_SUBSYS_COUNT)
		return 0;
	css = t->cgroups->subsys[i];
	if (!css)
		return 0;
	return css->cgroup->kn->id;
}

/* memcg_id_btf() for kernels without bpf_get_current_task_btf() (5.10):
 * CO-RE probe reads. */
static __always_inline __u64 memcg_id_probe(struct task_struct *t)
{
	long i = MEMCG_SUBSYS;
	struct cgroup_subsys_state *css = NULL;
	struct css_set *cs;

	if (i < 0 || i >= CGROUP_SUBSYS_COUNT)
		return 0;
	cs = BPF_CORE_READ(t, cgroups);
	if (!cs || bpf_probe_read_kernel(&css, sizeof(css),
					 (void *)cs + bpf_core_field_offset(struct css_set, subsys) +
						 i * sizeof(void *)) ||
	    !css)
		return 0;
	return BPF_CORE_READ(css, cgroup, kn, id);
}

/* The current task's comm and cgroup id, as bpf_get_current_comm() and
 * bpf_get_current_cgroup_id() give them, and its memory cgroup id; its
 * tgid into k only with the pid label; returns the tgid. */
static __always_inline __u32 current_ids(struct count_key *k)
{
	__u32 tgid;

	if (HAVE_TASK_BTF) {
		struct task_struct *t = bpf_get_current_task_btf();
		__u64 done = 0;

		tgid = t->tgid;
		k->cgroup_id = t->cgroups->dfl_cgrp->kn->id;
		k->memcg_id = memcg_id_btf(t);
		((__u64 *)k->comm)[0] = comm_word(*(__u64 *)&t->comm[0], &done);
		((__u64 *)k->comm)[1] = comm_word(*(__u64 *)&t->comm[8], &done);
	} else {
		tgid = bpf_get_current_pid_tgid() >> 32;
		k->cgroup_id = bpf_get_current_cgroup_id();
		k->memcg_id = memcg_id_probe((struct task_struct *)bpf_get_current_task());
		bpf_get_current_comm(k->comm, sizeof(k->comm));
	}
	if (with_pid)
		k->tgid = tgid;
	return tgid;
}

#define READ_ONCE32(x) (*(volatile __u32 *)&(x))
#define WRITE_ONCE32(x, v) (*(volatile __u32 *)&(x) = (v))
#define barrier() asm volatile("" ::: "memory")

/* The slot of key k, given out now when k is new; -1 when every slot is
 * taken (or the slots hash is full). */
static __always_inline long slot_of(struct count_key *k)
{
	__u32 *s = bpf_map_lookup_elem(&slots, k);
	__u32 slot;

	if (s)
		return *s;
	if (bpf_map_pop_elem(&free_slots, &slot))
		return -1;
	if (bpf_map_update_elem(&slots, k, &slot, BPF_NOEXIST) == 0)
		return slot;
	/* Another CPU inserted k meanwhile (or the hash is full): give the
	 * slot back and take the winner's. */
	bpf_map_push_elem(&free_slots, &slot, 0);
	s = bpf_map_lookup_elem(&slots, k);
	return s ? *s : -1;
}

/* The cached slot of key w (as words) in entry c, or -1. */
static __always_inline long cache_get(struct cache_ent *c, const __u64 *w)
{
	__u32 seq = READ_ONCE32(c->seq), slot;
	int same;

	if (seq & 1)
		return -1;
	barrier();
	same = c->key[0] == w[0] && c->key[1] == w[1] && c->key[2] == w[2] &&
	       c->key[3] == w[3] && c->key[4] == w[4];
	slot = c->slot;
	barrier();
	if (!same || !slot || READ_ONCE32(c->seq) != seq)
		return -1;
	return slot - 1;
}

static __always_inline void cache_put(struct cache_ent *c, const __u64 *w, __u32 slot)
{
	__sync_fetch_and_add(&c->lock, 1);
	if (READ_ONCE32(c->lock) == 1) {
		WRITE_ONCE32(c->seq, c->seq + 1);
		barrier();
		c->key[0] = w[0];
		c->key[1] = w[1];
		c->key[2] = w[2];
		c->key[3] = w[3];
		c->key[4] = w[4];
		c->slot = slot + 1;
		barrier();
		WRITE_ONCE32(c->seq, c->seq + 1);
	}
	__sync_fetch_and_add(&c->lock, -1);
}

static __always_inline void count(__u16 kind, __u16 arg)
{
	struct count_key k = {};
	struct cache_ent *c;
	struct overflow_val *ov;
	__u64 *n, *w = (__u64 *)&k;
	__u32 ci, s, tgid, zero = 0;
	long slot;

	tgid = current_ids(&k);
	k.kind = kind;
	k.arg = arg;
	/* Distinct (kind, arg) pairs of one process never share an entry:
	 * a per-process constant is XORed into (kind << 6 | arg). */
	ci = (((__u32)kind << 6) | (arg & 63)) ^
	     ((((__u32)k.cgroup_id ^ tgid) * 2654435761u) >> 24);
	ci &= LC_CACHE - 1;
	c = bpf_map_lookup_elem(&cache, &ci);
	slot = c ? cache_get(c, w) : -1;
	if (slot < 0) {
		slot = slot_of(&k);
		if (slot >= 0 && c)
			cache_put(c, w, slot);
	}
	if (slot >= 0) {
		s = slot;
		n = bpf_map_lookup_elem(&counts, &s);
		if (n) /* atomic: another program can nest on this CPU */
			__sync_fetch_and_add(n, 1);
		return;
	}
	/* Every slot taken: keep the total exact, without the process. */
	ci = (__u32)kind * LC_ARGS + (arg & (LC_ARGS - 1));
	ov = bpf_map_lookup_elem(&overflow, &zero);
	if (ov && ci < LC_OVERFLOW_SLOTS)
		__sync_fetch_and_add(&ov->n[ci], 1);
}

/* The fd was installed by this very bpf() call; only another thread of the
 * process closing it and opening something else in between could put a
 * different file there, and every map file is an anon inode. The anon inode
 * check is what we pay for (3 reads, not the 6 a dentry-name check costs). */
static __always_inline int is_anon_inode(struct file *file)
{
	return BPF_CORE_READ(file, f_inode, i_sb, s_magic) == ANON_INODE_FS_MAGIC;
}

/* What on_create needs to know of a new map. */
struct new_map {
	struct bpf_map *map; /* kernel address, only recorded */
	__u32 id;
	__u32 map_type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
};

/* The file at fd of the current task's fd table: direct loads through the
 * task (5.11+) and, with bpf_rdonly_cast (6.2+), of the fd array slot too;
 * otherwise one bpf_probe_read_kernel() of that slot (a variable index),
 * and on 5.10 CO-RE probe reads all the way. 0 when none. */
static __always_inline __u64 fd_file(long fd)
{
	struct fdtable *fdt;
	__u64 fds, file = 0;

	if (fd < 0)
		return 0;
	if (HAVE_TASK_BTF) {
		struct task_struct *t = bpf_get_current_task_btf();

		fdt = t->files->fdt;
		if (!fdt || (__u64)fd >= fdt->max_fds)
			return 0;
		fds = (__u64)fdt->fd;
	} else {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();

		fdt = BPF_CORE_READ(t, files, fdt);
		if (!fdt || (__u64)fd >= BPF_CORE_READ(fdt, max_fds))
			return 0;
		fds = (__u64)BPF_CORE_READ(fdt, fd);
	}
	if (!fds)
		return 0;
	fds += fd * sizeof(void *);
	/* The slot is a `struct file *`; read as the first field of a struct
	 * that starts with one (struct kiocb's ki_filp, at offset 0 on every
	 * kernel; checked by CO-RE), it is one more direct load. */
	if (have_rdonly_cast && bpf_core_field_offset(struct kiocb, ki_filp) == 0)
		return (__u64)bpf_core_cast((void *)fds, struct kiocb)->ki_filp;
	if (bpf_probe_read_kernel(&file, sizeof(file), (void *)fds))
		return 0;
	return file;
}

/* The map behind a map file. With bpf_rdonly_cast() (6.2+: turns a kernel
 * address into a BTF pointer, inlined by the verifier into a move) every
 * field is a direct load; before it, CO-RE probe reads. 0 when the file is
 * not an anon inode (see is_anon_inode). */
static __always_inline int file_map(__u64 addr, struct new_map *m)
{
	if (have_rdonly_cast) {
		struct file *f = bpf_core_cast((void *)addr, struct file);
		struct bpf_map *map;

		if (f->f_inode->i_sb->s_magic != ANON_INODE_FS_MAGIC)
			return 0;
		m->map = f->private_data;
		map = bpf_core_cast(m->map, struct bpf_map);
		m->id = map->id;
		m->map_type = map->map_type;
		if (log_events) {
			m->key_size = map->key_size;
			m->value_size = map->value_size;
			m->max_entries = map->max_entries;
			m->map_flags = map->map_flags;
		}
		return 1;
	}
	struct file *file = (struct file *)addr;
	struct bpf_map *map;

	if (!is_anon_inode(file))
		return 0;
	map = BPF_CORE_READ(file, private_data);
	m->map = map;
	m->id = BPF_CORE_READ(map, id);
	m->map_type = BPF_CORE_READ(map, map_type);
	if (log_events) { /* sizes and flags are only logged */
		m->key_size = BPF_CORE_READ(map, key_size);
		m->value_size = BPF_CORE_READ(map, value_size);
		m->max_entries = BPF_CORE_READ(map, max_entries);
		m->map_flags = BPF_CORE_READ(map, map_flags);
	}
	return 1;
}

static __always_inline void add_lost(__u32 i)
{
	__u64 *l = bpf_map_lookup_elem(&lost, &i);

	if (l) /* atomic: another program can nest on this CPU */
		__sync_fetch_and_add(l, 1);
}

/* A map was created and installed as `fd` in the current task's fd table
 * (fd < 0: the creation failed): find it there, count it and record it by
 * id. A created map that cannot be found there is counted as lost. */
static __always_inline void on_create(long fd)
{
	struct new_map m = {};
	struct count_key who = {};
	struct create_rec *r;
	__u64 file, pid_tgid;
	__u32 slot;

	if (fd < 0)
		return;
	file = fd_file(fd);
	if (!file || !file_map(file, &m)) {
		add_lost(LC_LOST_UNREADABLE);
		return;
	}
	count(LC_KIND_CREATE, m.map_type);
	if (!m.id)
		return;
	slot = m.id & (LC_RING - 1);
	r = bpf_map_lookup_elem(&records, &slot);
	if (!r)
		return;
	pid_tgid = bpf_get_current_pid_tgid();
	current_ids(&who);
	r->id = 0; /* invalid while being written */
	r->create_ns = bpf_ktime_get_boot_ns();
	r->cgroup_id = who.cgroup_id;
	r->memcg_id = who.memcg_id;
	r->map_ptr = (__u64)(unsigned long)m.map;
	r->tgid = pid_tgid >> 32;
	r->pid = (__u32)pid_tgid;
	r->map_type = m.map_type;
	r->key_size = m.key_size;
	r->value_size = m.value_size;
	r->max_entries = m.max_entries;
	r->map_flags = m.map_flags;
	__builtin_memcpy(r->comm, who.comm, sizeof(r->comm));
	r->id = m.id;
	last_id = m.id;
	if (log_events && bpf_ringbuf_output(&events, r, sizeof(*r), 0))
		add_lost(LC_LOST_LOG_RING);
}

/* The id of the program behind a program file (0 when the file is not an
 * anon inode: see is_anon_inode). Direct loads with bpf_rdonly_cast()
 * (6.2+), CO-RE probe reads before it. */
static __always_inline __u32 file_prog_id(__u64 addr)
{
	if (have_rdonly_cast) {
		struct file *f = bpf_core_cast((void *)addr, struct file);
		struct bpf_prog *prog;

		if (f->f_inode->i_sb->s_magic != ANON_INODE_FS_MAGIC)
			return 0;
		prog = bpf_core_cast(f->private_data, struct bpf_prog);
		return prog->aux->id;
	}
	struct file *file = (struct file *)addr;
	struct bpf_prog *prog;

	if (!is_anon_inode(file))
		return 0;
	prog = BPF_CORE_READ(file, private_data);
	return BPF_CORE_READ(prog, aux, id);
}

/* A program was loaded and installed as `fd` in the current task's fd
 * table: record who loaded it, by program id. A load whose file cannot be
 * found there (closed by another thread first) is not recorded; user space
 * then says the load was not recorded. */
static __always_inline void on_prog_load(long fd)
{
	struct count_key who = {};
	struct load_rec *r;
	__u64 file, pid_tgid;
	__u32 id, slot;

	file = fd_file(fd);
	if (!file)
		return;
	id = file_prog_id(file);
	if (!id)
		return;
	slot = id & (LC_PROG_RING - 1);
	r = bpf_map_lookup_elem(&prog_records, &slot);
	if (!r)
		return;
	pid_tgid = bpf_get_current_pid_tgid();
	current_ids(&who);
	r->id = 0; /* invalid while being written */
	r->load_ns = bpf_ktime_get_boot_ns();
	r->cgroup_id = who.cgroup_id;
	r->memcg_id = who.memcg_id;
	r->tgid = pid_tgid >> 32;
	r->pid = (__u32)pid_tgid;
	__builtin_memcpy(r->comm, who.comm, sizeof(r->comm));
	r->id = id;
}

/* enum bpf_cmd values of the calls whose origin is kept. */
#define CMD_OBJ_PIN 6
#define CMD_OBJ_GET 7
#define CMD_PROG_GET_FD_BY_ID 13
#define CMD_MAP_GET_FD_BY_ID 14
#define CMD_LINK_CREATE 28

/* The id of the object behind an object file of kind `kind`. */
static __always_inline __u32 obj_id_of(struct file *file, int kind)
{
	void *priv = BPF_CORE_READ(file, private_data);

	if (!priv)
		return 0;
	if (kind == BPFMAP_OBJ_MAP)
		return BPF_CORE_READ((struct bpf_map *)priv, id);
	if (kind == BPFMAP_OBJ_PROG)
		return BPF_CORE_READ((struct bpf_prog *)priv, aux, id);
	if (kind == BPFMAP_OBJ_LINK)
		return BPF_CORE_READ((struct bpf_link *)priv, id);
	return 0;
}

/* The x86-64 frame record a frame pointer points at. */
struct user_frame {
	__u64 next; /* the caller's frame pointer */
	__u64 ret;  /* the return address into the caller */
};

/* The frame-pointer walk of perf_callchain_user(), which bpf_get_stack()
 * runs: ips[0] is the user ip, then the return address of each frame
 * record, following saved frame pointers until one is 0 or misaligned (no
 * frame record is), a read fails (not mapped, or not resident: nothing
 * faults in), or LC_STACK_DEPTH frames. The kernel reads each record with
 * its own user-memory access, at a fixed cost per access that is most of a
 * deep stack's capture. Here one access copies the stack from a frame
 * record up to WALK_WINDOW bytes, never past the end of its page (the next
 * page may not be mapped), and the records inside the copy are read from
 * it: a walk costs one access per window it crosses. walk_user_stack
 * returns the bytes of ips written; read_frame gives the record at fp from
 * the window w (holding the user bytes [lo, hi)), copying a new window
 * when it is not there: 0, or -1 when it cannot be read. */
static __always_inline int read_frame(struct walk_window *w, __u64 *lo, __u64 *hi, __u64 fp,
				      struct user_frame *f)
{
	__u64 len, off;

	if (fp < *lo || fp + sizeof(*f) > *hi) {
		len = USER_PAGE - (fp & (USER_PAGE - 1));
		if (len > WALK_WINDOW)
			len = WALK_WINDOW;
		if (len < sizeof(*f)) /* a record across a page boundary: read alone */
			return bpf_probe_read_user(f, sizeof(*f), (void *)fp) ? -1 : 0;
		if (bpf_probe_read_user(w, len, (void *)fp))
			return -1;
		*lo = fp;
		*hi = fp + len;
	}
	off = fp - *lo;
	if (off > WALK_WINDOW - sizeof(*f))
		return -1;
	*f = *(struct user_frame *)&w->b[off];
	return 0;
}

static __always_inline long walk_user_stack(__u64 *ips, __u64 ip, __u64 fp)
{
	struct user_frame f;
	struct walk_window *w;
	__u64 lo = 0, hi = 0; /* [lo, hi): the user bytes copied into w */
	__u32 zero = 0;
	int i;

	w = bpf_map_lookup_elem(&origin_window, &zero);
	if (!w)
		return 0;
	ips[0] = ip;
	for (i = 1; i < LC_STACK_DEPTH; i++) {
		if (!fp || (fp & 7) || read_frame(w, &lo, &hi, fp, &f))
			break;
		ips[i] = f.ret;
		fp = f.next;
	}
	return i * 8;
}

/* bpf() command `cmd` succeeded with `ret` (attr: its user attr pointer):
 * send the calling thread's user stack with the object it reached, with
 * the frames walked only. Build ids are asked for only the first time a
 * process sends a stack in a generation of user space's cache (the walk
 * costs microseconds per distinct binary; later records of that stack are
 * named from the cache). Full ring buffer: counted as LC_LOST_ORIGIN_RING. */
static __always_inline void on_origin(void *ctx_of_origin, __u64 cmd, long ret, __u64 attr,
				      __u64 user_ip, __u64 user_fp)
{
	struct origin_key key = {};
	struct origin_scratch *scratch;
	struct origin_rec *r;
	struct task_struct *task;
	struct file *file;
	__u64 pid_tgid, pathname = 0, size, avail, half, flags, h;
	__u32 zero = 0, *gen = 0, *seen;
	long fd = ret, n, m;
	int kind, i, mark = 0;

	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return;
	if (cmd == CMD_OBJ_PIN) {
		__u32 bpf_fd = 0; /* union bpf_attr: pathname, then bpf_fd */

		if (bpf_probe_read_user(&bpf_fd, sizeof(bpf_fd), (void *)(attr + 8)))
			return;
		fd = bpf_fd;
	}
	if (cmd == CMD_OBJ_PIN || cmd == CMD_OBJ_GET)
		bpf_probe_read_user(&pathname, sizeof(pathname), (void *)attr);
	scratch = bpf_map_lookup_elem(&origin_scratch, &zero);
	if (!scratch)
		return;
	r = &scratch->rec;
	pid_tgid = bpf_get_current_pid_tgid();
	r->ns = bpf_ktime_get_boot_ns();
	r->tgid = pid_tgid >> 32;
	r->pid = (__u32)pid_tgid;
	r->cmd = cmd;
	r->fd = fd;
	r->obj_id = 0;
	r->obj_kind = -1;
	file = (struct file *)fd_file(fd);
	r->file_ptr = (__u64)file;
	if (file) {
		kind = obj_kind_of_untrusted(file);
		r->obj_kind = kind;
		r->obj_id = obj_id_of(file, kind);
	}
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	r->path[0] = 0;
	if (pathname)
		bpf_probe_read_user_str(r->path, sizeof(r->path), (void *)pathname);
	n = walk_user_stack(r->ips, user_ip, user_fp);
	r->ips_len = n;
	r->bids_len = 0;
	r->stack_hash = 0;
	size = __builtin_offsetof(struct origin_rec, ips);
	if (n > 0 && n <= sizeof(r->ips)) {
		task = (struct task_struct *)bpf_get_current_task();
		h = 0xcbf29ce484222325ULL ^ r->tgid;
		h = (h ^ BPF_CORE_READ(task, group_leader, start_time)) * 0x100000001b3ULL;
		for (i = 0; i < LC_STACK_DEPTH; i++) {
			if (i >= n / 8)
				break;
			h = (h ^ r->ips[i]) * 0x100000001b3ULL;
			h ^= h >> 29;
		}
		r->stack_hash = h | 1;
		size += n;
		if (origins_build_id) {
			key.tgid = r->tgid;
			key.stack_hash = r->stack_hash;
			gen = bpf_map_lookup_elem(&origin_gen, &zero);
			seen = bpf_map_lookup_elem(&origin_seen, &key);
			if (gen && !(seen && *seen == *gen)) {
				m = bpf_get_stack(ctx_of_origin, (void *)r->ips + (n & 0x1ff),
						  sizeof(r->bids),
						  BPF_F_USER_STACK | BPF_F_USER_BUILD_ID);
				r->bids_len = m;
				if (m > 0 && m <= sizeof(r->bids)) {
					size += m;
					mark = 1;
				}
			}
		}
	}
	/* A wake-up is an interrupt this thread pays for (a VM exit under
	 * virtualization): the reader polls, and is woken only by the record
	 * that fills the ring past half. */
	avail = bpf_ringbuf_query(&origins, BPF_RB_AVAIL_DATA);
	half = bpf_ringbuf_query(&origins, BPF_RB_RING_SIZE) / 2;
	flags = avail < half && avail + size + 8 >= half ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	/* Checked on the register passed: older verifiers (5.10, 6.1) lose
	 * the bound of a check made before the arithmetic above. */
	barrier_var(size);
	if (size > sizeof(*r))
		return;
	if (bpf_ringbuf_output(&origins, r, size, flags)) {
		add_lost(LC_LOST_ORIGIN_RING);
		return;
	}
	if (mark && gen)
		bpf_map_update_elem(&origin_seen, &key, gen, BPF_ANY);
}

/* bpf() returned `ret` for command `cmd` in the current task, whose user
 * registers at the call held ip `user_ip` and frame pointer `user_fp`. */
static __always_inline void on_bpf_exit(void *ctx_of_origin, __u64 cmd, long ret, __u64 attr,
					__u64 user_ip, __u64 user_fp)
{
	if (origins_on && ret >= 0) {
		switch (cmd) {
		case CMD_MAP_CREATE:
		case CMD_PROG_LOAD:
		case CMD_LINK_CREATE:
		case CMD_OBJ_PIN:
		case CMD_OBJ_GET:
		case CMD_MAP_GET_FD_BY_ID:
		case CMD_PROG_GET_FD_BY_ID:
			on_origin(ctx_of_origin, cmd, ret, attr, user_ip, user_fp);
		}
	}
	/* Program loads are recorded, not counted (the counters are of map
	 * commands). */
	if (cmd == CMD_PROG_LOAD) {
		if (ret >= 0)
			on_prog_load(ret);
		return;
	}
	switch (cmd) {
	case 0:  /* MAP_CREATE */
	case 1:  /* MAP_LOOKUP_ELEM */
	case 2:  /* MAP_UPDATE_ELEM */
	case 3:  /* MAP_DELETE_ELEM */
	case 4:  /* MAP_GET_NEXT_KEY */
	case 6:  /* OBJ_PIN */
	case 7:  /* OBJ_GET */
	case 14: /* MAP_GET_FD_BY_ID */
	case 21: /* MAP_LOOKUP_AND_DELETE_ELEM */
	case 22: /* MAP_FREEZE */
	case 24: /* MAP_LOOKUP_BATCH */
	case 25: /* MAP_LOOKUP_AND_DELETE_BATCH */
	case 26: /* MAP_UPDATE_BATCH */
	case 27: /* MAP_DELETE_BATCH */
		count(LC_KIND_SYSCALL, (__u16)(cmd << 1 | (ret < 0)));
		break;
	default:
		return;
	}
	if (cmd == CMD_MAP_CREATE && ret >= 0 && !create_from_probe)
		on_create(ret);
}

/* ---- syscall exit: three ways to the same event ---- */

/* Classic tracepoint: fires for bpf() only, but needs tracefs for the
 * event id and bpf_task_pt_regs (5.15+) for the command. */
SEC("tracepoint/syscalls/sys_exit_bpf")
int tp_sys_exit_bpf(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);

	/* A BTF pointer: a direct load, not a bpf_probe_read_kernel() call
	 * (the helper call is the larger cost; BENCHMARKS.md). */
	on_bpf_exit(ctx, regs->di, ctx->ret, regs->si, regs->ip, regs->bp);
	return 0;
}

/* BTF tracepoint: no tracefs needed; fires for every syscall, so the
 * syscall number is checked first. */
SEC("tp_btf/sys_exit")
int BPF_PROG(btf_sys_exit, struct pt_regs *regs, long ret)
{
	if (regs->orig_ax != NR_BPF)
		return 0;
	on_bpf_exit(ctx, regs->di, ret, regs->si, regs->ip, regs->bp);
	return 0;
}

SEC("raw_tp/sys_exit")
int raw_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	if (have_rdonly_cast) { /* direct loads, not two probe reads */
		struct pt_regs *regs = bpf_core_cast((void *)ctx->args[0], struct pt_regs);

		if (regs->orig_ax != NR_BPF)
			return 0;
		on_bpf_exit(ctx, regs->di, (long)ctx->args[1], regs->si, regs->ip, regs->bp);
		return 0;
	}
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];

	if (SYSCALL_NR(regs) != NR_BPF)
		return 0;
	on_bpf_exit(ctx, SYSCALL_ARG1(regs), (long)ctx->args[1], SYSCALL_ARG2(regs),
		    origins_on ? BPF_CORE_READ(regs, ip) : 0, origins_on ? BPF_CORE_READ(regs, bp) : 0);
	return 0;
}

/* The x86-64 bpf() entry from user space, same signature on 5.10..6.18.
 * fexit here touches only bpf() calls: no syscall tracepoint, so the other
 * syscalls of the node keep their fast path. */
SEC("fexit/__x64_sys_bpf")
int BPF_PROG(fexit_sys_bpf, const struct pt_regs *regs, long ret)
{
	on_bpf_exit(ctx, regs->di, ret, regs->si, regs->ip, regs->bp);
	return 0;
}

/* ---- map creation through the kernel function (also bpf_sys_bpf) ---- */

SEC("fexit/map_create")
int fexit_map_create(void *ctx)
{
	__u64 ret = 0;

	if (create_from_probe && bpf_get_func_ret(ctx, &ret) == 0)
		on_create((long)ret);
	return 0;
}

SEC("kretprobe/map_create")
int BPF_KRETPROBE(kret_map_create, long ret)
{
	if (create_from_probe)
		on_create(ret);
	return 0;
}

/* ---- refcount functions ---- */

static __always_inline __u32 *depth(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&put_depth, &zero);
}

static __always_inline void put_enter(void)
{
	__u32 *d = depth();

	count(LC_KIND_DEC, 0);
	if (d)
		*d += 1;
}

static __always_inline void put_exit(void)
{
	__u32 *d = depth();

	if (d && *d)
		*d -= 1;
}

static __always_inline void put_plain(void)
{
	__u32 *d = depth();

	if (!d || !*d)
		count(LC_KIND_DEC, 0);
}

SEC("fentry/bpf_map_inc")
int BPF_PROG(fe_bpf_map_inc) { count(LC_KIND_INC, 0); return 0; }
SEC("fentry/bpf_map_inc_with_uref")
int BPF_PROG(fe_bpf_map_inc_with_uref) { count(LC_KIND_INC, 0); return 0; }
SEC("fentry/__bpf_map_inc_not_zero")
int BPF_PROG(fe___bpf_map_inc_not_zero) { count(LC_KIND_INC, 0); return 0; }
SEC("fentry/bpf_map_inc_not_zero")
int BPF_PROG(fe_bpf_map_inc_not_zero) { count(LC_KIND_INC, 0); return 0; }
SEC("fentry/bpf_map_put")
int BPF_PROG(fe_bpf_map_put) { put_plain(); return 0; }
SEC("fentry/bpf_map_put_with_uref")
int BPF_PROG(fe_bpf_map_put_with_uref) { put_enter(); return 0; }
SEC("fexit/bpf_map_put_with_uref")
int BPF_PROG(fx_bpf_map_put_with_uref) { put_exit(); return 0; }

SEC("kprobe/bpf_map_inc")
int BPF_KPROBE(kp_bpf_map_inc) { count(LC_KIND_INC, 0); return 0; }
SEC("kprobe/bpf_map_inc_with_uref")
int BPF_KPROBE(kp_bpf_map_inc_with_uref) { count(LC_KIND_INC, 0); return 0; }
SEC("kprobe/__bpf_map_inc_not_zero")
int BPF_KPROBE(kp___bpf_map_inc_not_zero) { count(LC_KIND_INC, 0); return 0; }
SEC("kprobe/bpf_map_inc_not_zero")
int BPF_KPROBE(kp_bpf_map_inc_not_zero) { count(LC_KIND_INC, 0); return 0; }
SEC("kprobe/bpf_map_put")
int BPF_KPROBE(kp_bpf_map_put) { put_plain(); return 0; }
SEC("kprobe/bpf_map_put_with_uref")
int BPF_KPROBE(kp_bpf_map_put_with_uref) { put_enter(); return 0; }
SEC("kretprobe/bpf_map_put_with_uref")
int BPF_KRETPROBE(kr_bpf_map_put_with_uref) { put_exit(); return 0; }

/* ---- map destruction: the work function that frees every map ---- */

/* bpf_map_free_deferred(struct work_struct *work) runs exactly once per map
 * (its address is taken for INIT_WORK, so it is never inlined); the id is
 * already 0 there, so the map is keyed by its address, which the census and
 * the creation record both carry. */
static __always_inline void on_map_free(void *work)
{
	__u64 map = (__u64)work - bpf_core_field_offset(struct bpf_map, work);
	__u64 now = bpf_ktime_get_boot_ns();

	bpf_map_update_elem(&freed, &map, &now, BPF_ANY);
}

SEC("fentry/bpf_map_free_deferred")
int BPF_PROG(fe_map_free_deferred, struct work_struct *work)
{
	on_map_free(work);
	return 0;
}

SEC("kprobe/bpf_map_free_deferred")
int BPF_KPROBE(kp_map_free_deferred, struct work_struct *work)
{
	on_map_free(work);
	return 0;
}
