//! The renderer's state between scrapes: the text of big raw families with
//! a fingerprint of what each was written from. When a family's fingerprint
//! is the same as in the previous scrape, its text is served again without
//! being written.
use prometheus::proto::MetricType;

use super::text::RawSamples;
use super::{Def, Families};

/// The text of big raw families, kept from one scrape to the next with a
/// fingerprint of what it was written from: when the fingerprint is the same
/// (most per-map values do not change between scrapes), the text is served
/// again without being written. Fingerprints are 64-bit SipHash with keys
/// random per process, over exactly the values the text is written from.
#[derive(Default)]
pub struct SeriesCache {
    pub(crate) keys: std::collections::hash_map::RandomState,
    pub(crate) fams: std::collections::HashMap<&'static str, CachedText>,
    pub(crate) generation: u64,
    /// Families served from the cache / written afresh (for tests and logs).
    pub hits: u64,
    pub misses: u64,
}

pub(crate) struct CachedText {
    pub(crate) fingerprint: u64,
    pub(crate) text: bytes::Bytes,
    pub(crate) n: usize,
    pub(crate) generation: u64,
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

impl Families {
    /// Raw samples of `name` written by `write`, or, when `cache` holds text
    /// for `name` written from the same `fingerprint`, that text again.
    /// Without a cache this is [`Families::raw_with_capacity`] plus `write`.
    pub fn raw_cached(
        &mut self,
        cache: Option<&mut SeriesCache>,
        def: &Def,
        fingerprint: u64,
        capacity: usize,
        write: impl FnOnce(&mut RawSamples<'_>),
    ) {
        let (name, kind) = (def.name, def.kind);
        let Some(cache) = cache else {
            let mut w = self.raw_with_capacity(def, capacity);
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
        let f = self.family(def);
        f.shared.push(text);
        f.shared_n += n;
    }
}
