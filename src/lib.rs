//! bpfmap-exporter: a Prometheus exporter for BPF maps.
pub mod census;
pub mod cli;
pub mod collector;
pub mod exporter;
pub mod http;
pub mod k8s;
pub mod lifecycle;
pub mod metrics;
pub mod simulate;
pub mod sys;

pub mod skel {
    #![allow(clippy::all, missing_docs, non_camel_case_types, unused)]
    include!(concat!(env!("OUT_DIR"), "/census.skel.rs"));
}

pub mod lifecycle_skel {
    #![allow(clippy::all, missing_docs, non_camel_case_types, unused)]
    include!(concat!(env!("OUT_DIR"), "/lifecycle.skel.rs"));
}
