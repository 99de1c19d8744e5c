//! Source layout rules that hold for the whole crate.
/// `unsafe` lives only in the kernel layer (`bpf/`) and the raw syscall
/// module (`sys.rs`), and every unsafe block or impl there says why it
/// is sound in a `// SAFETY:` comment just above it.
#[test]
fn unsafe_only_in_bpf_and_sys_each_with_a_safety_line() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![root.clone()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let allowed = rel.starts_with("bpf/") || rel == "sys.rs";
            let text = std::fs::read_to_string(&p).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                let code = l.split("//").next().unwrap_or("");
                let (block, imp) = (concat!("unsafe", " {"), concat!("unsafe", " impl"));
                if !(code.contains(block) || code.contains(imp)) {
                    continue;
                }
                seen += 1;
                assert!(
                    allowed,
                    "{rel}:{}: unsafe outside src/bpf/ and src/sys.rs",
                    i + 1
                );
                let above = &lines[i.saturating_sub(6)..=i];
                assert!(
                    above.iter().any(|a| a.contains("// SAFETY:")),
                    "{rel}:{}: unsafe without a // SAFETY: line above it",
                    i + 1
                );
            }
        }
    }
    assert!(
        seen > 0,
        "the scan found no unsafe at all: is it looking at src/?"
    );
}
