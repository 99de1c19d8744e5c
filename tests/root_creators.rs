//! Root tests of map creators on the running kernel: maps created from a
//! memory cgroup named like a kubelet pod/container carry that container and
//! pod; removing the cgroup flags them creator_gone; the per-creator
//! aggregates are exact.
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use bpfmap_exporter::census::creators::identity;
use bpfmap_exporter::census::{Census, CensusOpts, Creator};
use common::*;

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Create a pinned hash map from a shell moved into `cgroup` first.
fn create_in(cgroup: &Path, pin: &Path, name: &str) {
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec bpftool map create '{}' type hash key 4 value 4 entries 64 name {name}",
        cgroup.display(),
        pin.display()
    );
    let st = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(
        st.success(),
        "creating map {name} from {}",
        cgroup.display()
    );
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn maps_carry_their_creating_container_and_pod_then_outlive_it() {
    require_root();
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (major, minor) = kernel_version();
    assert_eq!(
        census.features().map_memcg,
        kernel_at_least(5, 11),
        "memcg accounting of maps on kernel {major}.{minor} (5.11+; CONFIG_MEMCG on every kernel we test)"
    );
    if !kernel_at_least(5, 11) {
        // The absence itself: no creator is recorded and none is published.
        let (s, _) = census.take(&[]);
        assert!(s.maps.iter().all(|m| m.creator == Creator::Unknown));
        assert!(!text(&s).contains("bpfmap_creator_maps"));
        return;
    }
    let ctr = random_hex(32);
    let cg = PodCgroup::new(&format!("bpfmap-test-{}", random_hex(4)), &ctr);
    let (uid, pod, ctr_dir) = (cg.uid.clone(), cg.pod.clone(), cg.ctr.clone());

    let fs = PrivateBpffs::new();
    let names = ["t_creator_a", "t_creator_b"];
    for n in names {
        create_in(&ctr_dir, &fs.path().join(n), n);
    }
    let s = until(&mut census, "both maps in the census", |s| {
        names.iter().all(|n| s.maps.iter().any(|m| m.name == *n))
    });
    let ours: Vec<_> = s
        .maps
        .iter()
        .filter(|m| names.contains(&m.name.as_str()))
        .collect();
    let ctr_ino = ino(&ctr_dir);
    for m in &ours {
        assert_eq!(m.creator, Creator::Live(ctr_ino), "map {} creator", m.name);
        let c = identity(&s, m).expect("creator known");
        assert_eq!(
            (c.container_id.as_str(), c.pod_uid.as_str(), c.gone),
            (ctr.as_str(), uid.as_str(), false),
            "map {} from {:?}",
            m.name,
            c.cgroup_path
        );
    }
    let bytes: u64 = ours.iter().map(|m| memlock_by_id(m.id)).sum();
    let t = text(&s);
    for line in [
        format!("bpfmap_creator_maps{{container_id=\"{ctr}\",pod_uid=\"{uid}\"}} 2"),
        format!(
            "bpfmap_creator_maps_memory_bytes{{container_id=\"{ctr}\",pod_uid=\"{uid}\"}} {bytes}"
        ),
    ] {
        assert!(t.contains(&line), "missing {line}");
    }
    for m in &ours {
        let line = format!(
            "bpfmap_map_creator_info{{id=\"{}\",cgroup_id=\"{ctr_ino}\",container_id=\"{ctr}\",pod_uid=\"{uid}\"}} 1",
            m.id
        );
        assert!(t.contains(&line), "missing {line}");
        assert!(!t.contains(&format!("bpfmap_map_creator_gone{{id=\"{}\"}}", m.id)));
    }
    // The exact node aggregate: every map in some creator series.
    let total: u64 = t
        .lines()
        .filter(|l| l.starts_with("bpfmap_creator_maps{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, s.maps.len() as u64);
    let gone_before = s.maps.iter().filter(|m| m.creator.is_gone()).count();

    // The container's cgroup is removed; the pinned maps live on, charged
    // to the pod's cgroup, and are flagged as having outlived their creator.
    std::fs::remove_dir(&ctr_dir).expect("rmdir the container cgroup");
    let pod_ino = ino(&pod);
    let ids: Vec<u32> = ours.iter().map(|m| m.id).collect();
    let s = until(&mut census, "creator gone", |s| {
        s.maps
            .iter()
            .filter(|m| ids.contains(&m.id))
            .all(|m| m.creator.is_gone())
    });
    let t = text(&s);
    for &id in &ids {
        let m = s.maps.iter().find(|m| m.id == id).unwrap();
        // 5.19+: the objcg is reparented to the pod; before, the map keeps
        // the removed cgroup itself.
        let want = if kernel_at_least(5, 19) {
            pod_ino
        } else {
            ctr_ino
        };
        assert_eq!(m.creator, Creator::Gone(want), "map {id}");
        assert!(t.contains(&format!("bpfmap_map_creator_gone{{id=\"{id}\"}} 1")));
    }
    let gone_now = s.maps.iter().filter(|m| m.creator.is_gone()).count();
    assert!(t.contains(&format!("bpfmap_maps_creator_gone {gone_now}")));
    assert!(gone_now >= gone_before + 2);
    // This census resolved the container while it lived: the maps are still
    // counted under it, not under the pod's cgroup they are charged to now.
    let line = format!("bpfmap_creator_maps{{container_id=\"{ctr}\",pod_uid=\"{uid}\"}} 2");
    assert!(t.contains(&line), "missing {line}");
    if kernel_at_least(5, 19) {
        // A census that never saw the container alive names what the
        // ancestor's path names: the pod.
        let mut fresh = Census::load(CensusOpts::default()).expect("census loads");
        let (s2, _) = fresh.take(&[]);
        let line = format!("bpfmap_creator_maps{{container_id=\"\",pod_uid=\"{uid}\"}} 2");
        assert!(text(&s2).contains(&line), "missing {line}");
    }

    // The maps are freed: no creator series of theirs remain.
    drop(fs);
    let s = until(&mut census, "maps freed", |s| {
        !s.maps.iter().any(|m| ids.contains(&m.id))
    });
    let t = text(&s);
    assert!(!t.contains(&uid), "series of the removed pod remain:\n{t}");
}
