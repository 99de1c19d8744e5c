//! Log setup: logfmt-style text (colour only when stderr is a terminal) or
//! JSON, one line per event whatever the event's fields hold: every control
//! byte from the outside world (comm, paths, pod names, libbpf messages) is
//! written as `\xNN`, except the newline that ends the line and, on a
//! terminal, complete colour sequences (`ESC [ digits/; m`).
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

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
    ]
    .iter()
    .any(|p| msg.contains(p))
        || (msg.contains("PROG LOAD LOG") && !statistics_only(msg));
    let e = !verifier && EXPECTED.load(Ordering::SeqCst) > 0;
    if e {
        DEMOTED.fetch_add(1, Ordering::Relaxed);
    }
    e
}

/// Whether a program's load log holds only the verifier's statistics
/// (`processed N insns ...`, `verification time`, `stack depth`): the
/// summary of a load that was refused before or after verification, with
/// no verifier complaint in it.
fn statistics_only(msg: &str) -> bool {
    let Some((_, log)) = msg.split_once("BEGIN PROG LOAD LOG --") else {
        return false;
    };
    let log = log.split("-- END PROG LOAD LOG").next().unwrap_or(log);
    log.lines().map(str::trim).all(|l| {
        l.is_empty()
            || l.starts_with("processed ")
            || l.starts_with("verification time ")
            || l.starts_with("stack depth ")
    })
}

/// libbpf warnings logged at debug as expected fallbacks so far.
pub fn demoted_warnings() -> u64 {
    DEMOTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Default of `--log.repeat-interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(300);

/// Most kinds of repeated warning tracked at once; past it a warning is
/// logged every time (the kinds are collector and part names, far fewer).
const MAX_KINDS: usize = 256;

/// A kind of repeated warning: (what, whose), both static names.
pub type Kind = (&'static str, &'static str);

/// Rate limits repeated warnings: the first of a kind is logged at once,
/// later ones at most once per interval with how many were held back in
/// between; when the condition ends, how many were held back since the
/// last line.
pub struct Repeats {
    every: Duration,
    seen: Mutex<HashMap<Kind, Seen>>,
}

struct Seen {
    last: Instant,
    held: u64,
}

impl Repeats {
    pub fn new(every: Duration) -> Repeats {
        Repeats {
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// A warning of `kind` at `now`: `Some(held back since the last line)`
    /// when it is to be logged, `None` when it is held back.
    pub fn warn(&self, kind: Kind, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let full = seen.len() >= MAX_KINDS;
        match seen.get_mut(&kind) {
            Some(s) if now.saturating_duration_since(s.last) < self.every => {
                s.held += 1;
                None
            }
            Some(s) => {
                let held = std::mem::take(&mut s.held);
                s.last = now;
                Some(held)
            }
            None => {
                if !full {
                    seen.insert(kind, Seen { last: now, held: 0 });
                }
                Some(0)
            }
        }
    }

    /// The condition of `kind` ended: `Some(held back since the last line)`
    /// if it had been warned about. The next warning of the kind is logged
    /// at once.
    pub fn ended(&self, kind: Kind) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.is_empty() {
            return None;
        }
        seen.remove(&kind).map(|s| s.held)
    }
}

static REPEATS: OnceLock<Repeats> = OnceLock::new();

fn repeats() -> &'static Repeats {
    REPEATS.get_or_init(|| Repeats::new(DEFAULT_REPEAT_INTERVAL))
}

/// Set the interval of repeated warnings (before the first one).
pub fn set_repeat_interval(every: Duration) {
    let _ = REPEATS.set(Repeats::new(every));
}

/// Log a repeated warning of `kind` through `log(held back since the last
/// line)`, or hold it back (see [`Repeats`]).
pub fn warn_repeated(kind: Kind, log: impl FnOnce(u64)) {
    if let Some(held) = repeats().warn(kind, Instant::now()) {
        log(held);
    }
}

/// The condition of `kind` ended: `log(held back since the last line)` if
/// it had been warned about.
pub fn repeat_ended(kind: Kind, log: impl FnOnce(u64)) {
    if let Some(held) = repeats().ended(kind) {
        log(held);
    }
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
    fn repeated_warnings_log_the_first_then_once_per_interval_with_a_count() {
        let r = Repeats::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let a = ("collector failed", "maps");
        let b = ("collector failed", "files");
        assert_eq!(r.warn(a, s(0)), Some(0));
        // Every 15 s scrape for 5 minutes: one line a minute, each with the
        // three held back since the previous one.
        let logged: Vec<Option<u64>> = (1..=20).map(|i| r.warn(a, s(15 * i))).collect();
        assert_eq!(logged.iter().flatten().count(), 5, "{logged:?}");
        assert!(logged.iter().flatten().all(|&n| n == 3), "{logged:?}");
        // Another kind is not held back by the first.
        assert_eq!(r.warn(b, s(301)), Some(0));
        assert_eq!(r.warn(a, s(302)), None);
        // The end reports what was held back, and the next one logs at once.
        assert_eq!(r.ended(a), Some(1));
        assert_eq!(r.ended(a), None);
        assert_eq!(r.warn(a, s(303)), Some(0));
        // Kinds past the bound are logged every time, never held back.
        let names: Vec<&'static str> = (0..MAX_KINDS + 5)
            .map(|i| &*Box::leak(format!("k{i}").into_boxed_str()))
            .collect();
        for n in &names {
            r.warn(("x", n), s(400));
        }
        let last = ("x", names[MAX_KINDS + 4]);
        assert_eq!(r.warn(last, s(401)), Some(0));
        assert_eq!(r.warn(last, s(402)), Some(0));
    }

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
        // A refused load's log with only the statistics: an expected
        // fallback, but never outside one.
        let stats = "prog 'count_elems': -- BEGIN PROG LOAD LOG --\nprocessed 0 insns (limit 1000000) \
                     max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n-- END PROG LOAD LOG --";
        assert!(expected_failures(|| libbpf_warning_expected(stats)));
        assert!(!libbpf_warning_expected(stats));
        assert!(!expected_failures(|| {
            libbpf_warning_expected(
            "-- BEGIN PROG LOAD LOG --\n0: R1=ctx\nprocessed 3 insns (limit 1000000)\n-- END PROG LOAD LOG --"
        )
        }));
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
