/* Records the census iterators write with bpf_seq_write(). Shared with
 * src/bpf/census/records.rs, which decodes them field by field (little endian,
 * natural alignment, no implicit padding: every struct is padded by hand). */
#ifndef BPFMAP_CENSUS_H
#define BPFMAP_CENSUS_H

#define BPFMAP_NAME_LEN 16
#define BPFMAP_COMM_LEN 16

/* Creator memory cgroup of a map (map_rec.memcg_state). */
#define BPFMAP_MEMCG_UNKNOWN 0 /* no memcg accounting of maps (before 5.11, !CONFIG_MEMCG) */
#define BPFMAP_MEMCG_ROOT    1 /* charged to no cgroup: created from the root (host) */
#define BPFMAP_MEMCG_LIVE    2 /* charged to the creating cgroup, which still exists */
#define BPFMAP_MEMCG_GONE    3 /* creating cgroup removed: charged to an ancestor (memcg_id) */

/* Programs a sockmap or sockhash holds (map_rec.held_progs), by slot. */
#define BPFMAP_SOCKMAP_PROGS 4 /* msg_parser, stream_parser, stream_verdict, skb_verdict */

/* iter/bpf_map: one per live map. 136 bytes. */
struct map_rec {
	__u64 map_ptr;      /* kernel address: identity key for lifecycle joins */
	__s64 refcnt;       /* raw, includes the iterator cursor's own +1 */
	__s64 usercnt;
	__s64 elem_count;   /* bpf_map_sum_elem_count(), -1 where unavailable */
	__u64 map_extra;
	__u32 id;
	__u32 map_type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
	__u32 frozen;
	__u32 inner_meta;   /* 1 when the map is an outer map (has inner_map_meta) */
	char name[BPFMAP_NAME_LEN];
	__u64 memcg_id;     /* kernfs id of the memory cgroup charged (v1 memory or v2 hierarchy), 0 if none */
	__u32 memcg_state;  /* BPFMAP_MEMCG_* */
	__u32 pad;
	/* sockmap/sockhash: the ids of the programs attached to the map
	 * without a link (BPF_PROG_ATTACH), by slot; 0 for none. */
	__u32 held_progs[BPFMAP_SOCKMAP_PROGS];
	/* The link that attached each slot's program (sockmap links, 6.10+),
	 * 0 for BPF_PROG_ATTACH. The slot holds its own reference either way. */
	__u32 held_links[BPFMAP_SOCKMAP_PROGS];
};

/* The BPF object a file refers to (file_rec.obj_kind). */
#define BPFMAP_OBJ_MAP  0 /* anon inode "bpf-map" */
#define BPFMAP_OBJ_PROG 1 /* anon inode "bpf-prog" */
#define BPFMAP_OBJ_LINK 2 /* anon inode "bpf_link" */
#define BPFMAP_OBJ_RING 3 /* anon inode "[io_uring]": an io_uring's fd (map_id 0) */
#define BPFMAP_OBJ_PERF 4 /* anon inode "[perf_event]": a perf event with a program */

/* Program references a socket or perf event file keeps (file_rec.obj_kind
 * of attachment records; uring_rec.obj_kind of a registered file holding
 * one). map_id is the program's id, vm_start the kernel object holding the
 * reference (the perf_event, the sk_filter, the sock_reuseport group: one
 * reference each however many files reach it), attr the perf event's
 * attr.type or the socket's family | type << 16, vm_end a perf event's
 * attr.config, sock_ino BPFMAP_ATTACH_* flags. */
#define BPFMAP_OBJ_SOCK_FILTER 5 /* sk->sk_filter->prog (SO_ATTACH_BPF) */
#define BPFMAP_OBJ_REUSEPORT   6 /* sk->sk_reuseport_cb->prog (SO_ATTACH_REUSEPORT_EBPF) */
/* Copies no file reaches may exist: a perf event with inherited child events
 * (each holds the program too), a listening socket with unaccepted children
 * (each shares the sk_filter, and keeps it if the listener's changes). */
#define BPFMAP_ATTACH_UNSEEN 1

/* iter/task_file and iter/task_vma: one per map, program or link file seen
 * in an fd table (vmas: map files only), and (task_file, map_id 0) one per fd
 * of a socket whose inode user space asked for (the receivers of files in
 * flight). 80 bytes. */
struct file_rec {
	__u64 file_ptr;     /* struct file address: distinct files = distinct references */
	__u64 cgroup_id;    /* cgroup v2 (default hierarchy) kernfs id of the task */
	__u32 tgid;
	__u32 pid;
	__u32 fd;           /* fd number, or 0 for vma records */
	__u32 map_id;       /* the object's id (a map, program or link id, by obj_kind) */
	char comm[BPFMAP_COMM_LEN];
	__u64 vm_start;     /* vma records only: the mapped range [vm_start, vm_end) */
	__u64 vm_end;
	__u64 sock_ino;     /* socket-owner records (map_id 0): the socket's inode */
	__u32 obj_kind;     /* BPFMAP_OBJ_* */
	__u32 attr;         /* attachment records: see BPFMAP_OBJ_SOCK_FILTER */
};

/* iter/bpf_link (5.19+): one per live link. 112 bytes. */
#define BPFMAP_LINK_ATTACH_TYPE 1 /* attach_type is the kernel's (else unknown) */
#define BPFMAP_LINK_DEVICE      2 /* an xdp, tcx or netkit link: ifindex, netns_ino, name read */
#define BPFMAP_LINK_NETNS       4 /* a netns link: netns_ino read */
#define BPFMAP_LINK_TRAMPOLINE  8 /* a tracing link: target_obj_id, target_btf_id read */
#define BPFMAP_LINK_MAP        16 /* a struct_ops link: target_map_id read */
#define BPFMAP_LINK_NETFILTER  32 /* a netfilter link: nf_* read */
#define BPFMAP_LINK_DETACHED   64 /* its target pointer read NULL: the target is gone or it was detached */
#define BPFMAP_LINK_TP_NAME   128 /* a raw tracepoint link: name holds the tracepoint's name */
#define BPFMAP_LINK_CGROUP    256 /* a cgroup link: cgroup_id read (0 with DETACHED) */
#define BPFMAP_LINK_NAME_LEN   32
struct link_rec {
	__u32 id;
	__u32 type;         /* enum bpf_link_type */
	__u32 prog_id;      /* the program the link holds, 0 for none */
	__u32 iter_map_id;  /* an iterator link bound to a map: the map's id */
	__u32 tgt_prog_id;  /* a tracing link to a program (tgt_prog): its id, else 0 */
	__u32 attach_type;  /* enum bpf_attach_type, with BPFMAP_LINK_ATTACH_TYPE */
	__u64 cgroup_id;    /* cgroup links: the cgroup's kernfs id, else 0 */
	__u64 perf_event;   /* a perf event link: its struct perf_event, whose prog holds one more reference */
	__u32 target;       /* BPFMAP_LINK_* flags: which target fields were read */
	__u32 ifindex;      /* xdp, tcx, netkit: the device's ifindex */
	__u32 netns_ino;    /* the device's or the netns link's network namespace inode */
	__u32 target_obj_id; /* tracing: the trampoline key's object (a BTF object or program id) */
	__u32 target_btf_id; /* tracing: the attach point's BTF id in that object */
	__u32 target_map_id; /* struct_ops: the map the link registers */
	__u32 nf_pf;        /* netfilter: protocol family */
	__u32 nf_hooknum;
	__s32 nf_priority;
	__u32 nf_defrag;    /* netfilter: 1 when the link enabled defrag */
	char name[BPFMAP_LINK_NAME_LEN]; /* the device's name (IFNAMSIZ 16) or the raw tracepoint's */
};

/* The maps a program record lists at most: the kernel's MAX_USED_MAPS. */
#define BPFMAP_PROG_MAX_MAPS 64

/* iter/bpf_prog: one per live program. 336 bytes. */
struct prog_rec {
	__u64 prog_ptr;
	__s64 refcnt;       /* raw aux->refcnt, includes the iterator cursor's own +1 */
	__u64 load_time;    /* aux->load_time: CLOCK_BOOTTIME ns at load */
	__u64 pages;        /* prog->pages: fdinfo memlock is pages * PAGE_SIZE */
	__u32 id;
	__u32 prog_type;
	__u32 expected_attach_type;
	__u32 used_map_cnt; /* aux->used_map_cnt; map_ids holds the first BPFMAP_PROG_MAX_MAPS */
	__u8 tag[8];
	char name[BPFMAP_NAME_LEN];
	__u32 map_ids[BPFMAP_PROG_MAX_MAPS];
	__u32 dst_prog_id;  /* the program it was loaded against and still holds (aux->dst_prog), else 0 */
	__u32 pad;
};

/* iter/unix (bpf/inflight.bpf.c): one per map file or unix socket file held
 * by an SCM_RIGHTS message in a unix socket's receive queue, and one summary
 * record (file_ptr 0) per socket whose walk was cut short. 32 bytes. */
#define BPFMAP_INFLIGHT_TRUNCATED 1 /* more queued messages or files than walked */
/* A program reference in flight (file_ptr != 0, map_id the program id):
 * a program file (inner_ino 0), or a socket or perf event file keeping a
 * program (inner_ino the sk_filter, sock_reuseport or perf_event). */
#define BPFMAP_INFLIGHT_PROG        2
#define BPFMAP_INFLIGHT_SOCK_FILTER 4
#define BPFMAP_INFLIGHT_REUSEPORT   8
#define BPFMAP_INFLIGHT_PERF        16
#define BPFMAP_INFLIGHT_UNSEEN      32 /* see BPFMAP_ATTACH_UNSEEN */

struct inflight_rec {
	__u64 file_ptr;     /* the in-flight struct file */
	__u64 sock_ino;     /* inode of the socket whose queue holds it (0: a socket with no inode) */
	__u64 inner_ino;    /* unix socket files: that socket's inode; 0 for map files */
	__u32 map_id;       /* map files: the map id; 0 for socket files */
	__u32 flags;        /* BPFMAP_INFLIGHT_* */
};

/* iter/task_file (bpf/uring.bpf.c): one per map, program or link file in an
 * io_uring's registered-file table (IORING_REGISTER_FILES), seen through a
 * task holding the ring's fd, and one summary record per ring visit
 * (file_ptr 0, obj_kind carries BPFMAP_URING_* flags). 64 bytes. */
#define BPFMAP_URING_TRUNCATED 1 /* more slots than one walk reads */

struct uring_rec {
	__u64 ring_ptr;     /* struct io_ring_ctx: one ring however many fds share it */
	__u64 file_ptr;     /* the registered struct file; 0 for a summary */
	__u64 cgroup_id;    /* cgroup v2 id of the task holding the ring's fd */
	__u32 tgid;
	__u32 fd;           /* the ring's fd in that task */
	__u32 obj_id;
	__u32 obj_kind;     /* BPFMAP_OBJ_*; summaries: BPFMAP_URING_* flags */
	char comm[BPFMAP_COMM_LEN];
	__u32 slots;        /* summaries: the ring's table size */
	__u32 pad;
};

/* Keep in step with MAP_REC_SIZE / FILE_REC_SIZE / PROG_REC_SIZE / INFLIGHT_REC_SIZE / URING_REC_SIZE in src/bpf/census/records.rs. */
_Static_assert(sizeof(struct map_rec) == 136, "map_rec layout");
_Static_assert(sizeof(struct file_rec) == 80, "file_rec layout");
_Static_assert(sizeof(struct prog_rec) == 336, "prog_rec layout");
_Static_assert(sizeof(struct inflight_rec) == 32, "inflight_rec layout");
_Static_assert(sizeof(struct uring_rec) == 64, "uring_rec layout");
_Static_assert(sizeof(struct link_rec) == 112, "link_rec layout");

#endif
