//! `litebroker metrics`: the broker's figures once, in the Prometheus text
//! exposition format (what `--metrics-listen` serves), or with `--json` as one
//! document of the families.

use litebroker_client::protocol::{MetricValue, MetricsReport};
use litebroker_client::{Client, ClientError};
use serde_json::{json, Value as Json};

use crate::{client_failure, connect, fail, Cli, Failure};

/// The report of the broker `client` talks to; a broker too old to report one is
/// "of another protocol version" (exit 3).
pub(crate) fn fetch(client: &mut Client, cli: &Cli) -> Result<MetricsReport, Failure> {
    client.metrics().map_err(|e| match e {
        ClientError::Unexpected(msg) if client.hello().minor < 2 => fail(3, "incompatible", msg),
        e => client_failure(&e, Some(cli)),
    })
}

/// `litebroker metrics`.
pub(crate) fn metrics(cli: &Cli) -> Result<(), Failure> {
    let mut client = connect(cli)?;
    let report = fetch(&mut client, cli)?;
    if cli.json {
        println!("{}", report_json(&report));
    } else {
        print!("{}", report.exposition());
    }
    Ok(())
}

/// `{"at_unix_ms", "families": [{"name", "type", "help", "series": [{"labels":
/// {…}, "value"}, or for a histogram {"labels", "buckets": [{"le", "count"}
/// (cumulative, the last le null for +Inf)], "sum", "count"}]}]}`.
fn report_json(r: &MetricsReport) -> Json {
    let families: Vec<Json> = r
        .families
        .iter()
        .map(|f| {
            let series: Vec<Json> = f
                .series
                .iter()
                .map(|s| {
                    let labels: serde_json::Map<String, Json> =
                        s.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    match &s.value {
                        MetricValue::Number(v) => json!({ "labels": labels, "value": v }),
                        MetricValue::Histogram(h) => {
                            let mut cumulative = 0u64;
                            let buckets: Vec<Json> = h
                                .counts
                                .iter()
                                .enumerate()
                                .map(|(i, n)| {
                                    cumulative = cumulative.saturating_add(*n);
                                    json!({ "le": h.bounds.get(i), "count": cumulative })
                                })
                                .collect();
                            json!({ "labels": labels, "buckets": buckets, "sum": h.sum, "count": h.count() })
                        }
                    }
                })
                .collect();
            json!({ "name": f.name, "type": f.kind.as_str(), "help": f.help, "series": series })
        })
        .collect();
    json!({ "at_unix_ms": r.at_unix_ms, "families": families })
}

#[cfg(test)]
mod tests {
    use litebroker_client::protocol::{HistogramValue, MetricFamily, MetricKind, MetricSeries};

    use super::*;

    #[test]
    fn a_histogram_becomes_cumulative_buckets_ending_at_null() {
        let r = MetricsReport {
            at_unix_ms: 5,
            families: vec![MetricFamily {
                name: "h_seconds".into(),
                help: "H".into(),
                kind: MetricKind::Histogram,
                series: vec![MetricSeries {
                    labels: vec![("a".into(), "b".into())],
                    value: MetricValue::Histogram(HistogramValue {
                        bounds: vec![0.5],
                        counts: vec![1, 2],
                        sum: 2.5,
                    }),
                }],
            }],
        };
        assert_eq!(
            report_json(&r),
            json!({"at_unix_ms": 5, "families": [{"name": "h_seconds", "type": "histogram", "help": "H",
                "series": [{"labels": {"a": "b"}, "buckets": [{"le": 0.5, "count": 1}, {"le": null, "count": 3}],
                "sum": 2.5, "count": 3}]}]})
        );
    }
}
