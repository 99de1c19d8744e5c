//! Bytes from the kernel and the outside world as label values.

/// A comm (or any kernel name) as a label value: the bytes up to the first
/// NUL, escaped by [`label_bytes`].
pub fn comm_label(comm: &[u8]) -> String {
    let n = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    label_bytes(&comm[..n])
}

/// Bytes from the outside world (comms, paths) as a label value, reversibly:
/// valid UTF-8 is kept, a backslash becomes `\\`, and every byte that is not
/// part of valid UTF-8 becomes `\xNN` (lower-case hex). Distinct byte
/// strings give distinct values; the text writer then escapes the value as
/// usual (so `\xff` appears as `\\xff` in the exposition).
pub fn label_bytes(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for x in chunk.invalid() {
            let _ = write!(out, "\\x{x:02x}");
        }
    }
    out
}
