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

/// The server's frame and commit times over a run's steady part: from the
/// first scrape at which every bot was connected to the last at which they
/// still were (the ramp and the leaving left out).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Steady {
    /// Seconds since the run started, at its start and end.
    pub(crate) from_s: f64,
    pub(crate) to_s: f64,
    /// Frames the server ran in between.
    pub(crate) ticks: f64,
    /// Frame time p99, ms (a bucket's upper bound).
    pub(crate) tick_p99_ms: Option<f64>,
    /// Commit time p99, ms (a bucket's upper bound).
    pub(crate) commit_p99_ms: Option<f64>,
}

/// The steady part of `samples` for a run of `clients` bots; `None` if
/// they were never all connected at once.
pub(crate) fn steady(samples: &[ServerSample], clients: usize) -> Option<Steady> {
    let all = |s: &&ServerSample| s.connected >= clients as f64;
    let first = samples.iter().find(all)?;
    let last = samples.iter().rev().find(all)?;
    let count = |b: &[(f64, f64)]| b.last().map_or(0.0, |x| x.1);
    Some(Steady {
        from_s: first.t,
        to_s: last.t,
        ticks: count(&last.tick) - count(&first.tick),
        tick_p99_ms: p99_between(&first.tick, &last.tick),
        commit_p99_ms: p99_between(&first.commit, &last.commit),
    })
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

    #[test]
    fn the_steady_part_runs_from_all_connected_to_the_last_scrape_they_were() {
        let sample = |t: f64, connected: f64, ticks: [f64; 3]| ServerSample {
            t,
            connected,
            tick: vec![(0.01, ticks[0]), (0.05, ticks[1]), (f64::INFINITY, ticks[2])],
            commit: vec![(0.01, ticks[0]), (f64::INFINITY, ticks[2])],
            ..ServerSample::default()
        };
        let samples = [
            // The ramp: slow frames that must not count.
            sample(1.0, 5.0, [0.0, 0.0, 20.0]),
            sample(2.0, 10.0, [100.0, 100.0, 120.0]),
            sample(3.0, 10.0, [150.0, 199.0, 220.0]),
            sample(4.0, 10.0, [200.0, 320.0, 320.0]),
            // Leaving.
            sample(5.0, 3.0, [200.0, 320.0, 400.0]),
        ];
        let steady = steady(&samples, 10).expect("all were connected");
        assert_eq!((steady.from_s, steady.to_s, steady.ticks), (2.0, 4.0, 200.0));
        // 100 of the 200 under 10 ms, all under 50 ms.
        assert_eq!(steady.tick_p99_ms, Some(50.0));
        assert_eq!(steady.commit_p99_ms, Some(f64::INFINITY));
        assert!(super::steady(&samples, 11).is_none());
    }
}
