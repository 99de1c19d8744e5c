//! bpfmap-exporter: a Prometheus exporter for BPF maps.
pub mod api;
pub mod bpf;
pub mod census;
pub mod cli;
pub mod collector;
pub mod explain;
pub mod exporter;
pub mod exposition;
pub mod http;
pub mod k8s;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod simulate;
pub mod sys;
pub mod web;
