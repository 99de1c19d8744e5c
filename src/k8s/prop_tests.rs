//! Property tests of the k8s parsers of outside input (cgroup paths,
//! /proc/<pid>/cgroup, pod-list JSON): any input gives a value or an error,
//! never a panic.
use proptest::prelude::*;

use super::cgroup::{parse_path, parse_proc_cgroup};
use super::pods::parse_pod_list;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn shaped(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(pieces).prop_map(str::to_string),
            "[ -~]{0,12}",
            any::<char>().prop_map(|c| c.to_string()),
        ],
        0..40,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn cgroup_paths_never_panic(b in prop::collection::vec(any::<u8>(), 0..300),
                                s in shaped(&["0::/", "/kubepods.slice/", "kubepods-burstable-pod", ".slice", "cri-containerd-", ".scope", "docker-", "/", "_", "-", "pod", "\n", "1:name=systemd:"])) {
        let _ = parse_path(&lossy(&b));
        let _ = parse_path(&s);
        let _ = parse_proc_cgroup(&lossy(&b));
        let _ = parse_proc_cgroup(&s);
    }

    #[test]
    fn pod_lists_never_panic(b in prop::collection::vec(any::<u8>(), 0..300),
                             s in shaped(&["{", "}", "[", "]", "\"kind\":\"PodList\"", "\"items\":", "\"metadata\":", "\"uid\":", "\"name\":", "\"namespace\":", ",", ":", "null", "1", "\""]),
                             max in 0usize..5) {
        let _ = parse_pod_list(&lossy(&b), max);
        if let Ok(m) = parse_pod_list(&s, max) {
            prop_assert!(m.len() <= max);
        }
    }

}
