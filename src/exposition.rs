//! Negotiated exposition formats other than the classic text (which has
//! its own fast path in `metrics`): protobuf through the `prometheus`
//! crate's delimited encoder, and OpenMetrics 1.0 text written from the
//! same protos.
use std::fmt::Write as _;

use prometheus::proto::{MetricFamily, MetricType};
use prometheus::Encoder;

/// Exposition formats a scrape can be answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `text/plain; version=0.0.4` (the fast path).
    Text,
    /// `application/openmetrics-text; version=1.0.0`, ending in `# EOF`.
    OpenMetrics,
    /// Delimited `io.prometheus.client.MetricFamily` protobuf messages.
    Protobuf,
}

pub const OPENMETRICS_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus::TEXT_FORMAT,
            Format::OpenMetrics => OPENMETRICS_FORMAT,
            Format::Protobuf => prometheus::PROTOBUF_FORMAT,
        }
    }
}

/// Pick the format from an `Accept` header the way Prometheus expects: the
/// supported media range with the highest q wins, ties go to the earlier
/// one; anything unsupported or absent gets the classic text format.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let mut best: Option<(f32, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut proto = None;
        let mut encoding = None;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.parse().unwrap_or(0.0),
                "proto" => proto = Some(v.to_string()),
                "encoding" => encoding = Some(v.to_string()),
                _ => {}
            }
        }
        let f = match media.as_str() {
            "application/openmetrics-text" => Format::OpenMetrics,
            "application/vnd.google.protobuf"
                if proto.as_deref() == Some("io.prometheus.client.MetricFamily")
                    && encoding.as_deref() == Some("delimited") =>
            {
                Format::Protobuf
            }
            "text/plain" | "*/*" | "text/*" => Format::Text,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, f));
        }
    }
    best.map(|(_, f)| f).unwrap_or(Format::Text)
}

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
    #[test]
    fn negotiation_follows_prometheus_accept_headers() {
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        // Prometheus 2.x default.
        assert_eq!(
            negotiate(Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::OpenMetrics
        );
        // Native histograms on: protobuf first.
        assert_eq!(
            negotiate(Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3")),
            Format::Protobuf
        );
        assert_eq!(
            negotiate(Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text")),
            Format::Text
        );
        assert_eq!(
            negotiate(Some(
                "text/plain;version=0.0.4;q=0.3,application/openmetrics-text;q=0"
            )),
            Format::Text
        );
        assert_eq!(negotiate(Some("image/png")), Format::Text);
    }

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
