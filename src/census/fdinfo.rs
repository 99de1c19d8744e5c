//! Parsing /proc/<pid>/fdinfo/<fd> of BPF objects.

/// What kind of BPF object an fd refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjKind {
    Map,
    Prog,
    Link,
    Unknown,
}

impl ObjKind {
    /// The `object_type` label value.
    pub fn label(self) -> &'static str {
        match self {
            ObjKind::Map => "map",
            ObjKind::Prog => "prog",
            ObjKind::Link => "link",
            ObjKind::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdInfo {
    pub kind: ObjKind,
    /// map_id / prog_id / link_id; 0 when the kernel does not print it.
    pub id: u32,
    /// `memlock:` (maps and programs): what the kernel accounts for the object.
    pub memlock: Option<u64>,
    pub map_type: Option<u32>,
}

pub fn parse_fdinfo(text: &str) -> FdInfo {
    let mut info = FdInfo {
        kind: ObjKind::Unknown,
        id: 0,
        memlock: None,
        map_type: None,
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "map_type" => {
                info.kind = ObjKind::Map;
                info.map_type = v.parse().ok();
            }
            "prog_type" => info.kind = ObjKind::Prog,
            "link_type" if info.kind == ObjKind::Unknown => info.kind = ObjKind::Link,
            "map_id" if info.kind == ObjKind::Map => info.id = v.parse().unwrap_or(0),
            "prog_id" if info.kind == ObjKind::Prog => info.id = v.parse().unwrap_or(0),
            "link_id" => {
                info.kind = ObjKind::Link;
                info.id = v.parse().unwrap_or(0)
            }
            "memlock" => info.memlock = v.parse().ok(),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_fdinfo() {
        let t = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t1\nkey_size:\t4\nvalue_size:\t8\nmax_entries:\t16\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t1472\nmap_id:\t31\nfrozen:\t0\n";
        assert_eq!(
            parse_fdinfo(t),
            FdInfo {
                kind: ObjKind::Map,
                id: 31,
                memlock: Some(1472),
                map_type: Some(1)
            }
        );
    }

    #[test]
    fn prog_fdinfo() {
        let t = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_jited:\t1\nprog_tag:\tabc\nmemlock:\t4096\nprog_id:\t77\nrun_time_ns:\t0\n";
        let i = parse_fdinfo(t);
        assert_eq!((i.kind, i.id), (ObjKind::Prog, 77));
    }

    #[test]
    fn link_fdinfo_mentions_prog_id_but_is_a_link() {
        let t = "pos:\t0\nlink_type:\titer\nlink_id:\t5\nprog_tag:\tabc\nprog_id:\t9\ntarget_name:\tbpf_map\n";
        let i = parse_fdinfo(t);
        assert_eq!((i.kind, i.id), (ObjKind::Link, 5));
    }

    #[test]
    fn garbage_is_unknown() {
        assert_eq!(parse_fdinfo("hello\n").kind, ObjKind::Unknown);
    }
}
