/* Structs shared by bpf/lifecycle.bpf.c and src/lifecycle/ (decoded field by
 * field, little endian, natural alignment, padded by hand). */
#ifndef BPFMAP_LIFECYCLE_H
#define BPFMAP_LIFECYCLE_H

#define LC_COMM_LEN 16

/* Creation records: an array indexed by map id modulo LC_RING. User space
 * reads the slots of new ids at each scrape; a slot is valid for an id when
 * its `id` field equals it (a newer id overwrites it after LC_RING creates). */
#define LC_RING 32768

/* Destruction times kept (LRU) until user space reads them. */
#define LC_FREED 16384

/* Counter slots (one per count_key seen; the slots hash gives a key's
 * index into the per-CPU counts array) and per-CPU cache entries. */
#define LC_SLOTS 16384
#define LC_CACHE 256

/* Counter kinds (count_key.kind). */
#define LC_KIND_CREATE 1   /* arg = map_type */
#define LC_KIND_SYSCALL 2  /* arg = cmd << 1 | (1 when the call failed) */
#define LC_KIND_INC 3      /* arg = 0 */
#define LC_KIND_DEC 4      /* arg = 0 */

/* Overflow counters (array) when every counter slot is taken:
 * index = kind * LC_ARGS + arg. */
#define LC_ARGS 256
#define LC_OVERFLOW_SLOTS (5 * LC_ARGS)

/* Per-process counter key (the slots hash key). 32 bytes. */
struct count_key {
	__u64 cgroup_id;
	__u32 tgid;        /* 0 unless the pid label is on */
	__u16 kind;
	__u16 arg;
	char comm[LC_COMM_LEN];
};

/* One map creation (record slot and --log.map-events event). 72 bytes. */
struct create_rec {
	__u64 create_ns;   /* bpf_ktime_get_boot_ns() (CLOCK_BOOTTIME) */
	__u64 cgroup_id;
	__u64 map_ptr;
	__u32 id;
	__u32 tgid;
	__u32 pid;
	__u32 map_type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
	char comm[LC_COMM_LEN];
};

/* Keep in step with src/bpf/lifecycle/records.rs. */
_Static_assert(sizeof(struct count_key) == 32, "count_key layout");
_Static_assert(sizeof(struct create_rec) == 72, "create_rec layout");

#endif
