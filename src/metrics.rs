//! Building Prometheus metric families afresh on every scrape.
//!
//! Collectors push plain `(labels, value)` samples into a [`Families`] set; the
//! set turns them into `prometheus::proto::MetricFamily` values, which the
//! `prometheus` crate's `TextEncoder` renders (and escapes). No label hashing,
//! no state carried from one scrape to the next: a freed map's series vanish at
//! the next scrape because nobody emits them again.
use std::collections::BTreeMap;

use prometheus::proto::{Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// One sample: label pairs (in declaration order) and a value.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
enum Value {
    Simple(f64),
    Histogram {
        buckets: Vec<(f64, u64)>,
        count: u64,
        sum: f64,
    },
}

/// Samples are kept compact (labels and a value) and become protobuf
/// `Metric`s only family by family while encoding, so a scrape with 100k
/// series never holds 100k protobuf messages at once.
#[derive(Clone)]
struct Family {
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
    /// Gauge/counter samples already in the text format, written by
    /// [`RawSamples`] (per-map series: the bulk of a scrape) without a label
    /// vector or a `String` per label. Encoded after `samples`.
    raw: Vec<u8>,
    raw_n: usize,
    /// Raw text shared with a [`SeriesCache`] (reused from an earlier
    /// scrape, or kept for the next one). Encoded after `raw`.
    shared: Vec<bytes::Bytes>,
    shared_n: usize,
}

impl Family {
    fn len(&self) -> usize {
        self.samples.len() + self.raw_n + self.shared_n
    }

    /// Every sample with its labels (raw samples parsed back from the text).
    fn all_samples(self) -> impl Iterator<Item = (Labels, Value)> {
        let mut raw = parse_raw(&self.raw);
        for s in &self.shared {
            raw.extend(parse_raw(s));
        }
        self.samples.into_iter().chain(raw)
    }
}

/// The text of big raw families, kept from one scrape to the next with a
/// fingerprint of what it was written from: when the fingerprint is the same
/// (most per-map values do not change between scrapes), the text is served
/// again without being written. Fingerprints are 64-bit SipHash with keys
/// random per process, over exactly the values the text is written from.
#[derive(Default)]
pub struct SeriesCache {
    keys: std::collections::hash_map::RandomState,
    fams: std::collections::HashMap<&'static str, CachedText>,
    generation: u64,
    /// Families served from the cache / written afresh (for tests and logs).
    pub hits: u64,
    pub misses: u64,
}

struct CachedText {
    fingerprint: u64,
    text: bytes::Bytes,
    n: usize,
    generation: u64,
}

impl SeriesCache {
    /// A hasher for one fingerprint.
    pub fn hasher(&self) -> impl std::hash::Hasher {
        std::hash::BuildHasher::build_hasher(&self.keys)
    }

    /// Start a scrape: families not written or reused until [`SeriesCache::end`]
    /// are dropped then.
    pub fn begin(&mut self) {
        self.generation += 1;
    }

    pub fn end(&mut self) {
        let g = self.generation;
        self.fams.retain(|_, c| c.generation == g);
    }
}

/// Writes gauge or counter samples of one family straight in the text
/// format, escaping label values exactly as the `prometheus` crate does.
pub struct RawSamples<'a> {
    name: &'static str,
    buf: &'a mut Vec<u8>,
    n: &'a mut usize,
}

impl RawSamples<'_> {
    /// `name{id="<id>"`: the start of every per-map sample.
    fn open_id(&mut self, id: u32) {
        self.buf.extend_from_slice(self.name.as_bytes());
        self.buf.extend_from_slice(b"{id=\"");
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    }

    /// `name{id="<id>"} value` for an integer value (no float formatting;
    /// the same text the crate writes for |value| < 2^53, where an `f64`
    /// holds the integer exactly).
    pub fn id_int(&mut self, id: u32, value: i64) {
        self.open_id(id);
        self.buf.extend_from_slice(b"\"} ");
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.buf.push(b'\n');
        *self.n += 1;
    }

    /// `name{id="<id>",<key>="<val>"} value`
    pub fn id_and(&mut self, id: u32, key: &str, val: &str, value: f64) {
        self.open_id(id);
        self.buf.extend_from_slice(b"\",");
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"=\"");
        escape_label_value(self.buf, val);
        self.buf.extend_from_slice(b"\"}");
        write_value(self.buf, value);
        *self.n += 1;
    }

    /// `name{k="v",...} value`, labels in the given order.
    pub fn labels(&mut self, labels: &[(&str, &str)], value: f64) {
        write_labels(self.buf, self.name, labels.iter().copied());
        write_value(self.buf, value);
        *self.n += 1;
    }
}

/// A label name as `&'static str` (bounded: label names are few).
fn intern(k: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == k) {
        return n;
    }
    let n: &'static str = Box::leak(k.to_string().into_boxed_str());
    names.push(n);
    n
}

/// `# HELP` and `# TYPE` lines as the crate's text encoder writes them.
fn write_header(buf: &mut Vec<u8>, name: &str, help: &str, kind: MetricType) {
    if !help.is_empty() {
        buf.extend_from_slice(b"# HELP ");
        buf.extend_from_slice(name.as_bytes());
        buf.push(b' ');
        for &b in help.as_bytes() {
            match b {
                b'\\' => buf.extend_from_slice(b"\\\\"),
                b'\n' => buf.extend_from_slice(b"\\n"),
                _ => buf.push(b),
            }
        }
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"# TYPE ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(match kind {
        MetricType::COUNTER => b" counter\n".as_slice(),
        MetricType::GAUGE => b" gauge\n",
        MetricType::HISTOGRAM => b" histogram\n",
        MetricType::SUMMARY => b" summary\n",
        MetricType::UNTYPED => b" untyped\n",
    });
}

/// Parse raw sample lines back into labels and values (the `prometheus`
/// crate path: `into_proto`, used by tests and tools, not by scrapes).
fn parse_raw(raw: &[u8]) -> Vec<(Labels, Value)> {
    let text = std::str::from_utf8(raw).expect("raw samples are UTF-8");
    let mut out = Vec::new();
    for line in text.lines() {
        let (head, value) = line.rsplit_once(' ').expect("raw sample has a value");
        let value: f64 = value.parse().expect("raw sample value parses");
        let mut labels: Labels = Vec::new();
        if let Some(open) = head.find('{') {
            let mut rest = &head[open + 1..head.len() - 1];
            while !rest.is_empty() {
                let (k, after) = rest.split_once("=\"").expect("label key");
                let key = intern(k);
                let mut v = String::new();
                let mut chars = after.char_indices();
                let mut end = after.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => v.push('\n'),
                            Some(c) => v.push(c),
                            None => break,
                        },
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                labels.push((key, v));
                rest = after[end..].strip_prefix(',').unwrap_or(&after[end..]);
            }
        }
        out.push((labels, Value::Simple(value)));
    }
    out
}

/// An ordered set of families for one scrape.
#[derive(Default, Clone)]
pub struct Families {
    fams: BTreeMap<&'static str, Family>,
}

fn label_pairs(labels: Labels) -> Vec<LabelPair> {
    labels
        .into_iter()
        .map(|(k, v)| {
            let mut lp = LabelPair::default();
            lp.set_name(k.to_string());
            lp.set_value(v);
            lp
        })
        .collect()
}

fn to_metric(kind: MetricType, labels: Labels, v: Value) -> Metric {
    let mut m = Metric::default();
    m.set_label(label_pairs(labels));
    match (kind, v) {
        (MetricType::COUNTER, Value::Simple(x)) => {
            let mut c = Counter::default();
            c.set_value(x);
            m.set_counter(c);
        }
        (
            MetricType::HISTOGRAM,
            Value::Histogram {
                buckets,
                count,
                sum,
            },
        ) => {
            let mut h = Histogram::default();
            h.set_sample_count(count);
            h.set_sample_sum(sum);
            h.set_bucket(
                buckets
                    .iter()
                    .map(|&(ub, c)| {
                        let mut b = prometheus::proto::Bucket::default();
                        b.set_upper_bound(ub);
                        b.set_cumulative_count(c);
                        b
                    })
                    .collect(),
            );
            m.set_histogram(h);
        }
        (_, Value::Simple(x)) => {
            let mut g = Gauge::default();
            g.set_value(x);
            m.set_gauge(g);
        }
        (_, Value::Histogram { count, .. }) => {
            let mut g = Gauge::default();
            g.set_value(count as f64);
            m.set_gauge(g);
        }
    }
    m
}

fn to_family(name: &str, f: Family) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(name.to_string());
    mf.set_help(f.help.to_string());
    mf.set_field_type(f.kind);
    let kind = f.kind;
    mf.set_metric(
        f.all_samples()
            .map(|(l, v)| to_metric(kind, l, v))
            .collect(),
    );
    mf
}

impl Families {
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> &mut Family {
        let f = self.fams.entry(name).or_insert_with(|| Family {
            help,
            kind,
            samples: Vec::new(),
            raw: Vec::new(),
            raw_n: 0,
            shared: Vec::new(),
            shared_n: 0,
        });
        debug_assert_eq!(f.kind, kind, "metric {name} declared with two types");
        f
    }

    /// Declare a family so that its HELP/TYPE lines exist even with no samples.
    pub fn declare(&mut self, name: &'static str, help: &'static str, kind: MetricType) {
        self.family(name, help, kind);
    }

    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        self.family(name, help, MetricType::GAUGE)
            .samples
            .push((labels, Value::Simple(value)));
    }

    /// Raw samples of `name` written by `write`, or, when `cache` holds text
    /// for `name` written from the same `fingerprint`, that text again.
    /// Without a cache this is [`Families::raw_with_capacity`] plus `write`.
    #[allow(clippy::too_many_arguments)]
    pub fn raw_cached(
        &mut self,
        cache: Option<&mut SeriesCache>,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        fingerprint: u64,
        capacity: usize,
        write: impl FnOnce(&mut RawSamples<'_>),
    ) {
        let Some(cache) = cache else {
            let mut w = self.raw_with_capacity(name, help, kind, capacity);
            write(&mut w);
            return;
        };
        let generation = cache.generation;
        let (text, n) = match cache.fams.get_mut(name) {
            Some(c) if c.fingerprint == fingerprint => {
                c.generation = generation;
                cache.hits += 1;
                (c.text.clone(), c.n)
            }
            _ => {
                let mut buf = Vec::with_capacity(capacity);
                let mut n = 0;
                write(&mut RawSamples {
                    name,
                    buf: &mut buf,
                    n: &mut n,
                });
                let text = bytes::Bytes::from(buf);
                cache.misses += 1;
                cache.fams.insert(
                    name,
                    CachedText {
                        fingerprint,
                        text: text.clone(),
                        n,
                        generation,
                    },
                );
                (text, n)
            }
        };
        assert!(
            kind != MetricType::HISTOGRAM,
            "metric {name}: raw samples are gauges or counters"
        );
        let f = self.family(name, help, kind);
        f.shared.push(text);
        f.shared_n += n;
    }

    /// A writer for gauge or counter samples of `name` straight in the text
    /// format (the per-map families: tens of thousands of samples with no
    /// label vector per sample). They are encoded after the family's
    /// samples from [`Families::gauge`] / [`Families::counter`].
    pub fn raw(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
    ) -> RawSamples<'_> {
        self.raw_with_capacity(name, help, kind, 0)
    }

    /// [`Families::raw`] with room for `bytes` more bytes of samples reserved
    /// at once (no regrowth and copying of a multi-megabyte buffer; pages
    /// reserved but never written are not resident).
    pub fn raw_with_capacity(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        bytes: usize,
    ) -> RawSamples<'_> {
        assert!(
            kind != MetricType::HISTOGRAM,
            "metric {name}: raw samples are gauges or counters"
        );
        let f = self.family(name, help, kind);
        f.raw.reserve(bytes);
        RawSamples {
            name,
            buf: &mut f.raw,
            n: &mut f.raw_n,
        }
    }

    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        self.family(name, help, MetricType::COUNTER)
            .samples
            .push((labels, Value::Simple(value)));
    }

    /// A histogram from cumulative bucket counts (`upper bound -> count <= bound`).
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: Labels,
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        self.family(name, help, MetricType::HISTOGRAM)
            .samples
            .push((
                labels,
                Value::Histogram {
                    buckets: buckets.to_vec(),
                    count,
                    sum,
                },
            ));
    }

    /// Number of samples emitted so far (all families).
    pub fn len(&self) -> usize {
        self.fams.values().map(Family::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append another set (used to merge per-collector sets).
    pub fn extend(&mut self, other: Families) {
        for (name, f) in other.fams {
            let dst = self.family(name, f.help, f.kind);
            dst.samples.extend(f.samples);
            dst.raw.extend_from_slice(&f.raw);
            dst.raw_n += f.raw_n;
            dst.shared.extend(f.shared);
            dst.shared_n += f.shared_n;
        }
    }

    pub fn into_proto(self) -> Vec<MetricFamily> {
        // The text encoder rejects a family without samples, and a family
        // with nothing to report (no maps of that kind on this node) says
        // nothing anyway: leave it out.
        self.fams
            .into_iter()
            .filter(|(_, f)| f.len() > 0)
            .map(|(name, f)| to_family(name, f))
            .collect()
    }

    /// Encode in the text format, then `extra` families, as one buffer.
    pub fn encode_text(self, extra: &[MetricFamily]) -> anyhow::Result<Vec<u8>> {
        Ok(self.encode_chunks(extra)?.to_vec())
    }

    /// Encode in the text format, then `extra` families, as a list of
    /// chunks: each family's raw samples become a chunk as they are, with
    /// no copy, so a scrape holds the exposition once, not twice.
    ///
    /// Gauges and counters (all but histograms) take a direct path: the
    /// `prometheus` crate encodes each family's first sample (so its HELP and
    /// TYPE lines and escaping are the crate's own) and the remaining samples
    /// are written in the same form without building a protobuf message per
    /// sample, which dominated scrapes with 100k per-map series. Families of
    /// raw samples only get HELP and TYPE lines from [`write_header`]. The
    /// unit test `direct_path_is_byte_identical_to_the_crate` holds the two
    /// paths to byte equality, escaping and special values included.
    pub fn encode_chunks(self, extra: &[MetricFamily]) -> anyhow::Result<Exposition> {
        use prometheus::Encoder;
        let enc = prometheus::TextEncoder::new();
        let mut out = Exposition::default();
        let mut buf = Vec::with_capacity(64 * 1024);
        for (name, mut f) in self.fams {
            if f.len() == 0 {
                continue;
            }
            if f.kind == MetricType::HISTOGRAM {
                let mf = to_family(name, f);
                enc.encode(std::slice::from_ref(&mf), &mut buf)?;
                continue;
            }
            let raw = std::mem::take(&mut f.raw);
            let shared = std::mem::take(&mut f.shared);
            // `raw` and `shared` were taken: `f` holds only its labelled samples.
            f.raw_n = 0;
            f.shared_n = 0;
            if f.samples.is_empty() {
                write_header(&mut buf, name, f.help, f.kind);
            } else {
                // The crate writes HELP, TYPE and the first sample.
                let rest = f.samples.split_off(1);
                let mf = to_family(name, f);
                enc.encode(std::slice::from_ref(&mf), &mut buf)?;
                for (labels, v) in rest {
                    let Value::Simple(x) = v else {
                        anyhow::bail!(
                            "metric {name}: a histogram sample in a {:?} family",
                            mf.get_field_type()
                        );
                    };
                    write_labels(&mut buf, name, labels.iter().map(|(k, v)| (*k, v.as_str())));
                    write_value(&mut buf, x);
                }
            }
            if raw.len() >= 64 * 1024 {
                out.push(std::mem::take(&mut buf));
                out.push(raw);
            } else {
                buf.extend_from_slice(&raw);
            }
            for text in shared {
                out.push(std::mem::take(&mut buf));
                out.push_shared(text);
            }
        }
        enc.encode(extra, &mut buf)?;
        out.push(buf);
        Ok(out)
    }
}

/// An exposition in the text format, as chunks in order.
#[derive(Default, Debug, Clone)]
pub struct Exposition {
    chunks: Vec<bytes::Bytes>,
    len: usize,
}

impl Exposition {
    fn push(&mut self, chunk: Vec<u8>) {
        self.push_shared(chunk.into());
    }

    fn push_shared(&mut self, chunk: bytes::Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order (cheap clones of shared buffers).
    pub fn chunks(&self) -> &[bytes::Bytes] {
        &self.chunks
    }

    /// The whole exposition in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        v
    }
}

/// The start of a gauge or counter sample line, exactly as the crate's text
/// encoder writes it: `name{k="v",...}`, label values escaped (`\\`, `\"`,
/// `\n`).
fn write_labels<'a>(
    buf: &mut Vec<u8>,
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    buf.extend_from_slice(name.as_bytes());
    let mut sep = b'{';
    for (k, v) in labels {
        buf.push(sep);
        sep = b',';
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(b"=\"");
        escape_label_value(buf, v);
        buf.push(b'"');
    }
    if sep == b',' {
        buf.push(b'}');
    }
}

/// ` value\n`, the value in Rust's shortest `f64` form as the crate writes it.
fn write_value(buf: &mut Vec<u8>, value: f64) {
    use std::io::Write;
    buf.push(b' ');
    let int = value as i64; // saturating; NaN -> 0, which then differs
    if int as f64 == value && value.abs() < 1e15 && !(value == 0.0 && value.is_sign_negative()) {
        // Integral values print without a fraction in both forms; the
        // integer path is the cheap one.
        buf.extend_from_slice(itoa::Buffer::new().format(value as i64).as_bytes());
    } else {
        let _ = write!(buf, "{value}");
    }
    buf.push(b'\n');
}

fn escape_label_value(buf: &mut Vec<u8>, v: &str) {
    let bytes = v.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            b'\n' => b"\\n",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(esc);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// Render families in the Prometheus text exposition format.
pub fn encode_text(families: &[MetricFamily]) -> anyhow::Result<Vec<u8>> {
    use prometheus::Encoder;
    let mut buf = Vec::with_capacity(64 * 1024);
    prometheus::TextEncoder::new().encode(families, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_path_is_byte_identical_to_the_crate() {
        let mut f = Families::new();
        let odd = [
            "plain",
            "quo\"te",
            "back\\slash",
            "new\nline",
            "tab\tand\r",
            "ünïcødé ✓",
            "",
            "\\\"\n",
        ];
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            42.0,
            0.5,
            1e-9,
            123456789012345.0,
            1e15,
            1e16,
            1.5e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            u32::MAX as f64,
            i64::MAX as f64,
        ];
        for (i, v) in values.iter().enumerate() {
            for s in odd {
                f.gauge(
                    "t_gauge",
                    "A \\ help\nline",
                    vec![("id", i.to_string()), ("comm", s.to_string())],
                    *v,
                );
                f.counter("t_total", "counter", vec![("comm", s.to_string())], *v);
            }
            f.gauge("t_nolabels", "no labels", vec![], *v);
        }
        f.histogram(
            "t_seconds",
            "hist",
            vec![("map_type", "hash".into())],
            &[(0.1, 1), (1.0, 3)],
            4,
            2.5,
        );
        f.gauge("t_single", "one sample", vec![("a", "b".into())], 7.0);
        // Raw `id`-only samples, float values (special ones included).
        let by_id = |f: &mut Families, name, help, samples: Vec<(u32, f64)>| {
            let mut w = f.raw(name, help, MetricType::GAUGE);
            for (id, v) in samples {
                w.labels(&[("id", &id.to_string())], v);
            }
        };
        by_id(
            &mut f,
            "t_by_id",
            "by id",
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32 * 7919, *v))
                .collect(),
        );
        by_id(&mut f, "t_by_id", "by id", vec![(u32::MAX, 3.0)]);
        by_id(&mut f, "t_one_by_id", "by id", vec![(1, 1.0)]);
        by_id(&mut f, "t_no_help", "", vec![(2, 0.25)]);
        {
            let mut w = f.raw("t_raw", "raw \\ help\nline", MetricType::COUNTER);
            for (i, s) in odd.iter().enumerate() {
                w.labels(&[("mount", s), ("path", "/sys/fs/bpf/x")], values[i]);
                w.id_and(i as u32, "kind", s, values[values.len() - 1 - i]);
                w.labels(&[("id", &i.to_string())], values[i + 3]);
            }
            w.labels(&[], 5.0);
            for v in [
                0i64,
                1,
                -1,
                42,
                1 << 52,
                -(1 << 52),
                (1 << 53) - 1,
                999_999_999_999_999,
                1_000_000_000_000_000,
            ] {
                w.id_int(7, v);
            }
        }
        // Text shared with a cache, after labelled and raw samples.
        let mut cache = SeriesCache::default();
        for _ in 0..2 {
            cache.begin();
            f.raw_cached(
                Some(&mut cache),
                "t_cached",
                "cached",
                MetricType::GAUGE,
                42,
                0,
                |w| {
                    w.id_int(1, 5);
                    w.labels(&[("path", "quo\"te")], 0.5);
                },
            );
            cache.end();
        }
        assert_eq!((cache.hits, cache.misses), (1, 1));
        f.gauge("t_cached", "cached", vec![("id", "0".into())], 1.0);
        // Raw samples after labelled ones in the same family.
        f.gauge("t_mixed", "mixed", vec![("id", "1".into())], 1.0);
        f.gauge("t_mixed", "mixed", vec![("id", "2".into())], 2.0);
        by_id(&mut f, "t_mixed", "mixed", vec![(3, 3.0)]);
        let direct = String::from_utf8(f.clone().encode_text(&[]).unwrap()).unwrap();
        let crate_path = String::from_utf8(encode_text(&f.into_proto()).unwrap()).unwrap();
        assert_eq!(direct, crate_path);
        assert!(direct.contains("t_gauge{id=\"1\",comm=\"quo\\\"te\"} -0"));
        assert!(direct.contains("t_raw{id=\"1\",kind=\"quo\\\"te\"} "));
        assert!(direct.contains("# TYPE t_no_help gauge\nt_no_help{id=\"2\"} 0.25\n"));
        assert!(direct.contains("t_mixed{id=\"2\"} 2\nt_mixed{id=\"3\"} 3\n"));
        assert!(direct.contains("t_cached{id=\"0\"} 1\nt_cached{id=\"1\"} 5\nt_cached{path=\"quo\\\"te\"} 0.5\nt_cached{id=\"1\"} 5\n"));
    }
}
