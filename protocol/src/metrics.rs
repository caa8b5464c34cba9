//! The broker's figures as they cross the wire (the answer to
//! [`crate::Request::Metrics`], protocol minor 2), and their rendering in the
//! Prometheus text exposition format (version 0.0.4).
//!
//! The report carries the Prometheus data model itself — families of series, each
//! family a name, a help text, a type and its series — rather than a struct with a
//! field per figure, or the exposition text. So a broker adds a figure without a
//! wire change (a struct may gain fields only through a new variant), a client
//! reads typed numbers without parsing text (`litebroker top` computes rates and
//! percentiles from two reports), and one renderer ([`MetricsReport::exposition`])
//! serves the CLI and the broker's HTTP endpoint alike.
//!
//! The exposition rules the renderer keeps: one `# HELP` and one `# TYPE` line per
//! family, before its samples; label values escaped (`\\`, `\"`, `\n`) and help
//! texts escaped (`\\`, `\n`); a histogram as cumulative `_bucket{le="…"}`
//! samples ending with `le="+Inf"`, then `_sum` and `_count` (equal to the `+Inf`
//! bucket); a family or label whose name is not a valid Prometheus name is left
//! out rather than written as a line no scraper could read.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The broker's figures, answered to [`crate::Request::Metrics`]. Protocol minor 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// When the figures were read, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The families, each name once.
    pub families: Vec<MetricFamily>,
}

/// One metric family: every series of one name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricFamily {
    /// The full name as exposed, e.g. `litebroker_requests_total` (a counter's
    /// name ends in `_total`; a histogram's samples add `_bucket`, `_sum`, `_count`).
    pub name: String,
    /// What it counts, in one line.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Its series, one per label set.
    pub series: Vec<MetricSeries>,
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricKind {
    /// Only goes up (resets when the broker restarts).
    Counter,
    /// Goes up and down: a value now.
    Gauge,
    /// Observations counted in buckets, with their sum.
    Histogram,
}

impl MetricKind {
    /// The name the `# TYPE` line uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One series of a family: its labels and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSeries {
    /// Label names and values, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: MetricValue,
}

/// The value of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricValue {
    /// A counter's or a gauge's value.
    Number(f64),
    /// A histogram's buckets and sum.
    Histogram(HistogramValue),
}

/// A histogram's figures as counted: per bucket, not cumulative (the renderer
/// accumulates them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramValue {
    /// The buckets' upper bounds (inclusive), ascending, in the family's unit; the
    /// last bucket, up to `+Inf`, has none.
    pub bounds: Vec<f64>,
    /// Observations per bucket: `bounds.len() + 1` entries, the last one those
    /// above the highest bound.
    pub counts: Vec<u64>,
    /// The sum of the observations, in the family's unit.
    pub sum: f64,
}

impl HistogramValue {
    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// The `q` quantile (0 to 1) of the observations, interpolated linearly inside
    /// its bucket as Prometheus' `histogram_quantile` does; the highest bound for
    /// one that falls above it. None without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = self.bounds.get(i) else {
                    return self.bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            below += n;
        }
        self.bounds.last().copied()
    }

    /// What was observed between `earlier` and this reading of the same series
    /// (counts and sum subtracted; a broker restart in between gives this one).
    pub fn since(&self, earlier: &HistogramValue) -> HistogramValue {
        let restarted = earlier.bounds != self.bounds
            || self.counts.iter().zip(&earlier.counts).any(|(now, then)| now < then);
        if restarted {
            return self.clone();
        }
        HistogramValue {
            bounds: self.bounds.clone(),
            counts: self.counts.iter().zip(&earlier.counts).map(|(now, then)| now - then).collect(),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }
}

impl MetricsReport {
    /// The family named `name`.
    pub fn family(&self, name: &str) -> Option<&MetricFamily> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The value of the series of `name` whose labels include every pair of
    /// `labels`, summed over all such series (a counter or gauge); None when no
    /// such series exists.
    pub fn number(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self.family(name)?;
        let mut found = None;
        for s in family.series.iter().filter(|s| has_labels(s, labels)) {
            if let MetricValue::Number(v) = s.value {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// The histogram of `name` whose labels include every pair of `labels`.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<&HistogramValue> {
        self.family(name)?.series.iter().filter(|s| has_labels(s, labels)).find_map(|s| match &s.value {
            MetricValue::Histogram(h) => Some(h),
            MetricValue::Number(_) => None,
        })
    }

    /// The report in the Prometheus text exposition format, version 0.0.4
    /// (`Content-Type: text/plain; version=0.0.4`); see the module's doc for the
    /// rules it keeps.
    pub fn exposition(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        for f in self.families.iter().filter(|f| is_metric_name(&f.name)) {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            for s in &f.series {
                let labels: Vec<&(String, String)> =
                    s.labels.iter().filter(|(k, _)| is_label_name(k) && k != "le").collect();
                match (&s.value, f.kind) {
                    (MetricValue::Number(v), MetricKind::Counter | MetricKind::Gauge) => {
                        sample(&mut out, &f.name, "", &labels, None, &number(*v));
                    }
                    (MetricValue::Histogram(h), MetricKind::Histogram) => {
                        let mut cumulative = 0u64;
                        for (i, n) in h.counts.iter().enumerate().take(h.bounds.len()) {
                            cumulative = cumulative.saturating_add(*n);
                            let le = number(h.bounds[i]);
                            sample(&mut out, &f.name, "_bucket", &labels, Some(&le), &cumulative.to_string());
                        }
                        let count = h.count().to_string();
                        sample(&mut out, &f.name, "_bucket", &labels, Some("+Inf"), &count);
                        sample(&mut out, &f.name, "_sum", &labels, None, &number(h.sum));
                        sample(&mut out, &f.name, "_count", &labels, None, &count);
                    }
                    // A value of another type than its family's would be a
                    // broker's mistake: left out, the rest stays readable.
                    _ => {}
                }
            }
        }
        out
    }
}

fn has_labels(s: &MetricSeries, wanted: &[(&str, &str)]) -> bool {
    wanted.iter().all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
}

/// One sample line: `name{labels,le="…"} value`.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[&(String, String)],
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let le_pair = le.map(|v| ("le", v.to_owned()));
        let all = labels.iter().map(|(k, v)| (k.as_str(), escape_label(v))).chain(le_pair);
        for (k, v) in all {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// A value as the format writes it: integers without a fraction, `+Inf`, `-Inf`
/// and `NaN` by name.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust's shortest round-trip form: `3`, `0.00025`, `1700000000.5`.
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    !s.starts_with("__")
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(name: &str, kind: MetricKind, series: Vec<MetricSeries>) -> MetricFamily {
        MetricFamily { name: name.into(), help: format!("help of {name}"), kind, series }
    }

    fn number_series(labels: &[(&str, &str)], v: f64) -> MetricSeries {
        MetricSeries {
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            value: MetricValue::Number(v),
        }
    }

    #[test]
    fn a_histogram_is_written_cumulative_with_inf_sum_and_count() {
        let h = HistogramValue { bounds: vec![0.001, 0.01], counts: vec![2, 3, 1], sum: 0.5 };
        let report = MetricsReport {
            at_unix_ms: 0,
            families: vec![family(
                "x_seconds",
                MetricKind::Histogram,
                vec![MetricSeries {
                    labels: vec![("op".into(), "w".into())],
                    value: MetricValue::Histogram(h),
                }],
            )],
        };
        assert_eq!(
            report.exposition(),
            "# HELP x_seconds help of x_seconds\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{op=\"w\",le=\"0.001\"} 2\n\
             x_seconds_bucket{op=\"w\",le=\"0.01\"} 5\n\
             x_seconds_bucket{op=\"w\",le=\"+Inf\"} 6\n\
             x_seconds_sum{op=\"w\"} 0.5\n\
             x_seconds_count{op=\"w\"} 6\n"
        );
    }

    #[test]
    fn help_and_label_values_are_escaped_and_bad_names_left_out() {
        let mut f = family("a_total", MetricKind::Counter, vec![number_series(&[("k", "q\"b\\n\nx")], 3.0)]);
        f.help = "line\\one\ntwo".into();
        let report = MetricsReport {
            at_unix_ms: 0,
            families: vec![
                f,
                family("bad name", MetricKind::Gauge, vec![number_series(&[], 1.0)]),
                family(
                    "g",
                    MetricKind::Gauge,
                    vec![number_series(&[("__x", "1"), ("9a", "2")], f64::INFINITY)],
                ),
            ],
        };
        assert_eq!(
            report.exposition(),
            "# HELP a_total line\\\\one\\ntwo\n# TYPE a_total counter\na_total{k=\"q\\\"b\\\\n\\nx\"} 3\n\
             # HELP g help of g\n# TYPE g gauge\ng +Inf\n"
        );
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let h = HistogramValue { bounds: vec![1.0, 2.0, 4.0], counts: vec![0, 10, 0, 0], sum: 15.0 };
        assert_eq!(h.quantile(0.5), Some(1.5));
        assert_eq!(h.quantile(1.0), Some(2.0));
        let above = HistogramValue { bounds: vec![1.0], counts: vec![1, 9], sum: 100.0 };
        assert_eq!(above.quantile(0.99), Some(1.0), "above the highest bound: that bound");
        assert_eq!(HistogramValue { bounds: vec![1.0], counts: vec![0, 0], sum: 0.0 }.quantile(0.5), None);
    }

    #[test]
    fn since_subtracts_an_earlier_reading_unless_the_broker_restarted() {
        let then = HistogramValue { bounds: vec![1.0], counts: vec![3, 1], sum: 4.0 };
        let now = HistogramValue { bounds: vec![1.0], counts: vec![5, 1], sum: 5.5 };
        assert_eq!(now.since(&then), HistogramValue { bounds: vec![1.0], counts: vec![2, 0], sum: 1.5 });
        let restarted = HistogramValue { bounds: vec![1.0], counts: vec![1, 0], sum: 0.5 };
        assert_eq!(restarted.since(&then), restarted);
    }

    #[test]
    fn number_sums_the_series_that_match() {
        let report = MetricsReport {
            at_unix_ms: 0,
            families: vec![family(
                "r_total",
                MetricKind::Counter,
                vec![
                    number_series(&[("kind", "execute"), ("outcome", "ok")], 5.0),
                    number_series(&[("kind", "execute"), ("outcome", "sql")], 2.0),
                    number_series(&[("kind", "ping"), ("outcome", "ok")], 7.0),
                ],
            )],
        };
        assert_eq!(report.number("r_total", &[("kind", "execute")]), Some(7.0));
        assert_eq!(report.number("r_total", &[]), Some(14.0));
        assert_eq!(report.number("r_total", &[("kind", "batch")]), None);
        assert_eq!(report.number("missing", &[]), None);
    }
}
