//! bpfmap-exporter: a Prometheus exporter for BPF maps.
pub mod bpf;
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
