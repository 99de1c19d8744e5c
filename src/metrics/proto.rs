//! The `prometheus` crate's protobuf model of families: the path for
//! histograms, the first sample of each labelled family, and
//! [`Families::into_proto`] for tests and tools. Raw text samples are parsed
//! back into labels for it; scrapes never take that path.
use prometheus::proto::{Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

use super::{Families, Family, Labels, Value};

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

/// Parse raw sample lines back into labels and values (the `prometheus`
/// crate path: `into_proto`, used by tests and tools, not by scrapes).
pub(crate) fn parse_raw(raw: &[u8]) -> Vec<(Labels, Value)> {
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

pub(crate) fn to_family(name: &str, f: Family) -> MetricFamily {
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
}
