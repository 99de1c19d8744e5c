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

/* Creations and log events the programs saw but could not count or
 * record (the `lost` per-CPU array, by index). */
#define LC_LOST_LOG_RING 0     /* --log.map-events ring buffer full */
#define LC_LOST_UNREADABLE 1   /* map create returned an fd whose map could
			        * not be read (closed and replaced by another
			        * thread first): not counted as created */
#define LC_LOST_ORIGIN_RING 2 /* origins ring buffer full: a stack not sent */
#define LC_LOST_N 3

/* Per-process counter key (the slots hash key). 40 bytes. */
struct count_key {
	__u64 cgroup_id;   /* cgroup v2 (unified) id */
	__u32 tgid;        /* 0 unless the pid label is on */
	__u16 kind;
	__u16 arg;
	char comm[LC_COMM_LEN];
	__u64 memcg_id;    /* kernfs id of the task's memory cgroup (the
			    * cgroup the census sees its maps charged to);
			    * 0 without the memory controller */
};

/* One map creation (record slot and --log.map-events event). 80 bytes. */
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
	__u64 memcg_id;    /* as in count_key */
};

/* Program load records: an array indexed by program id modulo LC_PROG_RING,
 * written at the exit of each BPF_PROG_LOAD that returned an fd. User space
 * reads the slot of each live program it has no loader for yet; a slot is
 * valid for an id when its `id` field equals it. */
#define LC_PROG_RING 8192

/* One program load. 56 bytes. */
struct load_rec {
	__u64 load_ns;     /* bpf_ktime_get_boot_ns() (CLOCK_BOOTTIME) */
	__u64 cgroup_id;   /* cgroup v2 (unified) id of the loading task */
	__u64 memcg_id;    /* as in count_key */
	__u32 id;          /* program id; 0 while the slot is being written */
	__u32 tgid;
	__u32 pid;
	__u32 pad;
	char comm[LC_COMM_LEN];
};

/* Origin records: the user stack of each bpf() call that created, loaded,
 * linked, pinned or opened an object (--collector.origins), sent through
 * the `origins` ring buffer. */
#define LC_STACK_DEPTH 48
/* (process, stack) pairs whose build ids were sent (origin_seen). */
#define LC_ORIGIN_SEEN 4096
#define LC_PATH_LEN 128

/* One origin. Frames are the raw user return addresses (ips, ips_len bytes
 * or a negative error) and, where the kernel resolved them, build id plus
 * file offset per frame (bids_len bytes, 0 when not asked). A record is
 * sent with the frames walked only: the bpf_stack_build_id entries start
 * right after the ips_len bytes of ips, and the record ends after them. */
struct origin_rec {
	__u64 ns;          /* bpf_ktime_get_boot_ns() */
	__u64 file_ptr;    /* the object's struct file (matched against the
			    * census's file records; never published) */
	__u32 tgid;
	__u32 pid;
	__u32 cmd;         /* enum bpf_cmd */
	__s32 fd;          /* the fd returned (OBJ_PIN: the fd pinned) */
	__u32 obj_id;      /* 0 when the file could not be read */
	__s32 obj_kind;    /* BPFMAP_OBJ_MAP, _PROG, _LINK; -1 unknown */
	__s32 ips_len;
	__s32 bids_len;
	char comm[LC_COMM_LEN];
	char path[LC_PATH_LEN]; /* OBJ_PIN, OBJ_GET: the pathname given */
	__u64 stack_hash;  /* of tgid, the process's start time and ips; 0
			    * when no frame was walked */
	__u64 ips[LC_STACK_DEPTH];
	struct bpf_stack_build_id bids[LC_STACK_DEPTH];
};

/* Keep in step with src/bpf/lifecycle/records.rs. */
_Static_assert(sizeof(struct count_key) == 40, "count_key layout");
_Static_assert(sizeof(struct create_rec) == 80, "create_rec layout");
_Static_assert(sizeof(struct load_rec) == 56, "load_rec layout");
_Static_assert(sizeof(struct origin_rec) == 200 + LC_STACK_DEPTH * 40, "origin_rec layout");

#endif
