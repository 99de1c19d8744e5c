//! Metric families, built afresh on every scrape.
//!
//! Collectors push samples of the families declared in [`defs`] into a
//! [`Families`] set: labelled samples, or per-map samples written straight in
//! the text format ([`text`]). A freed map's series vanish at the next scrape
//! because nobody emits them again. The only state a scrape may carry to the
//! next is a renderer's [`SeriesCache`] ([`cache`]); [`proto`] is the
//! `prometheus` crate's model, for histograms and tools.
pub(crate) mod cache;
pub mod defs;
pub mod filter;
pub mod label;
pub(crate) mod proto;
pub(crate) mod text;

use std::collections::BTreeMap;

use prometheus::proto::MetricType;

pub use cache::SeriesCache;
#[cfg(any(test, feature = "testing"))]
pub use text::encode_text;
pub use text::{Exposition, RawSamples};

/// A metric family's definition: name, help and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
}

impl Def {
    pub const fn new(name: &'static str, help: &'static str, kind: MetricType) -> Def {
        Def { name, help, kind }
    }
}

/// One sample: label pairs (in declaration order) and a value.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
pub(crate) enum Value {
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
pub(crate) struct Family {
    pub(crate) help: &'static str,
    pub(crate) kind: MetricType,
    pub(crate) samples: Vec<(Labels, Value)>,
    /// Gauge/counter samples already in the text format, written by
    /// [`RawSamples`] (per-map series: the bulk of a scrape) without a label
    /// vector or a `String` per label. Encoded after `samples`.
    pub(crate) raw: Vec<u8>,
    pub(crate) raw_n: usize,
    /// Raw text shared with a [`SeriesCache`] (reused from an earlier
    /// scrape, or kept for the next one). Encoded after `raw`.
    pub(crate) shared: Vec<bytes::Bytes>,
    pub(crate) shared_n: usize,
}

impl Family {
    pub(crate) fn len(&self) -> usize {
        self.samples.len() + self.raw_n + self.shared_n
    }

    /// Every sample with its labels (raw samples parsed back from the text).
    pub(crate) fn all_samples(self) -> impl Iterator<Item = (Labels, Value)> {
        let mut raw = proto::parse_raw(&self.raw);
        for s in &self.shared {
            raw.extend(proto::parse_raw(s));
        }
        self.samples.into_iter().chain(raw)
    }
}

/// An ordered set of families for one scrape.
#[derive(Default, Clone)]
pub struct Families {
    pub(crate) fams: BTreeMap<&'static str, Family>,
}

impl Families {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn family(&mut self, def: &Def) -> &mut Family {
        let (name, help, kind) = (def.name, def.help, def.kind);
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
    pub fn declare(&mut self, def: &Def) {
        self.family(def);
    }

    pub fn gauge(&mut self, def: &Def, labels: Labels, value: f64) {
        debug_assert_eq!(def.kind, MetricType::GAUGE, "{} is not a gauge", def.name);
        self.family(def)
            .samples
            .push((labels, Value::Simple(value)));
    }

    /// A writer for gauge or counter samples of `name` straight in the text
    /// format (the per-map families: tens of thousands of samples with no
    /// label vector per sample). They are encoded after the family's
    /// samples from [`Families::gauge`] / [`Families::counter`].
    pub fn raw(&mut self, def: &Def) -> RawSamples<'_> {
        self.raw_with_capacity(def, 0)
    }

    /// [`Families::raw`] with room for `bytes` more bytes of samples reserved
    /// at once (no regrowth and copying of a multi-megabyte buffer; pages
    /// reserved but never written are not resident).
    pub fn raw_with_capacity(&mut self, def: &Def, bytes: usize) -> RawSamples<'_> {
        assert!(
            def.kind != MetricType::HISTOGRAM,
            "metric {}: raw samples are gauges or counters",
            def.name
        );
        let f = self.family(def);
        f.raw.reserve(bytes);
        RawSamples {
            name: def.name,
            buf: &mut f.raw,
            n: &mut f.raw_n,
        }
    }

    pub fn counter(&mut self, def: &Def, labels: Labels, value: f64) {
        debug_assert_eq!(
            def.kind,
            MetricType::COUNTER,
            "{} is not a counter",
            def.name
        );
        self.family(def)
            .samples
            .push((labels, Value::Simple(value)));
    }

    /// A histogram from cumulative bucket counts (`upper bound -> count <= bound`).
    pub fn histogram(
        &mut self,
        def: &Def,
        labels: Labels,
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        debug_assert_eq!(
            def.kind,
            MetricType::HISTOGRAM,
            "{} is not a histogram",
            def.name
        );
        self.family(def).samples.push((
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

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append another set (used to merge per-collector sets).
    pub fn extend(&mut self, other: Families) {
        for (name, f) in other.fams {
            let dst = self.family(&Def::new(name, f.help, f.kind));
            dst.samples.extend(f.samples);
            dst.raw.extend_from_slice(&f.raw);
            dst.raw_n += f.raw_n;
            dst.shared.extend(f.shared);
            dst.shared_n += f.shared_n;
        }
    }
}
