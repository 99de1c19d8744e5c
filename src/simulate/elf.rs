//! The smallest BPF object that holds maps: an ELF relocatable file (built
//! here, in memory, so no compiler and no raw bpf() call is needed) with one
//! socket filter that loads the addresses of a `.data` and a `.bss`
//! variable and returns 0. libbpf creates one array map per section
//! (`<object name, 8 bytes>.data`, `.bss`) and the program uses both, so
//! once the object is dropped the program alone keeps them alive.

const EM_BPF: u16 = 247;
const ET_REL: u16 = 1;
const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_NOBITS: u32 = 8;
const SHT_REL: u32 = 9;
const SHF_WRITE: u64 = 1;
const SHF_ALLOC: u64 = 2;
const SHF_EXECINSTR: u64 = 4;
const STB_GLOBAL: u8 = 1;
const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;
const R_BPF_64_64: u64 = 1;

/// One BPF instruction, in host byte order (the order the kernel reads).
fn insn(code: u8, dst: u8, src: u8, imm: i32) -> [u8; 8] {
    let regs = if cfg!(target_endian = "little") {
        (src << 4) | dst
    } else {
        (dst << 4) | src
    };
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = regs;
    b[4..].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// `r1 = &dval; r2 = &bval; r0 = 0; exit` (the two loads are 16-byte
/// BPF_LD_IMM64 that libbpf relocates to the maps' values).
fn program() -> Vec<u8> {
    let mut v = Vec::new();
    for dst in [1, 2] {
        v.extend(insn(0x18, dst, 0, 0));
        v.extend(insn(0, 0, 0, 0));
    }
    v.extend(insn(0xb7, 0, 0, 0)); // r0 = 0
    v.extend(insn(0x95, 0, 0, 0)); // exit
    v
}

#[derive(Default)]
struct Strtab(Vec<u8>);

impl Strtab {
    fn add(&mut self, s: &str) -> u32 {
        if self.0.is_empty() {
            self.0.push(0);
        }
        let at = self.0.len() as u32;
        self.0.extend(s.as_bytes());
        self.0.push(0);
        at
    }
}

struct Section {
    name: u32,
    ty: u32,
    flags: u64,
    data: Vec<u8>,
    /// Size of a NOBITS section (no data in the file).
    nobits: u64,
    link: u32,
    info: u32,
    align: u64,
    entsize: u64,
}

fn sym(name: u32, ty: u8, shndx: u16, size: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(24);
    b.extend(name.to_ne_bytes());
    b.push((STB_GLOBAL << 4) | ty);
    b.push(0);
    b.extend(shndx.to_ne_bytes());
    b.extend(0u64.to_ne_bytes());
    b.extend(size.to_ne_bytes());
    b
}

fn rel(offset: u64, sym: u64) -> Vec<u8> {
    let mut b = offset.to_ne_bytes().to_vec();
    b.extend(((sym << 32) | R_BPF_64_64).to_ne_bytes());
    b
}

/// The object's bytes; `prog` names the program (at most 15 bytes of
/// `[A-Za-z0-9_]`).
pub(super) fn object(prog: &str) -> Vec<u8> {
    let mut shstr = Strtab::default();
    let mut str_ = Strtab::default();
    let code = program();
    // Section indexes (0 is the null section).
    const TEXT: u16 = 1;
    const DATA: u16 = 2;
    const BSS: u16 = 3;
    const SYMTAB: u32 = 5;
    const STRTAB: u32 = 6;
    let mut syms = vec![0u8; 24];
    syms.extend(sym(str_.add("dval"), STT_OBJECT, DATA, 8)); // symbol 1
    syms.extend(sym(str_.add("bval"), STT_OBJECT, BSS, 8)); // symbol 2
    syms.extend(sym(str_.add(prog), STT_FUNC, TEXT, code.len() as u64));
    let mut rels = rel(0, 1);
    rels.extend(rel(16, 2));
    let s = |name, ty, flags, data: Vec<u8>, align| Section {
        name,
        ty,
        flags,
        data,
        nobits: 0,
        link: 0,
        info: 0,
        align,
        entsize: 0,
    };
    let mut sections = vec![
        s(0, 0, 0, Vec::new(), 0),
        s(
            shstr.add("socket"),
            SHT_PROGBITS,
            SHF_ALLOC | SHF_EXECINSTR,
            code,
            8,
        ),
        s(
            shstr.add(".data"),
            SHT_PROGBITS,
            SHF_ALLOC | SHF_WRITE,
            vec![0; 8],
            8,
        ),
        Section {
            nobits: 8,
            ..s(
                shstr.add(".bss"),
                SHT_NOBITS,
                SHF_ALLOC | SHF_WRITE,
                Vec::new(),
                8,
            )
        },
        s(
            shstr.add("license"),
            SHT_PROGBITS,
            SHF_ALLOC | SHF_WRITE,
            b"GPL\0".to_vec(),
            1,
        ),
        Section {
            link: STRTAB,
            // Every symbol after the null one is global.
            info: 1,
            entsize: 24,
            ..s(shstr.add(".symtab"), SHT_SYMTAB, 0, syms, 8)
        },
        s(shstr.add(".strtab"), SHT_STRTAB, 0, Vec::new(), 1),
        Section {
            link: SYMTAB,
            info: TEXT as u32,
            entsize: 16,
            ..s(shstr.add(".relsocket"), SHT_REL, 0, rels, 8)
        },
    ];
    sections[STRTAB as usize].data = str_.0;
    let shstrndx = sections.len() as u16;
    let name = shstr.add(".shstrtab");
    sections.push(s(name, SHT_STRTAB, 0, shstr.0, 1));

    // Header, then each section's data (aligned), then the section headers.
    let mut out = vec![0u8; 64];
    let mut offsets = Vec::new();
    for sec in &sections {
        let align = sec.align.max(1) as usize;
        while out.len() % align != 0 {
            out.push(0);
        }
        offsets.push(out.len() as u64);
        out.extend(&sec.data);
    }
    while out.len() % 8 != 0 {
        out.push(0);
    }
    let shoff = out.len() as u64;
    for (sec, off) in sections.iter().zip(&offsets) {
        let size = if sec.ty == SHT_NOBITS {
            sec.nobits
        } else {
            sec.data.len() as u64
        };
        out.extend(sec.name.to_ne_bytes());
        out.extend(sec.ty.to_ne_bytes());
        out.extend(sec.flags.to_ne_bytes());
        out.extend(0u64.to_ne_bytes()); // sh_addr
        out.extend(if sec.ty == 0 { 0 } else { *off }.to_ne_bytes());
        out.extend(size.to_ne_bytes());
        out.extend(sec.link.to_ne_bytes());
        out.extend(sec.info.to_ne_bytes());
        out.extend(sec.align.to_ne_bytes());
        out.extend(sec.entsize.to_ne_bytes());
    }
    let h = &mut out[..64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = if cfg!(target_endian = "little") { 1 } else { 2 };
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&ET_REL.to_ne_bytes());
    h[18..20].copy_from_slice(&EM_BPF.to_ne_bytes());
    h[20..24].copy_from_slice(&1u32.to_ne_bytes());
    h[40..48].copy_from_slice(&shoff.to_ne_bytes());
    h[52..54].copy_from_slice(&64u16.to_ne_bytes()); // e_ehsize
    h[58..60].copy_from_slice(&64u16.to_ne_bytes()); // e_shentsize
    h[60..62].copy_from_slice(&(sections.len() as u16).to_ne_bytes());
    h[62..64].copy_from_slice(&shstrndx.to_ne_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_is_an_elf_with_its_sections_and_the_program() {
        let o = object("sim_oprog0");
        assert_eq!(&o[..4], b"\x7fELF");
        let shoff = u64::from_ne_bytes(o[40..48].try_into().unwrap()) as usize;
        let shnum = u16::from_ne_bytes(o[60..62].try_into().unwrap()) as usize;
        assert_eq!(o.len(), shoff + shnum * 64);
        let text = &program();
        assert_eq!(text.len(), 48);
        // Two BPF_LD_IMM64 (relocated by libbpf), r0 = 0, exit.
        let codes: Vec<u8> = text.chunks(8).map(|c| c[0]).collect();
        assert_eq!(codes, [0x18, 0, 0x18, 0, 0xb7, 0x95]);
        let find = |s: &[u8]| o.windows(s.len()).any(|w| w == s);
        for name in [
            "socket",
            ".data",
            ".bss",
            "license",
            ".relsocket",
            "sim_oprog0",
        ] {
            assert!(find(format!("\0{name}\0").as_bytes()), "{name}");
        }
    }
}
