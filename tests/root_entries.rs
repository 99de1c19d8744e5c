//! Root integration tests of element counts (`bpfmap_map_entries`) on the
//! running kernel: every map type with a variable element count reads its
//! exact count, by the kfunc where the kernel has it (6.6+) and by walks
//! elsewhere (the matrix runs this on 5.10, 6.1, 6.12 and the host; on the
//! host `--collector.entries.method=iterate` exercises the walks too); after
//! deletes the new count within the documented staleness; the walks' own
//! links and fds never show as holders; a budget too small for every walk
//! serves the rest from the cache with their age. Run with --test-threads=1.
mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use bpfmap_exporter::census::entries::{Budget, Choice, Method, State};
use bpfmap_exporter::census::{Census, CensusOpts, Snapshot};
use common::*;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

fn census(choice: Choice, budget: Duration) -> Census {
    Census::load(CensusOpts {
        entries_method: choice,
        entries_budget: Budget::Time(budget),
        ..Default::default()
    })
    .expect("census loads")
}

fn kfunc() -> bool {
    kernel_at_least(6, 6)
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

/// The kernels of the VM matrix (stock Debian), where iter/bpf_map_elem
/// loads; this host's kernel refuses it (EPERM, proven below).
fn elem_iter_expected() -> bool {
    let r = release();
    r.starts_with("5.10.") || r.starts_with("6.1.") || r.starts_with("6.12.")
}

/// Load an empty iter/bpf_map_elem program (r0 = 0; exit) outside the
/// census: Ok where the kernel accepts the iterator, its errno otherwise.
fn load_elem_iter_prog() -> Result<(), std::io::Error> {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new("bpf_map_elem").unwrap();
    // SAFETY: a NUL-terminated name; returns a BTF id or -errno.
    let btf_id = unsafe {
        libbpf_sys::libbpf_find_vmlinux_btf_id(name.as_ptr(), libbpf_sys::BPF_TRACE_ITER)
    };
    assert!(
        btf_id > 0,
        "bpf_iter_bpf_map_elem in the kernel BTF: {btf_id}"
    );
    let mut insns = [libbpf_sys::bpf_insn::default(); 2];
    insns[0].code = 0xb7; // r0 = 0
    insns[1].code = 0x95; // exit
    let mut opts = libbpf_sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
        expected_attach_type: libbpf_sys::BPF_TRACE_ITER,
        attach_btf_id: btf_id as u32,
        ..Default::default()
    };
    let lic = std::ffi::CString::new("GPL").unwrap();
    // SAFETY: insns, lic and opts outlive the call.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_TRACING,
            std::ptr::null(),
            lic.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a fresh fd we own (closed here).
    drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    Ok(())
}

#[test]
fn elem_iter_is_used_where_the_kernel_allows_it() {
    require_root();
    unlimit_memlock();
    let c = census(Choice::Auto, Duration::from_millis(50));
    let direct = load_elem_iter_prog();
    assert_eq!(
        c.features().elem_iter,
        direct.is_ok(),
        "the census uses iter/bpf_map_elem exactly where a direct load works ({direct:?})"
    );
    if elem_iter_expected() {
        assert!(
            direct.is_ok(),
            "iter/bpf_map_elem on {}: {direct:?}",
            release()
        );
    } else {
        // This host: the kernel refuses every iter/bpf_map_elem program,
        // even an empty one, with EPERM (walks fall back to GET_NEXT_KEY).
        assert_eq!(
            direct.unwrap_err().raw_os_error(),
            Some(libc::EPERM),
            "this host refuses iter/bpf_map_elem with EPERM"
        );
    }
}

/// The method expected for a map type on this kernel.
fn expected(t: MapType, choice: Choice) -> Method {
    let htab = matches!(
        t,
        MapType::Hash | MapType::PercpuHash | MapType::LruHash | MapType::LruPercpuHash
    );
    if kfunc() && choice == Choice::Auto && (htab || t == MapType::HashOfMaps) {
        Method::Kfunc
    } else if htab && elem_iter_expected() {
        Method::Iter
    } else {
        Method::NextKey
    }
}

fn insert(m: &MapHandle, key_size: u32, value_size: usize, keys: std::ops::Range<u32>) {
    for k in keys {
        let mut key = vec![0u8; key_size as usize];
        key[key_size as usize - 4..].copy_from_slice(&k.to_be_bytes());
        if key_size == 8 {
            // lpm_trie key: prefix length 32, then the address.
            key[..4].copy_from_slice(&32u32.to_ne_bytes());
        }
        m.update(&key, &vec![1u8; value_size], MapFlags::ANY)
            .unwrap_or_else(|e| panic!("insert {k}: {e}"));
    }
}

fn delete(m: &MapHandle, key_size: u32, keys: std::ops::Range<u32>) {
    for k in keys {
        let mut key = vec![0u8; key_size as usize];
        key[key_size as usize - 4..].copy_from_slice(&k.to_be_bytes());
        if key_size == 8 {
            key[..4].copy_from_slice(&32u32.to_ne_bytes());
        }
        m.delete(&key).unwrap_or_else(|e| panic!("delete {k}: {e}"));
    }
}

struct Case {
    t: MapType,
    map: MapHandle,
    key_size: u32,
    value_size: usize,
}

fn entries_of(s: &Snapshot, id: u32) -> (Option<i64>, Option<Method>, Option<State>) {
    let m = s.maps.iter().find(|m| m.id == id).expect("map in census");
    let i = s.entries.get(&id);
    (m.elem_count, i.map(|i| i.method), i.map(|i| i.state))
}

/// The count, method and freshness of every case, and the rendered
/// `bpfmap_map_entries` equal to the count.
fn assert_counts(s: &Snapshot, cases: &[Case], want: &[i64], choice: Choice) {
    let text = text(s);
    for (c, &n) in cases.iter().zip(want) {
        let id = id_of(&c.map);
        assert_eq!(
            entries_of(s, id),
            (Some(n), Some(expected(c.t, choice)), Some(State::Fresh)),
            "{:?} map {id} ({choice:?}) on {:?}",
            c.t,
            kernel_version()
        );
        assert!(
            text.contains(&format!("bpfmap_map_entries{{id=\"{id}\"}} {n}\n")),
            "{:?}: bpfmap_map_entries {n} rendered",
            c.t
        );
        let h = &s.holders[&id];
        assert_eq!(
            h.unexplained(s.maps.iter().find(|m| m.id == id).unwrap().refcnt),
            Some(0),
            "{:?}: the walks leave no reference behind",
            c.t
        );
    }
}

fn cases() -> Vec<Case> {
    let mk = |t, name, key, value, flags| Case {
        t,
        map: map(t, name, key, value, 1024, flags),
        key_size: key,
        value_size: value as usize,
    };
    let v = vec![
        mk(MapType::Hash, "e_hash", 4, 8, 0),
        mk(MapType::Hash, "e_hash_np", 4, 8, 1), // BPF_F_NO_PREALLOC
        mk(MapType::PercpuHash, "e_pcpu", 4, 8, 0),
        mk(MapType::LruHash, "e_lru", 4, 8, 0),
        mk(MapType::LruPercpuHash, "e_lru_pcpu", 4, 8, 0),
        mk(MapType::LpmTrie, "e_trie", 8, 8, 1), // tries must be NO_PREALLOC
    ];
    v
}

#[test]
fn element_counts_are_exact_on_every_kernel_then_follow_deletes() {
    require_root();
    unlimit_memlock();
    for choice in [Choice::Auto, Choice::Iterate] {
        let cases = cases();
        for c in &cases {
            let vs = c.value_size;
            if matches!(c.t, MapType::PercpuHash | MapType::LruPercpuHash) {
                // lookup/update of per-CPU maps take every CPU's value.
                insert_percpu(&c.map, 0..300);
            } else {
                insert(&c.map, c.key_size, vs, 0..300);
            }
        }
        // A hash of maps with 3 slots holding one inner array.
        let inner = map(MapType::Array, "e_inner", 4, 4, 1, 0);
        let outer_opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            inner_map_fd: inner.as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        let hom =
            MapHandle::create(MapType::HashOfMaps, Some("e_hom"), 4, 4, 16, &outer_opts).unwrap();
        for k in 0..3u32 {
            set_slot(&hom, k, &inner);
        }
        let hom_id = id_of(&hom);

        let fds_before = open_fds();
        let mut census = census(choice, Duration::from_secs(5));
        let (s, _) = census.take(&[]);
        assert!(s.maps_ok);
        assert_counts(&s, &cases, &[300; 6], choice);
        assert_eq!(
            entries_of(&s, hom_id),
            (
                Some(3),
                Some(expected(MapType::HashOfMaps, choice)),
                Some(State::Fresh)
            ),
            "hash_of_maps ({choice:?})"
        );
        // Arrays have no element count, on every kernel.
        assert_eq!(entries_of(&s, id_of(&inner)), (None, None, None));
        let summary = s.entries_summary.as_ref().expect("entries part ran");
        assert!(summary.spent <= summary.budget);

        // Deletes: the budget covers every walk, so the next scrape reads
        // the new counts (staleness 0, state fresh).
        for c in &cases {
            delete(&c.map, c.key_size, 0..120);
        }
        hom.delete(&1u32.to_ne_bytes()).unwrap();
        let (s, _) = census.take(&[]);
        assert_counts(&s, &cases, &[180; 6], choice);
        assert_eq!(entries_of(&s, hom_id).0, Some(2));
        drop(census);
        assert_eq!(
            open_fds(),
            fds_before,
            "the census keeps no fd ({choice:?})"
        );
    }
}

fn insert_percpu(m: &MapHandle, keys: std::ops::Range<u32>) {
    let cpus = libbpf_rs::num_possible_cpus().unwrap();
    for k in keys {
        m.update_percpu(&k.to_be_bytes(), &vec![vec![1u8; 8]; cpus], MapFlags::ANY)
            .unwrap_or_else(|e| panic!("insert {k}: {e}"));
    }
}

#[test]
fn a_small_budget_serves_the_rest_from_cache_with_their_age() {
    require_root();
    unlimit_memlock();
    let maps: Vec<MapHandle> = (0..300)
        .map(|i| {
            let m = map(MapType::Hash, &format!("e_b{i}"), 4, 8, 64, 0);
            insert(&m, 4, 8, 0..(i % 64));
            m
        })
        .collect();
    let ids: Vec<u32> = maps.iter().map(id_of).collect();
    let ours = |s: &Snapshot, st: State| {
        ids.iter()
            .filter(|id| s.entries.get(id).map(|i| i.state) == Some(st))
            .count()
    };
    // The budget is a quarter of what walking every map takes on this
    // machine, measured here with an unbounded budget: a fixed figure is
    // either too small for an emulated guest's single walk or large enough
    // for a fast host to walk everything.
    let (s, _) = census(Choice::Iterate, Duration::from_secs(60)).take(&[]);
    assert_eq!(
        ours(&s, State::Fresh),
        300,
        "an unbounded budget counts all"
    );
    let all = s.entries_summary.unwrap().spent;
    let budget = all / 4;
    let mut census = census(Choice::Iterate, budget);
    let (s, _) = census.take(&[]);
    let sum = s.entries_summary.clone().unwrap();
    let fresh = ours(&s, State::Fresh);
    assert!(
        fresh > 0,
        "some maps are counted within the budget: {sum:?}, first map {:?}",
        s.entries.get(&ids[0])
    );
    assert!(
        fresh < 300,
        "{budget:?} (a quarter of {all:?}) does not cover 300 walks ({fresh} counted)"
    );
    assert_eq!(ours(&s, State::Missing), 300 - fresh);
    assert!(sum.over_budget == 0, "{sum:?}");
    std::thread::sleep(Duration::from_millis(1100));
    // Later scrapes count the rest; counts from earlier scrapes are served
    // with their age, and every count is the map's.
    let mut saw_cached = false;
    for _ in 0..1000 {
        let (s, _) = census.take(&[]);
        for (i, id) in ids.iter().enumerate() {
            let Some(info) = s.entries.get(id) else {
                panic!("map {id} has no count info")
            };
            let m = s.maps.iter().find(|m| m.id == *id).unwrap();
            match info.state {
                State::Fresh => {
                    assert_eq!(info.age_seconds, Some(0.0));
                    assert_eq!(m.elem_count, Some((i % 64) as i64));
                }
                State::Cached => {
                    saw_cached = true;
                    assert!(info.age_seconds.unwrap() > 0.0);
                    assert_eq!(m.elem_count, Some((i % 64) as i64));
                }
                State::Missing => assert_eq!(m.elem_count, None),
            }
        }
        if ours(&s, State::Missing) == 0 && saw_cached {
            let text = text(&s);
            let old = ids
                .iter()
                .find(|id| s.entries[id].state == State::Cached)
                .unwrap();
            let age = s.entries[old].age_seconds.unwrap() as i64;
            assert!(
                text.contains(&format!(
                    "bpfmap_map_entries_age_seconds{{id=\"{old}\"}} {age}\n"
                )),
                "age published"
            );
            // The summary's oldest count is at least as old as every
            // cached count of ours (later scrapes may have re-counted
            // the ones the first scrape made, so their age can be below
            // the pause above).
            let oldest_ours = ids
                .iter()
                .filter(|id| s.entries[id].state == State::Cached)
                .filter_map(|id| s.entries[id].age_seconds)
                .fold(0.0f64, f64::max);
            let summary = s.entries_summary.unwrap();
            assert!(
                oldest_ours > 0.0 && summary.oldest_seconds >= oldest_ours,
                "summary oldest {} against our oldest cached {oldest_ours}",
                summary.oldest_seconds
            );
            return;
        }
    }
    panic!("1000 scrapes did not count 300 maps within {budget:?} each");
}

#[test]
fn walks_read_in_chunks_count_exactly_and_stop_at_the_budget() {
    require_root();
    unlimit_memlock();
    // 5,000 elements cross the walks' chunk boundaries (1,024 elements per
    // iter/bpf_map_elem record, 256 keys between GET_NEXT_KEY clock reads)
    // several times; each chunked walk still counts every element once.
    let m = map(MapType::Hash, "e_chunks", 4, 8, 8192, 0);
    fill_batch(&m, 5000);
    let id = id_of(&m);
    for choice in [Choice::Auto, Choice::Iterate] {
        let mut c = census(choice, Duration::from_secs(30));
        let (s, _) = c.take(&[]);
        assert_eq!(
            entries_of(&s, id),
            (
                Some(5000),
                Some(expected(MapType::Hash, choice)),
                Some(State::Fresh)
            ),
            "{choice:?}"
        );
    }
    // A walk far longer than the budget is stopped at its end: no count,
    // and the map is over budget while the budget is no larger.
    let big = map(MapType::Hash, "e_stopped", 4, 8, 131072, 0);
    fill_batch(&big, 100_000);
    let big_id = id_of(&big);
    let method = expected(MapType::Hash, Choice::Iterate);
    let mut c = census(Choice::Iterate, Duration::from_millis(1));
    let mut stopped = false;
    for _ in 0..3 {
        let (s, _) = c.take(&[]);
        let sum = s.entries_summary.clone().expect("entries part ran");
        assert_eq!(s.entries[&big_id].method, method);
        if sum.stopped_total > 0 {
            assert_eq!(
                entries_of(&s, big_id).0,
                None,
                "no count from a stopped walk"
            );
            let (s, _) = c.take(&[]);
            let sum = s.entries_summary.clone().unwrap();
            assert!(sum.over_budget >= 1, "{sum:?}");
            assert_eq!(s.entries[&big_id].state, State::Missing);
            assert!(
                text(&s).contains("bpfmap_map_entries_walks_stopped_total "),
                "the stopped walks are published"
            );
            stopped = true;
            break;
        }
    }
    assert!(
        stopped,
        "a {method:?} walk of 100,000 elements was never stopped at a 1 ms budget"
    );
}
