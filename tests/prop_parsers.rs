//! Property tests for every parser of outside input (mountinfo lines,
//! fdinfo, web config, iterator records; cgroup paths and pod-list JSON in
//! src/k8s/prop_tests.rs, their parsers being crate-private): any
//! input gives a value or an error, never a panic. Label escaping keeps the
//! exposition valid and distinct inputs distinct; log lines stay one line.
use bpfmap_exporter::bpf::census::records::{decode_files, decode_maps};
use bpfmap_exporter::bpf::lifecycle::records::{
    decode_count_key, decode_create_rec, decode_overflow, decode_slot,
};
use bpfmap_exporter::census::bpffs::parse_mountinfo;
use bpfmap_exporter::census::fdinfo::parse_fdinfo;
use bpfmap_exporter::census::names::{comm_label, label_bytes, unlabel_bytes};
use bpfmap_exporter::metrics::{Def, Families};
use bpfmap_exporter::web::config::File as WebFile;
use proptest::prelude::*;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Text made of the pieces these formats are built from, so that cases get
/// past the first check more often than random bytes would.
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
    fn mountinfo_never_panics(b in prop::collection::vec(any::<u8>(), 0..400),
                              s in shaped(&["36 35 98:0 / /sys/fs/bpf rw - bpf bpf rw\n", " - ", "bpf", "\\040", "\\", "\n", " "])) {
        let _ = parse_mountinfo(&lossy(&b));
        let _ = parse_mountinfo(&s);
    }

    #[test]
    fn fdinfo_never_panics(b in prop::collection::vec(any::<u8>(), 0..300),
                           s in shaped(&["map_id:\t", "memlock:\t", "map_type:\t", "prog_id:\t", "link_id:\t", "\n", "99999999999999999999999", "-1", "18446744073709551615"])) {
        let _ = parse_fdinfo(&lossy(&b));
        let _ = parse_fdinfo(&s);
    }

    #[test]
    fn web_config_never_panics(b in prop::collection::vec(any::<u8>(), 0..300),
                               s in shaped(&["tls_server_config:\n", "  cert_file: a\n", "  key_file: b\n", "  client_auth_type: ", "RequireAndVerifyClientCert", "  client_ca_file: c\n", "  min_version: TLS13\n", "  cipher_suites: [", "]\n", "basic_auth_users:\n", "  u: ", "$2y$10$", "http_server_config:\n", "  headers:\n", "    X-Frame-Options: deny\n", "rate_limit:\n", "- ", "{", "}", "\n", ": ", "&a ", "*a"])) {
        for text in [lossy(&b), s] {
            if let Ok(f) = WebFile::parse(&text) {
                match f.validate(std::path::Path::new("/etc/web")) {
                    Ok(_) => {}
                    // Errors name a field or the file.
                    Err(e) => prop_assert!(!e.is_empty()),
                }
            }
        }
    }

    #[test]
    fn iterator_records_never_panic(b in prop::collection::vec(any::<u8>(), 0..600), n in 0u32..64) {
        let _ = decode_maps(&b);
        let _ = decode_files(&b);
        let _ = decode_count_key(&b);
        let _ = decode_slot(&b, n);
        let _ = decode_overflow(&b);
        let _ = decode_create_rec(&b);
    }

    #[test]
    fn label_bytes_are_reversible_and_distinct(a in prop::collection::vec(any::<u8>(), 0..40),
                                               b in prop::collection::vec(any::<u8>(), 0..40)) {
        let (la, lb) = (label_bytes(&a), label_bytes(&b));
        prop_assert_eq!(unlabel_bytes(&la).unwrap(), a.clone());
        prop_assert_eq!(a == b, la == lb);
        // Comms stop at the first NUL.
        let cut: Vec<u8> = a.iter().copied().take_while(|c| *c != 0).collect();
        prop_assert_eq!(unlabel_bytes(&comm_label(&a)).unwrap(), cut);
    }

    #[test]
    fn exposition_stays_valid_for_any_label_bytes(comms in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..6)) {
        const D: Def = Def::new("bpfmap_prop_test", "Property test.", prometheus::proto::MetricType::GAUGE);
        let mut f = Families::new();
        let mut distinct = std::collections::BTreeSet::new();
        for (i, c) in comms.iter().enumerate() {
            if distinct.insert(c.clone()) {
                f.gauge(&D, vec![("comm", label_bytes(c))], i as f64);
            }
        }
        let text = String::from_utf8(f.encode_text(&[]).unwrap()).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        // One line per sample: no raw newline or quote breaks a line.
        prop_assert_eq!(samples.len(), distinct.len());
        let mut seen = std::collections::BTreeSet::new();
        for l in &samples {
            let v = l.strip_prefix("bpfmap_prop_test{comm=\"").unwrap();
            let end = v.rfind("\"} ").unwrap();
            // Undo the text format's escaping, then the label's.
            let mut val = String::new();
            let mut it = v[..end].chars();
            while let Some(c) = it.next() {
                if c == '\\' {
                    match it.next() {
                        Some('n') => val.push('\n'),
                        Some(x) => val.push(x),
                        None => prop_assert!(false, "dangling escape in {}", l),
                    }
                } else {
                    prop_assert!(c != '"' && c != '\n', "unescaped {:?} in {}", c, l);
                    val.push(c);
                }
            }
            prop_assert!(seen.insert(unlabel_bytes(&val).unwrap()));
        }
        prop_assert_eq!(seen, distinct);
    }

    #[test]
    fn log_lines_stay_one_line(b in prop::collection::vec(any::<u8>(), 0..200), sgr in any::<bool>()) {
        let mut out = Vec::new();
        bpfmap_exporter::logging::escape_line(&b, sgr, &mut out);
        prop_assert_eq!(out.iter().filter(|c| **c == b'\n').count(), 1);
        prop_assert_eq!(out.last(), Some(&b'\n'));
        for (i, c) in out[..out.len() - 1].iter().enumerate() {
            let ctl = *c < 0x20 || *c == 0x7f;
            // On a terminal, ESC survives only as the start of a colour sequence.
            prop_assert!(!ctl || (sgr && *c == 0x1b && out.get(i + 1) == Some(&b'[')), "control byte {:#x} in {:?}", c, out);
        }
    }
}
