//! From a kernel origin record to a stored stack: normalization (build id
//! plus file offset per frame, through `/proc/<pid>/map_files`, so it works
//! across mount namespaces) at event time, with the mapped binaries opened
//! so they stay readable after the process exits or the file is deleted;
//! then symbolization from those open files (DWARF file:line where the
//! binary or its debug link has it, ELF symbols otherwise, demangled).
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blazesym::normalize::{NormalizeOpts, Normalizer, UserMeta};
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};

use super::store::{Frame, Stack, Symbol, Walk};
use crate::bpf::lifecycle::records::{KernelFrame, OriginRec, STACK_DEPTH};

/// A frame before symbolization: which opened binary can name it.
#[derive(Debug)]
pub struct Pending {
    pub frame: Frame,
    /// Index into [`Normalized::files`].
    pub file: Option<usize>,
}

/// One record's frames, normalized while the process lived (or from the
/// kernel's build ids when it did not), with its binaries held open.
#[derive(Debug)]
pub struct Normalized {
    pub frames: Vec<Pending>,
    pub files: Vec<File>,
    pub note: Option<String>,
    /// Frames the kernel walked (before any was dropped).
    pub walked: usize,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the kernel's build-id walk says of frame `i`, if anything.
fn kernel_frame(rec: &OriginRec, i: usize) -> Option<(String, u64)> {
    match rec.kernel_frames.as_ref().ok()?.get(i)? {
        KernelFrame::BuildId { build_id, offset } => Some((hex(build_id), *offset)),
        KernelFrame::Ip => None,
    }
}

/// Binaries that named frames before, by build id: a process that exited
/// before its maps were read is named from a binary of the same build id
/// (checked again before use).
#[derive(Default)]
pub struct BuildIdPaths {
    paths: HashMap<String, PathBuf>,
}

impl BuildIdPaths {
    const MAX: usize = 1024;

    fn learn(&mut self, build_id: &str, path: &Path) {
        if self.paths.len() >= Self::MAX && !self.paths.contains_key(build_id) {
            self.paths.clear();
        }
        self.paths.insert(build_id.to_string(), path.to_path_buf());
    }

    /// An open binary whose build id is `build_id`, from a path learned
    /// earlier.
    fn open(&self, build_id: &str) -> Option<File> {
        let p = self.paths.get(build_id)?;
        let f = File::open(p).ok()?;
        let fd_path = format!("/proc/self/fd/{}", f.as_raw_fd());
        let id = blazesym::helper::read_elf_build_id(&fd_path).ok()??;
        (hex(&id) == build_id).then_some(f)
    }
}

/// The path a `/proc/<pid>/map_files/<range>` link names (what the process
/// mapped, in its own mount namespace).
fn symbolic(map_file: &Path) -> Option<Arc<str>> {
    std::fs::read_link(map_file)
        .ok()
        .map(|p| Arc::from(p.to_string_lossy().as_ref()))
}

/// A mapped binary once opened: its index in [`Normalized::files`], its
/// path as the process saw it and its build id.
type Opened = (Option<usize>, Option<Arc<str>>, Option<Arc<str>>);

/// Normalize `rec`'s frames now, while its process may still live.
pub fn normalize(rec: &OriginRec, known: &mut BuildIdPaths) -> Normalized {
    let ips = match &rec.ips {
        Ok(v) => v.clone(),
        Err(e) => {
            return Normalized {
                frames: Vec::new(),
                files: Vec::new(),
                note: Some(format!("the capture returned no user stack (error {e})")),
                walked: 0,
            }
        }
    };
    let walked = ips.len();
    let normalizer = Normalizer::builder().enable_build_ids(true).build();
    let opts = NormalizeOpts {
        map_files: true,
        ..Default::default()
    };
    let mut out = Normalized {
        frames: Vec::new(),
        files: Vec::new(),
        note: None,
        walked,
    };
    match normalizer.normalize_user_addrs_opts(rec.tgid.into(), &ips, &opts) {
        Ok(n) => {
            // meta index -> (file index, symbolic path, build id)
            let mut opened: HashMap<usize, Opened> = HashMap::new();
            for (i, (offset, meta)) in n.outputs.iter().copied().enumerate() {
                let frame = match n.meta.get(meta) {
                    Some(UserMeta::Elf(elf)) => {
                        let (file, binary, build_id) = opened
                            .entry(meta)
                            .or_insert_with(|| {
                                let binary = symbolic(&elf.path);
                                let build_id: Option<Arc<str>> =
                                    elf.build_id.as_ref().map(|b| Arc::from(hex(b).as_str()));
                                let file = File::open(&elf.path).ok().map(|f| {
                                    out.files.push(f);
                                    out.files.len() - 1
                                });
                                if let (Some(b), Some(p)) = (&build_id, &binary) {
                                    let p = p.trim_end_matches(" (deleted)");
                                    known.learn(b, Path::new(p));
                                }
                                (file, binary, build_id)
                            })
                            .clone();
                        Pending {
                            frame: Frame {
                                build_id,
                                binary,
                                file_offset: Some(offset),
                                symbol: None,
                            },
                            file,
                        }
                    }
                    Some(UserMeta::Sym(sym)) => Pending {
                        frame: Frame {
                            build_id: None,
                            binary: sym
                                .module
                                .as_ref()
                                .map(|m| Arc::from(m.to_string_lossy().as_ref())),
                            file_offset: None,
                            symbol: Some(Symbol {
                                function: Arc::from(sym.name.as_ref()),
                                file: None,
                                line: None,
                            }),
                        },
                        file: None,
                    },
                    // Anonymous or JIT memory: no file; the kernel's walk
                    // may still name its build id.
                    _ => Pending {
                        frame: match kernel_frame(rec, i) {
                            Some((b, off)) => Frame {
                                build_id: Some(b.into()),
                                binary: None,
                                file_offset: Some(off),
                                symbol: None,
                            },
                            None => Frame::default(),
                        },
                        file: None,
                    },
                };
                out.frames.push(frame);
            }
            if out.frames.iter().any(|p| {
                p.frame.file_offset.is_some() && p.file.is_none() && p.frame.binary.is_some()
            }) {
                out.note = Some("a mapped binary could not be opened: its frames keep build id and file offset only".into());
            }
        }
        Err(_) => {
            // The process is gone (or its maps unreadable): what the kernel
            // resolved at the call is all there is.
            // The kernel's build-id walk follows the same frame records,
            // but past a record the walk in BPF stops at (a frame pointer of
            // 0 or misaligned) it reads what is not a frame.
            let kernel = rec
                .kernel_frames
                .as_ref()
                .map(Vec::len)
                .unwrap_or(0)
                .min(ips.len());
            if kernel == 0 {
                out.note = Some(
                    "the process exited before its memory map could be read, and the kernel gave no build ids: no frames kept"
                        .into(),
                );
                return out;
            }
            let mut unnamed = false;
            let mut by_id: HashMap<String, Option<usize>> = HashMap::new();
            for i in 0..kernel {
                let frame = match kernel_frame(rec, i) {
                    Some((b, off)) => {
                        let file = *by_id.entry(b.clone()).or_insert_with(|| {
                            known.open(&b).map(|f| {
                                out.files.push(f);
                                out.files.len() - 1
                            })
                        });
                        unnamed |= file.is_none();
                        Pending {
                            frame: Frame {
                                build_id: Some(b.into()),
                                binary: None,
                                file_offset: Some(off),
                                symbol: None,
                            },
                            file,
                        }
                    }
                    None => Pending {
                        frame: Frame::default(),
                        file: None,
                    },
                };
                out.frames.push(frame);
            }
            let unplaced = out
                .frames
                .iter()
                .filter(|p| p.frame.build_id.is_none())
                .count();
            out.note = Some(if unplaced == kernel {
                format!("the process exited before its memory map could be read, and the kernel found no GNU build id in its binaries (Go's linker writes none unless asked): its {kernel} frames cannot be placed")
            } else {
                let mut n = if unnamed {
                    "the process exited before its binaries could be read: frames keep the kernel's build id and file offset (symbolize them where that build is)".to_string()
                } else {
                    "the process exited before its memory map could be read: frames are the kernel's build id and file offset, named from a binary of the same build id".to_string()
                };
                if unplaced > 0 {
                    n.push_str(&format!(
                        "; {unplaced} frames in binaries without a GNU build id cannot be placed"
                    ));
                }
                n
            });
        }
    }
    out
}

/// Thread entry points: a walk whose outermost frames include one reached
/// the bottom of the stack.
const ENTRIES: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "__libc_start_main_impl",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "__clone_internal",
    "thread_start",
    "runtime.goexit",
    "runtime.goexit.abi0",
    "runtime.rt0_go",
    "runtime.rt0_go.abi0",
    "runtime.mstart",
    "runtime.mstart0",
    "runtime.mstart.abi0",
];

/// How a walk of `walked` frames ended, from the names of its outermost
/// frames. A walk is complete only when an entry point proves it; one
/// that filled the buffer was cut; one whose outermost frames are named
/// and are no entry point stopped at code without frame pointers.
pub fn walk_of(frames: &[Frame], walked: usize) -> Walk {
    let tail = &frames[frames.len().saturating_sub(3)..];
    if tail
        .iter()
        .filter_map(|f| f.symbol.as_ref())
        .any(|s| ENTRIES.contains(&s.function.as_ref()))
    {
        return Walk::Complete;
    }
    if walked >= STACK_DEPTH {
        return Walk::Truncated(format!(
            "deeper than {STACK_DEPTH} frames: the outermost were not captured"
        ));
    }
    match frames.last() {
        None => Walk::Unknown("no frames".into()),
        Some(f) if f.symbol.is_some() || walked <= 2 => Walk::Truncated(format!(
            "the frame-pointer walk stopped after {walked} frame{} without reaching a thread entry point: code on the path keeps no frame pointers",
            if walked == 1 { "" } else { "s" }
        )),
        Some(_) => Walk::Unknown(
            "the outermost frame has no name, so whether the walk reached a thread entry point is not known".into(),
        ),
    }
}

/// The stack of `n`: names looked up from its open binaries when
/// `symbolize`, frames left raw otherwise.
pub fn symbolize(n: Normalized, symbolize: bool) -> Stack {
    let Normalized {
        mut frames,
        files,
        note,
        walked,
    } = n;
    if symbolize && !files.is_empty() {
        let sym = Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(false)
            .enable_demangling(true)
            .build();
        for (fi, f) in files.iter().enumerate() {
            let idx: Vec<usize> = frames
                .iter()
                .enumerate()
                .filter(|(_, p)| p.file == Some(fi) && p.frame.file_offset.is_some())
                .map(|(i, _)| i)
                .collect();
            // Return addresses point after the call: look up the byte
            // before, inside the calling instruction.
            let offs: Vec<u64> = idx
                .iter()
                .map(|&i| frames[i].frame.file_offset.unwrap_or(0).saturating_sub(1))
                .collect();
            let src = Source::Elf(Elf::new(format!("/proc/self/fd/{}", f.as_raw_fd())));
            let Ok(res) = sym.symbolize(&src, Input::FileOffset(&offs)) else {
                continue;
            };
            for (&i, r) in idx.iter().zip(res) {
                if let Symbolized::Sym(s) = r {
                    let ci = s.code_info.as_deref();
                    frames[i].frame.symbol = Some(Symbol {
                        function: Arc::from(s.name.as_ref()),
                        file: ci.map(|c| Arc::from(c.file.to_string_lossy().as_ref())),
                        line: ci.and_then(|c| c.line),
                    });
                }
            }
        }
    }
    let unnamed = frames
        .iter()
        .filter(|p| p.file.is_some() && p.frame.symbol.is_none())
        .count();
    let note = match (symbolize && unnamed > 0, note) {
        (true, None) => Some(format!(
            "{unnamed} frame{} in readable binaries have no name (no symbol covers the address: a stripped binary?); their build id and file offset are kept",
            if unnamed == 1 { "" } else { "s" }
        )),
        (_, note) => note,
    };
    let frames: Vec<Frame> = frames.into_iter().map(|p| p.frame).collect();
    // Without names only the depth and a walk of one or two frames tell.
    let walk = if symbolize || walked >= STACK_DEPTH || (1..=2).contains(&walked) {
        walk_of(&frames, walked)
    } else {
        Walk::Unknown("names are not looked up (--collector.origins.symbolize=false)".into())
    };
    Stack {
        frames,
        walk,
        symbolized: symbolize,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(n: &str) -> Frame {
        Frame {
            build_id: None,
            binary: None,
            file_offset: Some(1),
            symbol: Some(Symbol {
                function: n.into(),
                file: None,
                line: None,
            }),
        }
    }

    fn raw() -> Frame {
        Frame {
            build_id: Some("ab".into()),
            binary: None,
            file_offset: Some(1),
            symbol: None,
        }
    }

    #[test]
    fn walks_are_complete_only_when_an_entry_point_proves_it() {
        let f = vec![
            named("syscall"),
            named("make_map"),
            named("main"),
            named("__libc_start_call_main"),
        ];
        assert_eq!(walk_of(&f, 4), Walk::Complete);
        let go = vec![
            named("syscall.Syscall"),
            named("main.main"),
            named("runtime.main"),
            named("runtime.goexit.abi0"),
        ];
        assert_eq!(walk_of(&go, 4), Walk::Complete);
        let short = vec![named("syscall"), named("make_map")];
        assert!(matches!(walk_of(&short, 2), Walk::Truncated(r) if r.contains("after 2 frames")));
        let deep: Vec<Frame> = (0..STACK_DEPTH).map(|_| named("f")).collect();
        assert!(matches!(walk_of(&deep, STACK_DEPTH), Walk::Truncated(r) if r.contains("deeper")));
        let unnamed = vec![raw(), raw(), raw()];
        assert!(matches!(walk_of(&unnamed, 3), Walk::Unknown(_)));
        assert!(matches!(walk_of(&[raw()], 1), Walk::Truncated(_)));
        assert!(matches!(walk_of(&[], 0), Walk::Unknown(_)));
    }

    /// A record of a process that is gone (no pid u32::MAX exists).
    fn gone(frames: Vec<KernelFrame>) -> OriginRec {
        OriginRec {
            ns: 0,
            file_ptr: 0,
            tgid: u32::MAX,
            pid: u32::MAX,
            cmd: 0,
            fd: 3,
            obj_id: 1,
            obj_kind: 0,
            comm: "gone".into(),
            path: String::new(),
            stack_hash: 1,
            ips: Ok(vec![0x40_1000; frames.len()]),
            kernel_frames: Ok(frames),
        }
    }

    #[test]
    fn frames_of_a_gone_process_without_build_ids_are_said_to_be_unplaceable() {
        let mut known = BuildIdPaths::default();
        let n = normalize(&gone(vec![KernelFrame::Ip; 3]), &mut known);
        assert_eq!(n.frames.len(), 3);
        assert!(n.frames.iter().all(|p| p.frame.build_id.is_none()));
        let note = n.note.unwrap();
        assert!(
            note.contains("no GNU build id") && note.contains("its 3 frames cannot be placed"),
            "{note}"
        );
        let mixed = vec![
            KernelFrame::BuildId {
                build_id: [0xab; 20],
                offset: 5,
            },
            KernelFrame::Ip,
        ];
        let n = normalize(&gone(mixed), &mut known);
        assert_eq!(
            n.frames[0].frame.build_id.as_deref(),
            Some("ab".repeat(20).as_str())
        );
        assert_eq!(n.frames[0].frame.file_offset, Some(5));
        let note = n.note.unwrap();
        assert!(
            note.starts_with("the process exited before its binaries could be read"),
            "{note}"
        );
        assert!(
            note.ends_with("; 1 frames in binaries without a GNU build id cannot be placed"),
            "{note}"
        );
    }
}
