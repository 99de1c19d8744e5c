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
struct Family {
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// An ordered set of families for one scrape.
#[derive(Default)]
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
        f.samples
            .into_iter()
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
        self.fams.values().map(|f| f.samples.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append another set (used to merge per-collector sets).
    pub fn extend(&mut self, other: Families) {
        for (name, f) in other.fams {
            let dst = self.family(name, f.help, f.kind);
            dst.samples.extend(f.samples);
        }
    }

    pub fn into_proto(self) -> Vec<MetricFamily> {
        // The text encoder rejects a family without samples, and a family
        // with nothing to report (no maps of that kind on this node) says
        // nothing anyway: leave it out.
        self.fams
            .into_iter()
            .filter(|(_, f)| !f.samples.is_empty())
            .map(|(name, f)| to_family(name, f))
            .collect()
    }

    /// Encode in the text format family by family (each family's protobuf
    /// messages live only while it is encoded), then `extra` families.
    /// `size_hint` pre-sizes the buffer (the previous scrape's length).
    pub fn encode_text(self, extra: &[MetricFamily], size_hint: usize) -> anyhow::Result<Vec<u8>> {
        use prometheus::Encoder;
        let enc = prometheus::TextEncoder::new();
        let mut buf = Vec::with_capacity(size_hint.max(64 * 1024));
        for (name, f) in self.fams {
            if f.samples.is_empty() {
                continue;
            }
            let mf = to_family(name, f);
            enc.encode(std::slice::from_ref(&mf), &mut buf)?;
        }
        enc.encode(extra, &mut buf)?;
        Ok(buf)
    }
}

/// Render families in the Prometheus text exposition format.
pub fn encode_text(families: &[MetricFamily]) -> anyhow::Result<Vec<u8>> {
    use prometheus::Encoder;
    let mut buf = Vec::with_capacity(64 * 1024);
    prometheus::TextEncoder::new().encode(families, &mut buf)?;
    Ok(buf)
}
