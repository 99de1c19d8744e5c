//! Negotiated exposition formats other than the classic text (which has
//! its own fast path in `metrics`): protobuf through the `prometheus`
//! crate's delimited encoder, and OpenMetrics 1.0 text written from the
//! same protos.
use std::fmt::Write as _;

use prometheus::proto::{MetricFamily, MetricType};
use prometheus::Encoder;

use crate::http::Format;

pub fn encode(format: Format, families: &[MetricFamily]) -> anyhow::Result<Vec<u8>> {
    match format {
        Format::Protobuf => {
            let mut buf = Vec::new();
            prometheus::ProtobufEncoder::new().encode(families, &mut buf)?;
            Ok(buf)
        }
        Format::OpenMetrics => Ok(openmetrics(families).into_bytes()),
        Format::Text => {
            let mut buf = Vec::new();
            prometheus::TextEncoder::new().encode(families, &mut buf)?;
            Ok(buf)
        }
    }
}

/// `\\`, `\"` and newline escaped, as OpenMetrics label values and HELP
/// text require.
fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[prometheus::proto::LabelPair],
    extra: Option<(&str, f64)>,
    v: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        for l in labels {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(l.name());
            out.push_str("=\"");
            escape(out, l.value());
            out.push('"');
        }
        if let Some((k, b)) = extra {
            if !first {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            value(out, b);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    value(out, v);
    out.push('\n');
}

/// OpenMetrics 1.0 text: counters are declared without their `_total`
/// suffix and sampled with it, untyped families are `unknown`, and the
/// exposition ends with `# EOF`.
pub fn openmetrics(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for mf in families {
        if mf.get_metric().is_empty() {
            continue;
        }
        let t = mf.get_field_type();
        let full = mf.name();
        let name = match t {
            MetricType::COUNTER => full.strip_suffix("_total").unwrap_or(full),
            _ => full,
        };
        let kind = match t {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "unknown",
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        if !mf.help().is_empty() {
            let _ = write!(out, "# HELP {name} ");
            escape(&mut out, mf.help());
            out.push('\n');
        }
        for m in mf.get_metric() {
            let labels = m.get_label();
            match t {
                MetricType::COUNTER => sample(
                    &mut out,
                    name,
                    "_total",
                    labels,
                    None,
                    m.get_counter().value(),
                ),
                MetricType::GAUGE => {
                    sample(&mut out, name, "", labels, None, m.get_gauge().value())
                }
                MetricType::UNTYPED => sample(&mut out, name, "", labels, None, m.untyped.value()),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let mut inf = false;
                    for b in h.get_bucket() {
                        inf |= b.upper_bound() == f64::INFINITY;
                        sample(
                            &mut out,
                            name,
                            "_bucket",
                            labels,
                            Some(("le", b.upper_bound())),
                            b.cumulative_count() as f64,
                        );
                    }
                    if !inf {
                        sample(
                            &mut out,
                            name,
                            "_bucket",
                            labels,
                            Some(("le", f64::INFINITY)),
                            h.get_sample_count() as f64,
                        );
                    }
                    sample(&mut out, name, "_sum", labels, None, h.get_sample_sum());
                    sample(
                        &mut out,
                        name,
                        "_count",
                        labels,
                        None,
                        h.get_sample_count() as f64,
                    );
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        sample(
                            &mut out,
                            name,
                            "",
                            labels,
                            Some(("quantile", q.quantile())),
                            q.value(),
                        );
                    }
                    sample(&mut out, name, "_sum", labels, None, s.sample_sum());
                    sample(
                        &mut out,
                        name,
                        "_count",
                        labels,
                        None,
                        s.sample_count() as f64,
                    );
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_histograms_and_eof() {
        use crate::metrics::Def;
        const X: Def = Def::new("bpfmap_x_total", "A \"quoted\"\nhelp.", MetricType::COUNTER);
        const G: Def = Def::new("bpfmap_g", "G.", MetricType::GAUGE);
        let mut f = crate::metrics::Families::new();
        f.counter(&X, vec![("comm", "a\"b\\c\nd".to_string())], 3.0);
        f.gauge(&G, vec![], f64::INFINITY);
        let text = openmetrics(&f.into_proto());
        assert!(text.contains("# TYPE bpfmap_x counter\n"), "{text}");
        assert!(
            text.contains("# HELP bpfmap_x A \\\"quoted\\\"\\nhelp.\n"),
            "{text}"
        );
        assert!(
            text.contains("bpfmap_x_total{comm=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("bpfmap_g +Inf\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
