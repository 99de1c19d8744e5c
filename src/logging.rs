//! Log setup: logfmt-style text (colour only when stderr is a terminal) or
//! JSON, one line per event whatever the event's fields hold: every control
//! byte from the outside world (comm, paths, pod names, libbpf messages) is
//! written as `\xNN`, except the newline that ends the line and, on a
//! terminal, complete colour sequences (`ESC [ digits/; m`).
use std::io::{IsTerminal, Write};

static EXPECTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static DEMOTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Run `f` while failures it causes in libbpf are expected fallbacks (load
/// attempts that are retried with fewer programs): libbpf's warnings are
/// logged at debug meanwhile. The caller logs the outcome.
pub fn expected_failures<T>(f: impl FnOnce() -> T) -> T {
    use std::sync::atomic::Ordering;
    EXPECTED.fetch_add(1, Ordering::SeqCst);
    let r = f();
    EXPECTED.fetch_sub(1, Ordering::SeqCst);
    r
}

/// Whether a libbpf warning now is an expected fallback (and count it).
/// Verifier rejections (EACCES, E2BIG and the verifier's log) are never
/// expected: they stay warnings.
pub fn libbpf_warning_expected(msg: &str) -> bool {
    use std::sync::atomic::Ordering;
    let verifier = [
        "-EACCES",
        "-E2BIG",
        "Permission denied",
        "Argument list too long",
        "PROG LOAD LOG",
    ]
    .iter()
    .any(|p| msg.contains(p));
    let e = !verifier && EXPECTED.load(Ordering::SeqCst) > 0;
    if e {
        DEMOTED.fetch_add(1, Ordering::Relaxed);
    }
    e
}

/// libbpf warnings logged at debug as expected fallbacks so far.
pub fn demoted_warnings() -> u64 {
    DEMOTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Escape `line` (one formatted event) into `out`.
pub fn escape_line(line: &[u8], keep_sgr: bool, out: &mut Vec<u8>) {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == 0x1b && keep_sgr {
            if let Some(n) = sgr_len(&body[i..]) {
                out.extend_from_slice(&body[i..i + n]);
                i += n;
                continue;
            }
        }
        if b < 0x20 || b == 0x7f {
            let _ = write!(out, "\\x{b:02x}");
        } else {
            out.push(b);
        }
        i += 1;
    }
    out.push(b'\n');
}

/// Length of a complete SGR sequence at the start of `s`.
fn sgr_len(s: &[u8]) -> Option<usize> {
    if s.len() < 3 || s[0] != 0x1b || s[1] != b'[' {
        return None;
    }
    let end = s[2..]
        .iter()
        .position(|c| !(c.is_ascii_digit() || *c == b';'))?
        + 2;
    (s[end] == b'm').then_some(end + 1)
}

/// stderr, escaping each event's line.
#[derive(Clone, Copy)]
pub struct Escaped {
    keep_sgr: bool,
}

pub struct EscapedWriter {
    keep_sgr: bool,
}

impl Write for EscapedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = Vec::with_capacity(buf.len() + 16);
        // A write is one formatted event; embedded newlines are escaped.
        escape_line(buf, self.keep_sgr, &mut out);
        std::io::stderr().lock().write_all(&out)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Escaped {
    type Writer = EscapedWriter;
    fn make_writer(&'a self) -> EscapedWriter {
        EscapedWriter {
            keep_sgr: self.keep_sgr,
        }
    }
}

/// Install the global subscriber. `level` was validated by the CLI.
pub fn init(level: &str, format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| {
        anyhow::anyhow!("--log.level {level:?}: {e}. Use error, warn, info, debug or trace")
    })?;
    let tty = std::io::stderr().is_terminal();
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        b.json()
            .with_ansi(false)
            .with_writer(Escaped { keep_sgr: false })
            .init();
    } else {
        b.with_ansi(tty)
            .with_writer(Escaped { keep_sgr: tty })
            .init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_expected_fallbacks_are_demoted() {
        let msg = "prog 'x': BPF program load failed: -EPERM";
        assert!(!libbpf_warning_expected(msg));
        assert!(expected_failures(|| libbpf_warning_expected(msg)));
        assert!(!expected_failures(|| libbpf_warning_expected(
            "prog 'x': BPF program load failed: -EACCES"
        )));
        assert!(!expected_failures(|| libbpf_warning_expected(
            "-- BEGIN PROG LOAD LOG --\nR1 invalid mem access\n-- END PROG LOAD LOG --"
        )));
    }

    fn esc(s: &[u8], sgr: bool) -> String {
        let mut v = Vec::new();
        escape_line(s, sgr, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn forged_lines_and_escapes_stay_on_one_line() {
        assert_eq!(
            esc(b"map created comm=x\nERROR fake\x1b[2\n", false),
            "map created comm=x\\x0aERROR fake\\x1b[2\n"
        );
        assert_eq!(
            esc(b"\x1b[31mred\x1b[0m x\x1b[2\n", true),
            "\x1b[31mred\x1b[0m x\\x1b[2\n"
        );
        assert_eq!(esc(b"\x1b[31mred\n", false), "\\x1b[31mred\n");
        assert_eq!(esc(b"tab\there\r\x7f", false), "tab\\x09here\\x0d\\x7f\n");
    }
}
