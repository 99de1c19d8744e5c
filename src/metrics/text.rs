//! The text exposition format, written directly: headers, label escaping and
//! values exactly as the `prometheus` crate's `TextEncoder` writes them, raw
//! per-map samples, and the chunked [`Exposition`]. The unit test
//! `direct_path_is_byte_identical_to_the_crate` holds this path to byte
//! equality with the crate's encoder.
use prometheus::proto::{MetricFamily, MetricType};

use super::proto::to_family;
use super::{Families, Value};

/// Writes gauge or counter samples of one family straight in the text
/// format, escaping label values exactly as the `prometheus` crate does.
pub struct RawSamples<'a> {
    pub(crate) name: &'static str,
    pub(crate) buf: &'a mut Vec<u8>,
    pub(crate) n: &'a mut usize,
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

impl Families {
    /// Encode in the text format, then `extra` families, as one buffer.
    #[cfg(any(test, feature = "testing"))]
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

    /// The chunks, in order (cheap clones of shared buffers).
    pub fn chunks(&self) -> &[bytes::Bytes] {
        &self.chunks
    }

    /// The whole exposition in one buffer.
    #[cfg(any(test, feature = "testing"))]
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
#[cfg(any(test, feature = "testing"))]
pub fn encode_text(families: &[MetricFamily]) -> anyhow::Result<Vec<u8>> {
    use prometheus::Encoder;
    let mut buf = Vec::with_capacity(64 * 1024);
    prometheus::TextEncoder::new().encode(families, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Def, SeriesCache};

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
                    &Def::new("t_gauge", "A \\ help\nline", MetricType::GAUGE),
                    vec![("id", i.to_string()), ("comm", s.to_string())],
                    *v,
                );
                f.counter(
                    &Def::new("t_total", "counter", MetricType::COUNTER),
                    vec![("comm", s.to_string())],
                    *v,
                );
            }
            f.gauge(
                &Def::new("t_nolabels", "no labels", MetricType::GAUGE),
                vec![],
                *v,
            );
        }
        f.histogram(
            &Def::new("t_seconds", "hist", MetricType::HISTOGRAM),
            vec![("map_type", "hash".into())],
            &[(0.1, 1), (1.0, 3)],
            4,
            2.5,
        );
        f.gauge(
            &Def::new("t_single", "one sample", MetricType::GAUGE),
            vec![("a", "b".into())],
            7.0,
        );
        // Raw `id`-only samples, float values (special ones included).
        let by_id = |f: &mut Families, name, help, samples: Vec<(u32, f64)>| {
            let mut w = f.raw(&Def::new(name, help, MetricType::GAUGE));
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
            let mut w = f.raw(&Def::new("t_raw", "raw \\ help\nline", MetricType::COUNTER));
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
                &Def::new("t_cached", "cached", MetricType::GAUGE),
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
        f.gauge(
            &Def::new("t_cached", "cached", MetricType::GAUGE),
            vec![("id", "0".into())],
            1.0,
        );
        // Raw samples after labelled ones in the same family.
        f.gauge(
            &Def::new("t_mixed", "mixed", MetricType::GAUGE),
            vec![("id", "1".into())],
            1.0,
        );
        f.gauge(
            &Def::new("t_mixed", "mixed", MetricType::GAUGE),
            vec![("id", "2".into())],
            2.0,
        );
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
