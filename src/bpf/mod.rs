//! The kernel side of the exporter: every BPF skeleton ([`census`],
//! [`inflight`], [`lifecycle`]), the load path they share ([`load`]), iterator I/O
//! ([`iter`]) and record decoding ([`records`]). With `sys` (raw bpf()
//! commands) this is the only code that needs `unsafe`, and every use says
//! why it is sound in a `// SAFETY:` line.
pub mod census;
pub mod inflight;
pub(crate) mod iter;
pub mod lifecycle;
pub mod load;
pub mod netns;
pub mod query;
pub(crate) mod records;
pub mod uring;
