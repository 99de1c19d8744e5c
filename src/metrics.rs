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

struct Family {
    help: &'static str,
    kind: MetricType,
    metrics: Vec<Metric>,
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

impl Families {
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> &mut Family {
        let f = self.fams.entry(name).or_insert_with(|| Family {
            help,
            kind,
            metrics: Vec::new(),
        });
        debug_assert_eq!(f.kind, kind, "metric {name} declared with two types");
        f
    }

    /// Declare a family so that its HELP/TYPE lines exist even with no samples.
    pub fn declare(&mut self, name: &'static str, help: &'static str, kind: MetricType) {
        self.family(name, help, kind);
    }

    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        let mut m = Metric::default();
        m.set_label(label_pairs(labels));
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
        self.family(name, help, MetricType::GAUGE).metrics.push(m);
    }

    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        let mut m = Metric::default();
        m.set_label(label_pairs(labels));
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
        self.family(name, help, MetricType::COUNTER).metrics.push(m);
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
        let mut m = Metric::default();
        m.set_label(label_pairs(labels));
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
        self.family(name, help, MetricType::HISTOGRAM)
            .metrics
            .push(m);
    }

    /// Number of samples emitted so far (all families).
    pub fn len(&self) -> usize {
        self.fams.values().map(|f| f.metrics.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append another set (used to merge per-collector sets).
    pub fn extend(&mut self, other: Families) {
        for (name, f) in other.fams {
            let dst = self.family(name, f.help, f.kind);
            dst.metrics.extend(f.metrics);
        }
    }

    pub fn into_proto(self) -> Vec<MetricFamily> {
        self.fams
            .into_iter()
            .map(|(name, f)| {
                let mut mf = MetricFamily::default();
                mf.set_name(name.to_string());
                mf.set_help(f.help.to_string());
                mf.set_field_type(f.kind);
                mf.set_metric(f.metrics);
                mf
            })
            .collect()
    }
}

/// Render families in the Prometheus text exposition format.
pub fn encode_text(families: &[MetricFamily]) -> anyhow::Result<Vec<u8>> {
    use prometheus::Encoder;
    let mut buf = Vec::with_capacity(64 * 1024);
    prometheus::TextEncoder::new().encode(families, &mut buf)?;
    Ok(buf)
}
