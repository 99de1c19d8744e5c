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
    /// Samples whose only label is `id` (per-map series: the bulk of a
    /// scrape), kept without a label vector. Encoded after `samples`.
    by_id: Vec<(u32, f64)>,
}

impl Family {
    fn len(&self) -> usize {
        self.samples.len() + self.by_id.len()
    }

    /// Every sample with its labels (by-id samples get their `id` label).
    fn all_samples(self) -> impl Iterator<Item = (Labels, Value)> {
        self.samples.into_iter().chain(
            self.by_id
                .into_iter()
                .map(|(id, v)| (vec![("id", id.to_string())], Value::Simple(v))),
        )
    }
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
            by_id: Vec::new(),
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

    /// Gauges whose only label is the map `id`, in bulk: the per-map
    /// families of a census (tens of thousands of samples) without a label
    /// vector per sample.
    pub fn gauges_by_id(
        &mut self,
        name: &'static str,
        help: &'static str,
        samples: Vec<(u32, f64)>,
    ) {
        let f = self.family(name, help, MetricType::GAUGE);
        if f.by_id.is_empty() {
            f.by_id = samples;
        } else {
            f.by_id.extend(samples);
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
            dst.by_id.extend(f.by_id);
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

    /// Encode in the text format, then `extra` families. `size_hint`
    /// pre-sizes the buffer (the previous scrape's length).
    ///
    /// Gauges and counters (all but histograms) take a direct path: the
    /// `prometheus` crate encodes each family's first sample (so its HELP and
    /// TYPE lines and escaping are the crate's own) and the remaining samples
    /// are written in the same form without building a protobuf message per
    /// sample, which dominated scrapes with 100k per-map series. The unit
    /// test `direct_path_is_byte_identical_to_the_crate` holds the two paths
    /// to byte equality, escaping and special values included.
    pub fn encode_text(self, extra: &[MetricFamily], size_hint: usize) -> anyhow::Result<Vec<u8>> {
        use prometheus::Encoder;
        let enc = prometheus::TextEncoder::new();
        let mut buf = Vec::with_capacity(size_hint.max(64 * 1024));
        for (name, mut f) in self.fams {
            if f.len() == 0 {
                continue;
            }
            if f.kind == MetricType::HISTOGRAM {
                let mf = to_family(name, f);
                enc.encode(std::slice::from_ref(&mf), &mut buf)?;
                continue;
            }
            // The crate writes HELP, TYPE and the first sample.
            let (rest, by_id) = if f.samples.is_empty() {
                (Vec::new(), f.by_id.split_off(1))
            } else {
                (f.samples.split_off(1), std::mem::take(&mut f.by_id))
            };
            let mf = to_family(name, f);
            enc.encode(std::slice::from_ref(&mf), &mut buf)?;
            for (labels, v) in rest {
                let Value::Simple(x) = v else {
                    anyhow::bail!(
                        "metric {name}: a histogram sample in a {:?} family",
                        mf.get_field_type()
                    );
                };
                write_labels(&mut buf, name, &labels);
                write_value(&mut buf, x);
            }
            for (id, x) in by_id {
                use std::io::Write;
                let _ = write!(buf, "{name}{{id=\"{id}\"}}");
                write_value(&mut buf, x);
            }
        }
        enc.encode(extra, &mut buf)?;
        Ok(buf)
    }
}

/// The start of a gauge or counter sample line, exactly as the crate's text
/// encoder writes it: `name{k="v",...}`, label values escaped (`\\`, `\"`,
/// `\n`).
fn write_labels(buf: &mut Vec<u8>, name: &str, labels: &Labels) {
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
    if !labels.is_empty() {
        buf.push(b'}');
    }
}

/// ` value\n`, the value in Rust's shortest `f64` form as the crate writes it.
fn write_value(buf: &mut Vec<u8>, value: f64) {
    use std::io::Write;
    buf.push(b' ');
    if value.fract() == 0.0 && value.abs() < 1e15 && !(value == 0.0 && value.is_sign_negative()) {
        // Integral values print without a fraction in both forms; the
        // integer path is the cheap one.
        let _ = write!(buf, "{}", value as i64);
    } else {
        let _ = write!(buf, "{value}");
    }
    buf.push(b'\n');
}

fn escape_label_value(buf: &mut Vec<u8>, v: &str) {
    for &b in v.as_bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\n' => buf.extend_from_slice(b"\\n"),
            _ => buf.push(b),
        }
    }
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
        f.gauges_by_id(
            "t_by_id",
            "by id",
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32 * 7919, *v))
                .collect(),
        );
        f.gauges_by_id("t_by_id", "by id", vec![(u32::MAX, 3.0)]);
        f.gauges_by_id("t_one_by_id", "by id", vec![(1, 1.0)]);
        let direct = String::from_utf8(f.clone().encode_text(&[], 0).unwrap()).unwrap();
        let crate_path = String::from_utf8(encode_text(&f.into_proto()).unwrap()).unwrap();
        assert_eq!(direct, crate_path);
        assert!(direct.contains("t_gauge{id=\"1\",comm=\"quo\\\"te\"} -0"));
    }
}
