//! Reading the server's Prometheus metrics during a bots run: one scrape a
//! second (ureq for the GET, prometheus-parse for the text), kept as a
//! timeline of tick and commit times for the report, and the last scrape's
//! totals for comparing with what the bots counted.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use serde::Serialize;

/// One scrape, reduced to what the report plots and compares.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ServerSample {
    /// Seconds since the run started.
    pub(crate) t: f64,
    /// Connected clients.
    pub(crate) connected: f64,
    /// Cumulative `le` buckets of the tick time (seconds, count).
    #[serde(skip)]
    pub(crate) tick: Vec<(f64, f64)>,
    /// Cumulative buckets of the commit time.
    #[serde(skip)]
    pub(crate) commit: Vec<(f64, f64)>,
    /// Tick time p99 over the second before this scrape, ms.
    pub(crate) tick_p99_ms: Option<f64>,
    /// Commit time p99 over the second before this scrape, ms.
    pub(crate) commit_p99_ms: Option<f64>,
    /// Every counter and gauge, by name with labels (`name{k="v"}`).
    #[serde(skip)]
    pub(crate) values: BTreeMap<String, f64>,
}

/// Scrapes `url` once.
pub(crate) fn scrape(url: &str, t: f64) -> anyhow::Result<ServerSample> {
    let body = ureq::get(url)
        .config()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .call()?
        .body_mut()
        .read_to_string()?;
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))?;
    let mut sample = ServerSample {
        t,
        ..ServerSample::default()
    };
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => {
                sample.values.insert(key, v);
            }
            Value::Histogram(buckets) => {
                let buckets: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
                match s.metric.as_str() {
                    "hoard_tick_seconds" => sample.tick = buckets,
                    "hoard_commit_seconds" => sample.commit = buckets,
                    _ => {}
                }
            }
            Value::Summary(_) => {}
        }
    }
    sample.connected = sample.values.get("hoard_connected_clients").copied().unwrap_or(0.0);
    Ok(sample)
}

/// The p99 (ms, a bucket's upper bound) of what was observed between two
/// scrapes of one cumulative histogram; `None` if nothing was.
pub(crate) fn p99_between(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<f64> {
    let count = |b: &[(f64, f64)], i: usize| b.get(i).map_or(0.0, |x| x.1);
    let total = after.last().map_or(0.0, |x| x.1) - before.last().map_or(0.0, |x| x.1);
    if total <= 0.0 {
        return None;
    }
    after
        .iter()
        .enumerate()
        .find(|(i, (_, n))| n - count(before, *i) >= 0.99 * total)
        .map(|(_, (le, _))| if le.is_finite() { le * 1000.0 } else { f64::INFINITY })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p99_between_two_scrapes_is_the_bucket_holding_it() {
        let before = [(0.001, 10.0), (0.002, 10.0), (0.004, 10.0), (f64::INFINITY, 10.0)];
        let after = [(0.001, 100.0), (0.002, 198.0), (0.004, 210.0), (f64::INFINITY, 210.0)];
        // 200 new: 90 under 1 ms, 188 under 2 ms, 200 under 4 ms.
        assert_eq!(p99_between(&before, &after), Some(4.0));
        assert_eq!(p99_between(&after, &after), None);
    }
}
