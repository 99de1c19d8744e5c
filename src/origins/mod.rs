//! Origins: the user stack that created each map, program and link, pinned
//! it, or took a file of it (`--collector.origins`).
//!
//! The lifecycle programs capture the calling thread's user stack at the
//! exit of each successful BPF_MAP_CREATE, BPF_PROG_LOAD, BPF_LINK_CREATE,
//! BPF_OBJ_PIN, BPF_OBJ_GET, BPF_MAP_GET_FD_BY_ID and BPF_PROG_GET_FD_BY_ID
//! (raw return addresses, plus build id and file offset per frame where
//! the kernel resolves them) and send it through the `origins` ring buffer.
//! One thread reads the ring and normalizes each record at once, while the
//! process may still live, opening the binaries it maps; a second thread
//! names the frames from those open files and stores the stack. Names
//! therefore survive the process's exit and the binary's deletion. Served
//! per object in `explain` and the JSON API, never as labels; runtime
//! addresses are never served.
pub mod resolve;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libbpf_rs::MapCore;

use serde_json::{json, Value};

use crate::bpf::lifecycle::records::{cmd_name, decode_origin_rec, OriginRec};
use crate::metrics::{defs, Families};
use store::{ObjKind, Record, Role, Store, Walk};

/// Default of `--collector.origins.max-stacks` (distinct stacks).
pub const DEFAULT_MAX_STACKS: usize = 900;
/// Records kept at most per distinct stack of the bound.
pub const RECORDS_PER_STACK: usize = 8;
/// Records kept per object: its creation and the newest pins and file takes.
pub const MAX_PER_OBJECT: usize = 8;
/// Frames shown per stack in `explain` text.
pub const TEXT_FRAMES: usize = 8;
/// Records waiting to be symbolized at most; more are dropped and counted.
const QUEUE: usize = 256;
/// How long the reader waits for a wake-up before it reads the ring (the
/// programs wake it only when the ring fills past half).
const POLL: Duration = Duration::from_millis(20);
/// (process, raw stack) pairs remembered with their normalized frames; as
/// many as the kernel remembers having sent build ids for.
const SEEN: usize = crate::bpf::lifecycle::records::ORIGIN_SEEN;

/// `--collector.origins*`.
#[derive(Debug, Clone)]
pub struct OriginsConfig {
    pub enabled: bool,
    pub symbolize: bool,
    /// Distinct stacks stored at most; records at most
    /// [`RECORDS_PER_STACK`] times as many.
    pub max_stacks: usize,
    /// Ask the kernel for build ids too (a process that exits before its
    /// maps are read keeps build id plus offset).
    pub build_id: bool,
}

impl Default for OriginsConfig {
    fn default() -> Self {
        OriginsConfig {
            enabled: false,
            symbolize: true,
            max_stacks: DEFAULT_MAX_STACKS,
            build_id: true,
        }
    }
}

#[derive(Default)]
struct Counters {
    /// Records received, by command (index = cmd, < 32).
    captures: [AtomicU64; 32],
    truncated_frame_pointers: AtomicU64,
    truncated_depth: AtomicU64,
    queue_full: AtomicU64,
    /// Records whose process was gone before its maps were read.
    process_gone: AtomicU64,
}

/// The store and its workers, shared by the lifecycle collector (metrics,
/// pruning) and the API (per-object origins).
pub struct Origins {
    store: Mutex<Store>,
    counters: Counters,
    stop: Arc<AtomicBool>,
    pub config: OriginsConfig,
    /// Objects with ids up to these existed before capture began.
    pub before: StartIds,
}

/// The highest map, program and link ids when capture began.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartIds {
    pub map: u32,
    pub prog: u32,
    pub link: u32,
}

impl std::fmt::Debug for Origins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origins")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Origins {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Job {
    rec: OriginRec,
    norm: resolve::Normalized,
}

impl Origins {
    /// A store with no workers (tests, and the pure parts).
    pub fn new(config: OriginsConfig, before: StartIds) -> Origins {
        Origins {
            store: Mutex::new(Store::new(
                config.max_stacks,
                config.max_stacks.saturating_mul(RECORDS_PER_STACK),
                MAX_PER_OBJECT,
            )),
            counters: Counters::default(),
            stop: Arc::new(AtomicBool::new(false)),
            config,
            before,
        }
    }

    /// Start reading `ring` (the `origins` ring buffer) on two threads;
    /// `generation` is the `origin_gen` map, bumped each time the reader
    /// forgets the stacks it normalized.
    pub fn start(
        config: OriginsConfig,
        ring: libbpf_rs::MapHandle,
        generation: libbpf_rs::MapHandle,
        before: StartIds,
    ) -> anyhow::Result<Arc<Origins>> {
        let o = Arc::new(Origins::new(config, before));
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let weak = Arc::downgrade(&o);
        let stop = o.stop.clone();
        std::thread::Builder::new()
            .name("origins-read".into())
            .spawn(move || read_ring(ring, generation, tx, weak, stop))?;
        let weak = Arc::downgrade(&o);
        std::thread::Builder::new()
            .name("origins-names".into())
            .spawn(move || name_stacks(rx, weak))?;
        Ok(o)
    }

    /// Store one normalized record: its stack shared with an identical
    /// one already stored, else named now.
    fn add(&self, job: Job) {
        let Job { rec, norm } = job;
        let (Some(role), Some(kind)) = (Role::of_cmd(rec.cmd), ObjKind::from_raw(rec.obj_kind))
        else {
            return;
        };
        if rec.obj_id == 0 {
            return;
        }
        let frames: Vec<store::Frame> = norm.frames.iter().map(|p| p.frame.clone()).collect();
        let known = self
            .store
            .lock()
            .expect("origins store lock")
            .find_stack(&frames);
        let stack = match known {
            Some(s) if s.note == norm.note => s,
            _ => Arc::new(resolve::symbolize(norm, self.config.symbolize)),
        };
        if let Walk::Truncated(r) = &stack.walk {
            if r.starts_with("deeper") {
                self.counters
                    .truncated_depth
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                self.counters
                    .truncated_frame_pointers
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let record = Record {
            cmd: rec.cmd,
            role,
            tgid: rec.tgid,
            pid: rec.pid,
            comm: rec.comm,
            ns: rec.ns,
            fd: rec.fd,
            file_ptr: rec.file_ptr,
            path: rec.path,
            stack,
        };
        self.store
            .lock()
            .expect("origins store lock")
            .insert((kind, rec.obj_id), record);
    }

    /// Forget the records of objects the census no longer has (only those
    /// recorded before the census began, `before_ns` CLOCK_BOOTTIME).
    pub fn prune(&self, kind: ObjKind, live: &dyn Fn(u32) -> bool, before_ns: u64) {
        self.store
            .lock()
            .expect("origins store lock")
            .prune(kind, live, before_ns);
    }

    /// The `bpfmap_origin*` families. `ring_full`: records the kernel
    /// could not send.
    pub fn emit(&self, out: &mut Families, ring_full: u64) {
        let c = &self.counters;
        for (cmd, n) in c.captures.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 || Role::of_cmd(cmd as u32).is_some() {
                out.counter(
                    &defs::ORIGIN_CAPTURES_TOTAL,
                    vec![("cmd", cmd_name(cmd as u32))],
                    n as f64,
                );
            }
        }
        for (reason, n) in [
            ("frame_pointers", &c.truncated_frame_pointers),
            ("depth", &c.truncated_depth),
        ] {
            out.counter(
                &defs::ORIGIN_STACKS_TRUNCATED_TOTAL,
                vec![("reason", reason.to_string())],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        for (reason, n) in [
            ("ring_full", ring_full),
            ("queue_full", c.queue_full.load(Ordering::Relaxed)),
        ] {
            out.counter(
                &defs::ORIGIN_RECORDS_LOST_TOTAL,
                vec![("reason", reason.to_string())],
                n as f64,
            );
        }
        out.counter(
            &defs::ORIGIN_PROCESS_GONE_TOTAL,
            vec![],
            c.process_gone.load(Ordering::Relaxed) as f64,
        );
        let s = self.store.lock().expect("origins store lock");
        out.counter(
            &defs::ORIGIN_STORE_EVICTIONS_TOTAL,
            vec![],
            s.counts.evicted as f64,
        );
        out.gauge(&defs::ORIGIN_STORE_RECORDS, vec![], s.records() as f64);
        out.gauge(&defs::ORIGIN_STORE_STACKS, vec![], s.stacks() as f64);
        out.gauge(&defs::ORIGIN_STORE_BYTES, vec![], s.bytes() as f64);
    }

    /// The `origin` object of an object of `kind` and `id`: its creation,
    /// pins and file takes. `boot_to_unix` turns CLOCK_BOOTTIME ns into
    /// Unix seconds; `now_unix` is for ages.
    pub fn object_json(&self, kind: ObjKind, id: u32, boot_to_unix: f64, now_unix: f64) -> Value {
        let s = self.store.lock().expect("origins store lock");
        let recs = s.of((kind, id));
        let one = |r: &Record| record_json(r, boot_to_unix, now_unix);
        let created = recs
            .iter()
            .find(|r| r.role == Role::Created)
            .map(|r| one(r));
        let before = match kind {
            ObjKind::Map => self.before.map,
            ObjKind::Prog => self.before.prog,
            ObjKind::Link => self.before.link,
        };
        let created_unknown = match &created {
            Some(_) => Value::Null,
            None if id <= before => json!("created before the exporter started"),
            None => json!(
                "no creation stack is stored: the call was not seen (a path the probes do not see), or its record was lost or evicted (bpfmap_origin_records_lost_total, bpfmap_origin_store_evictions_total)"
            ),
        };
        let pinned: Vec<Value> = recs
            .iter()
            .filter(|r| r.role == Role::Pinned)
            .map(|r| one(r))
            .collect();
        let files: Vec<Value> = recs
            .iter()
            .filter(|r| r.role == Role::FileTaken)
            .map(|r| one(r))
            .collect();
        json!({
            "created": created,
            "created_unknown": created_unknown,
            "pinned": pinned,
            "files_taken": files,
        })
    }

    /// The records of `kind`/`id` that took one of `file_ptrs` (a file
    /// holder's files: its creation or a later BPF_OBJ_GET / GET_FD_BY_ID).
    pub fn files_json(
        &self,
        kind: ObjKind,
        id: u32,
        file_ptrs: &[u64],
        boot_to_unix: f64,
        now_unix: f64,
    ) -> Vec<Value> {
        let s = self.store.lock().expect("origins store lock");
        s.of((kind, id))
            .iter()
            .filter(|r| {
                r.role != Role::Pinned && r.file_ptr != 0 && file_ptrs.contains(&r.file_ptr)
            })
            .map(|r| record_json(r, boot_to_unix, now_unix))
            .collect()
    }

    /// The records that pinned `kind`/`id` at a path ending in `path`
    /// (a pin's path within its bpffs mount).
    pub fn pins_json(
        &self,
        kind: ObjKind,
        id: u32,
        path: &str,
        boot_to_unix: f64,
        now_unix: f64,
    ) -> Vec<Value> {
        let s = self.store.lock().expect("origins store lock");
        let tail = path.trim_start_matches('/');
        s.of((kind, id))
            .iter()
            .filter(|r| r.role == Role::Pinned && !tail.is_empty() && r.path.ends_with(tail))
            .map(|r| record_json(r, boot_to_unix, now_unix))
            .collect()
    }
}

fn record_json(r: &Record, boot_to_unix: f64, now_unix: f64) -> Value {
    let unix = boot_to_unix + r.ns as f64 / 1e9;
    let st = &r.stack;
    let frames: Vec<Value> = st
        .frames
        .iter()
        .map(|f| {
            let sym = f.symbol.as_ref();
            json!({
                "function": sym.map(|s| s.function.as_ref()),
                "file": sym.and_then(|s| s.file.as_deref()),
                "line": sym.and_then(|s| s.line),
                "binary": f.binary.as_deref(),
                "build_id": f.build_id.as_deref(),
                "file_offset": f.file_offset,
            })
        })
        .collect();
    let (truncated, reason, walk_unknown) = match &st.walk {
        Walk::Complete => (json!(false), Value::Null, Value::Null),
        Walk::Truncated(r) => (json!(true), json!(r), Value::Null),
        Walk::Unknown(r) => (Value::Null, Value::Null, json!(r)),
    };
    json!({
        "command": cmd_name(r.cmd),
        "pid": r.tgid,
        "tid": r.pid,
        "comm": r.comm,
        "fd": r.fd,
        "path": (!r.path.is_empty()).then_some(r.path.as_str()),
        "unix_seconds": (unix * 1000.0).round() / 1000.0,
        "age_seconds": (now_unix - unix).max(0.0).round(),
        "stack": {
            "frames": frames,
            "truncated": truncated,
            "truncated_reason": reason,
            "completeness_unknown": walk_unknown,
            "symbolized": st.symbolized,
            "note": st.note,
        },
    })
}

/// The ring reader: normalizes each record at once and queues it.
fn read_ring(
    ring: libbpf_rs::MapHandle,
    generation: libbpf_rs::MapHandle,
    tx: SyncSender<Job>,
    origins: std::sync::Weak<Origins>,
    stop: Arc<AtomicBool>,
) {
    let known = std::cell::RefCell::new(resolve::BuildIdPaths::default());
    // (tgid, stack hash) -> its normalized frames and note: a process
    // repeating a call from one site is normalized once. The kernel sends
    // a pair's build ids only while it is in this cache's generation.
    type Seen = HashMap<(u32, u64), (Arc<[store::Frame]>, Option<String>)>;
    let seen: std::cell::RefCell<Seen> = Default::default();
    let gen = std::cell::Cell::new(0u32);
    let mut b = libbpf_rs::RingBufferBuilder::new();
    let cb_origins = origins.clone();
    let added = b.add(&ring, move |data: &[u8]| {
        let Ok(rec) = decode_origin_rec(data) else {
            return 0;
        };
        let Some(o) = cb_origins.upgrade() else {
            return 0;
        };
        if let Some(c) = o.counters.captures.get(rec.cmd as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let key = (rec.stack_hash != 0).then_some((rec.tgid, rec.stack_hash));
        let cached = key.and_then(|k| seen.borrow().get(&k).cloned());
        let norm = match cached {
            Some((frames, note)) => resolve::Normalized {
                walked: frames.len(),
                frames: frames
                    .iter()
                    .map(|frame| resolve::Pending {
                        frame: frame.clone(),
                        file: None,
                    })
                    .collect(),
                files: Vec::new(),
                note,
            },
            None => {
                let n = resolve::normalize(&rec, &mut known.borrow_mut());
                if n.note
                    .as_deref()
                    .is_some_and(|n| n.starts_with("the process exited"))
                {
                    o.counters.process_gone.fetch_add(1, Ordering::Relaxed);
                }
                let kernel_sent = rec.kernel_frames.as_ref().is_ok_and(|v| !v.is_empty());
                if let Some(k) = key.filter(|_| n.note.is_none() || kernel_sent) {
                    let mut seen = seen.borrow_mut();
                    if seen.len() >= SEEN {
                        seen.clear();
                        // The kernel sends build ids again for pairs sent
                        // before this.
                        gen.set(gen.get().wrapping_add(1));
                        let _ = generation.update(
                            &0u32.to_ne_bytes(),
                            &gen.get().to_ne_bytes(),
                            libbpf_rs::MapFlags::ANY,
                        );
                    }
                    let frames: Arc<[store::Frame]> =
                        n.frames.iter().map(|p| p.frame.clone()).collect();
                    seen.insert(k, (frames, n.note.clone()));
                }
                n
            }
        };
        match tx.try_send(Job { rec, norm }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                o.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
        0
    });
    if let Err(e) = added {
        tracing::warn!(error = %e, "origins ring buffer unreadable: no stacks are kept");
        return;
    }
    let rb = match b.build() {
        Ok(rb) => rb,
        Err(e) => {
            tracing::warn!(error = %e, "origins ring buffer unreadable: no stacks are kept");
            return;
        }
    };
    // The origins tests hold records in the ring this long before each
    // read, so a process can exit and its binary be deleted first.
    #[cfg(feature = "testing")]
    let stall = std::time::Duration::from_millis(
        std::env::var("BPFMAP_TEST_ORIGINS_READ_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    // The poll returns at a wake-up or after POLL; records sent without a
    // wake-up are not reported by it, hence the consume after it.
    while !stop.load(Ordering::Relaxed) && origins.strong_count() > 0 {
        #[cfg(feature = "testing")]
        std::thread::sleep(stall);
        if let Err(e) = rb.poll(POLL).and_then(|()| rb.consume()) {
            tracing::warn!(error = %e, "origins ring buffer read failed");
            std::thread::sleep(POLL);
        }
    }
}

/// The namer: symbolizes queued records and stores them.
fn name_stacks(rx: Receiver<Job>, origins: std::sync::Weak<Origins>) {
    while let Ok(job) = rx.recv() {
        let Some(o) = origins.upgrade() else {
            return;
        };
        o.add(job);
    }
}

#[cfg(any(test, feature = "testing"))]
impl Origins {
    /// Store a record as the workers would (tests and benchmarks).
    pub fn add_normalized(&self, rec: OriginRec, norm: resolve::Normalized) {
        self.add(Job { rec, norm });
    }

    /// (records, distinct stacks, bytes, evictions).
    pub fn store_stats(&self) -> (usize, usize, usize, u64) {
        let s = self.store.lock().expect("origins store lock");
        (s.records(), s.stacks(), s.bytes(), s.counts.evicted)
    }
}
