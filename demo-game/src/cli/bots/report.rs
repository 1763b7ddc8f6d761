//! The bots run's report: `report.json` (everything measured) and
//! `report.html`, one self-contained page (no script, no network) whose
//! plots are inline SVG: entry latency histograms cold vs warm, latency
//! and throughput over time, clients connected over time, and the server's
//! tick and commit times from its scraped metrics.
//!
//! The plots are line charts drawn here in a few lines of SVG: the page
//! must open offline and in a headless browser, and a plotting crate would
//! need a font file to lay out its labels, which the browser does for us.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::record::{EntryKind, Latency, Summary};
use super::scrape::{ServerSample, Steady};

/// Everything a report holds.
#[derive(Serialize)]
pub(crate) struct Report<'a> {
    /// The run's settings, as given.
    pub(crate) settings: serde_json::Value,
    /// What the bots measured.
    pub(crate) bots: &'a Summary,
    /// The server's metrics, one sample a second (empty without `--metrics`).
    pub(crate) server: &'a [ServerSample],
    /// The last scrape's counters and gauges.
    pub(crate) server_totals: std::collections::BTreeMap<String, f64>,
    /// The server's frame and commit times while every bot was connected.
    pub(crate) server_steady: Option<Steady>,
}

/// Writes `report.json` and `report.html` into `dir`.
pub(crate) fn write(dir: &Path, report: &Report<'_>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(dir.join("report.json"), json).context("writing report.json")?;
    std::fs::write(dir.join("report.html"), html(report)).context("writing report.html")?;
    Ok(())
}

const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// A series: its name and points.
type Series = (String, Vec<(f64, f64)>);

/// A line chart as inline SVG; `log_x` puts x on a log scale.
fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series], log_x: bool) -> String {
    const W: f64 = 600.0;
    const H: f64 = 300.0;
    const L: f64 = 60.0;
    const R: f64 = 20.0;
    const T: f64 = 30.0;
    const B: f64 = 45.0;
    let fx = |x: f64| if log_x { x.max(1e-3).log10() } else { x };
    let points = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in points {
        x0 = x0.min(fx(x));
        x1 = x1.max(fx(x));
        y1 = y1.max(y);
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<figure><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img"><title>{title}</title><rect width="{W}" height="{H}" fill="#fff"/><text x="{}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>"##,
        W / 2.0
    );
    if !x0.is_finite() {
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#888">no data</text></svg></figure>"##,
            W / 2.0,
            H / 2.0
        );
        return svg;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
    let px = |x: f64| L + (fx(x) - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - y / y1 * (H - T - B);
    // Axes, ticks and labels.
    let _ = write!(
        svg,
        r##"<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="#333"/>"##,
        H - B,
        W - R,
        H - B,
        H - B
    );
    for i in 0..=4 {
        let v = y1 * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            W - R,
            L - 4.0,
            py(v) + 4.0,
            short(v),
            y = py(v)
        );
        let xv = x0 + (x1 - x0) * f64::from(i) / 4.0;
        let label = if log_x { short(10f64.powf(xv)) } else { short(xv) };
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="11">{label}</text>"#,
            L + (xv - x0) / (x1 - x0) * (W - L - R),
            H - B + 15.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="12">{x_label}</text><text x="14" y="{}" text-anchor="middle" font-size="12" transform="rotate(-90 14 {})">{y_label}</text>"#,
        (L + W - R) / 2.0,
        H - 8.0,
        H / 2.0,
        H / 2.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><rect x="{}" y="{}" width="12" height="4" fill="{colour}"/><text x="{}" y="{}" font-size="11">{name}</text>"#,
            path.join(" "),
            W - R - 150.0,
            T + 6.0 + 16.0 * i as f64,
            W - R - 134.0,
            T + 11.0 + 16.0 * i as f64
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn row(cells: &[String]) -> String {
    format!(
        "<tr>{}</tr>",
        cells.iter().map(|c| format!("<td>{c}</td>")).collect::<String>()
    )
}

/// A table row of one latency's percentiles, with `bytes` in the last cell.
fn latency_row(what: String, l: &Latency, bytes: String) -> String {
    row(&[
        what,
        l.count.to_string(),
        format!("{:.1}", l.p50_ms),
        format!("{:.1}", l.p90_ms),
        format!("{:.1}", l.p99_ms),
        format!("{:.1}", l.max_ms),
        bytes,
    ])
}

/// The page.
fn html(report: &Report<'_>) -> String {
    let b = report.bots;
    let mut table = String::from(
        "<table><tr><th>what</th><th>count</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>bytes down / up each</th></tr>",
    );
    for (kind, l) in &b.entries {
        table += &latency_row(
            format!("{kind:?} zone entries"),
            l,
            format!("{} / {}", l.bytes_rx.unwrap_or(0), l.bytes_tx.unwrap_or(0)),
        );
    }
    for (what, l) in [
        ("actions (due → durable)", &b.actions),
        ("live update delay", &b.update_delay),
    ] {
        table += &latency_row(what.to_owned(), l, String::new());
    }
    if let Some(st) = &b.steady {
        for (what, l) in [
            ("zone entries", &st.entries),
            ("actions", &st.actions),
            ("live update delay", &st.update_delay),
        ] {
            let what = format!("{what}, all connected ({:.0}–{:.0} s)", st.from_s, st.to_s);
            table += &latency_row(what, l, String::new());
        }
    }
    if let Some(steady) = &report.server_steady {
        let ms = |v: Option<f64>| v.map_or_else(String::new, |v| format!("≤ {v:.0}"));
        let label = |what: &str| {
            format!(
                "server {what}, all connected ({:.0}–{:.0} s)",
                steady.from_s, steady.to_s
            )
        };
        table += &row(&[
            label("frame"),
            format!("{:.0}", steady.ticks),
            String::new(),
            String::new(),
            ms(steady.tick_p99_ms),
            String::new(),
            String::new(),
        ]);
        table += &row(&[
            label("commit"),
            String::new(),
            String::new(),
            String::new(),
            ms(steady.commit_p99_ms),
            String::new(),
            String::new(),
        ]);
    }
    table += "</table>";
    let errors = if b.errors.is_empty() {
        "none".to_owned()
    } else {
        b.errors
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let hist: Vec<Series> = b
        .entry_histograms
        .iter()
        .map(|(kind, buckets)| {
            let name = match kind {
                EntryKind::Cold => "cold",
                EntryKind::Warm => "warm",
            };
            (name.to_owned(), buckets.iter().map(|&(ms, n)| (ms, n as f64)).collect())
        })
        .collect();
    let t = |f: &dyn Fn(&super::record::Second) -> f64| -> Vec<(f64, f64)> {
        b.timeline.iter().map(|s| (s.t as f64, f(s))).collect()
    };
    // Seconds without entries (or actions) have no p99: no point.
    let latency = [
        ("zone entry p99".to_owned(), t(&|s| s.entry_p99_ms.unwrap_or(f64::NAN))),
        ("action p99".to_owned(), t(&|s| s.action_p99_ms.unwrap_or(f64::NAN))),
    ];
    let throughput = [
        ("actions/s".to_owned(), t(&|s| s.actions as f64)),
        ("live updates/s".to_owned(), t(&|s| s.updates as f64)),
        ("zone entries/s".to_owned(), t(&|s| s.entries as f64)),
        ("errors/s".to_owned(), t(&|s| s.errors as f64)),
    ];
    let mut clients = vec![("bots connected".to_owned(), t(&|s| s.connected as f64))];
    if !report.server.is_empty() {
        clients.push((
            "server: connected clients".to_owned(),
            report.server.iter().map(|s| (s.t, s.connected)).collect(),
        ));
    }
    let server = [
        (
            "tick p99".to_owned(),
            report
                .server
                .iter()
                .filter_map(|s| Some((s.t, s.tick_p99_ms?)))
                .collect(),
        ),
        (
            "commit p99".to_owned(),
            report
                .server
                .iter()
                .filter_map(|s| Some((s.t, s.commit_p99_ms?)))
                .collect(),
        ),
    ];
    let settings = html_escape(&serde_json::to_string(&report.settings).unwrap_or_default());
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hoard bots report</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1340px}}figure{{display:inline-block;margin:6px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}code{{font-size:12px}}</style>
</head><body>
<h1>hoard bots report</h1>
<p>{seconds:.0} s; actions sent {sent}, processed {processed}, rejected {rejected}; live updates {updates} ({ups:.0}/s); errors: {errors}.</p>
<p><code>{settings}</code></p>
{table}
<div>
{c1}
{c2}
{c3}
{c4}
{c5}
</div>
</body></html>
"#,
        seconds = b.seconds,
        sent = b.sent,
        processed = b.processed,
        rejected = b.rejected,
        updates = b.updates,
        ups = b.updates_per_sec,
        c1 = chart(
            "Zone entry latency, cold vs warm",
            "latency (ms, log)",
            "entries",
            &hist,
            true
        ),
        c2 = chart("Latency over time (p99 per second)", "time (s)", "ms", &latency, false),
        c3 = chart("Throughput over time", "time (s)", "per second", &throughput, false),
        c4 = chart("Clients connected", "time (s)", "clients", &clients, false),
        c5 = chart(
            "Server tick and commit time (p99, scraped)",
            "time (s)",
            "ms",
            &server,
            false
        ),
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_one_line_per_series_and_says_when_it_has_no_data() {
        let svg = chart(
            "t",
            "x",
            "y",
            &[
                ("a".into(), vec![(0.0, 1.0), (1.0, 2.0)]),
                ("b".into(), vec![(0.0, 3.0)]),
            ],
            false,
        );
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(chart("t", "x", "y", &[("a".into(), vec![])], false).contains("no data"));
    }
}
