//! `hoard-demo bots` against a real server process with metrics: a short
//! cold run, then a warm one from the same caches. What the bots counted
//! (zone entries, their bytes, actions) must agree with what the server's
//! Prometheus metrics say it did, and the report must be written.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;

use super::server_client::{demo, spawn_listening};

struct MetricsServer {
    child: Child,
    addr: String,
    metrics: String,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server of the demo world (its four zones meet at one corner, where
/// the bots live) with metrics on a free port.
fn server(data: &Path) -> MetricsServer {
    let mut cmd = demo();
    cmd.args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--data",
    ])
    .arg(data);
    let (child, v) = spawn_listening(cmd);
    MetricsServer {
        child,
        addr: v["addr"].as_str().expect("addr").to_owned(),
        metrics: v["metrics"].as_str().expect("metrics url").to_owned(),
    }
}

/// Runs four bots for five seconds with their caches under `work` and
/// `extra` flags; returns their JSON summary.
fn run_bots(server: &MetricsServer, data: &Path, work: &Path, extra: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = demo()
        .args(["bots", "--server", &server.addr, "--clients", "4", "--duration", "5"])
        .args([
            "--zone-change-every",
            "1.5-2",
            "--actions-per-sec",
            "4",
            "--json",
            "--server-data",
        ])
        .arg(data)
        .arg("--work")
        .arg(work)
        .args(extra)
        .output()
        .expect("bots");
    assert!(
        out.status.success(),
        "bots failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one json line")
}

/// Runs the bots, scraping the server's metrics and writing a report;
/// returns their JSON summary.
fn bots(server: &MetricsServer, data: &Path, work: &Path, report: &Path) -> serde_json::Value {
    let extra = [
        "--metrics".as_ref(),
        server.metrics.as_ref(),
        "--report".as_ref(),
        report.as_os_str(),
    ];
    run_bots(server, data, work, &extra)
}

fn totals(v: &serde_json::Value) -> BTreeMap<String, f64> {
    serde_json::from_value(v["server_totals"].clone()).expect("server totals")
}

fn total(t: &BTreeMap<String, f64>, key: &str) -> f64 {
    t.get(key).copied().unwrap_or(0.0)
}

fn entries(v: &serde_json::Value, kind: &str) -> f64 {
    v["bots"]["entries"][kind]["count"].as_f64().unwrap_or(0.0)
}

#[test]
fn a_bots_run_agrees_with_the_servers_metrics_cold_then_warm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    std::fs::create_dir_all(&data).expect("data dir");
    let work = dir.path().join("bots");
    let server = server(&data);
    let mut before = BTreeMap::new();
    for (round, report) in ["cold", "warm"].iter().enumerate() {
        let report_dir = dir.path().join(report);
        let run = bots(&server, &data, &work, &report_dir);
        let after = totals(&run);
        let delta = |key: &str| total(&after, key) - total(&before, key);
        let b = &run["bots"];
        assert!(b["errors"].as_object().expect("errors").is_empty(), "{run}");
        // Every entry a bot finished, the server answered, by kind.
        let (cold, warm) = (entries(&run, "cold"), entries(&run, "warm"));
        assert_eq!(cold, delta("hoard_zone_entries_total{kind=\"cold\"}"), "{run}");
        assert_eq!(warm, delta("hoard_zone_entries_total{kind=\"warm\"}"), "{run}");
        // Each bot enters at least twice (its first zone, then the next).
        assert!(cold + warm >= 8.0, "{run}");
        if round == 0 {
            assert_eq!(warm, 0.0, "nothing is cached on the first run: {run}");
        } else {
            assert!(warm >= 4.0, "the second run starts from the first one's caches: {run}");
            let warm_bytes = b["entries"]["warm"]["bytes_rx"].as_f64().expect("warm bytes");
            assert!(warm_bytes < 2000.0, "a warm entry of an unchanged zone is small: {run}");
        }
        // Every answer byte the server sent, the bots received for their entries.
        assert_eq!(
            b["entry_bytes_rx"].as_f64().expect("bytes"),
            delta("hoard_sent_bytes_total{stream=\"answer\"}"),
            "{run}"
        );
        // Every action sent was processed or rejected by the server, or was
        // still in flight when the bot stopped (at most one tick's worth).
        let sent = b["sent"].as_f64().expect("sent");
        let answered = delta("hoard_intents_total") + delta("hoard_rejected_intents_total{reason=\"unavailable\"}");
        assert!(
            sent >= answered && sent - answered <= 8.0,
            "sent {sent}, answered {answered}: {run}"
        );
        // The bots saw `Processed` for all of those but the last few.
        let processed = b["processed"].as_f64().expect("processed");
        assert!(processed <= delta("hoard_intents_total"), "{run}");
        assert!(delta("hoard_intents_total") - processed <= 8.0, "{run}");
        assert!(processed > 20.0, "{run}");
        // The report was written, with its plots.
        let html = std::fs::read_to_string(report_dir.join("report.html")).expect("report.html");
        assert!(html.matches("<svg").count() >= 5, "five plots");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).expect("report.json"))
                .expect("report json");
        assert!(!json["server"].as_array().expect("server samples").is_empty());
        // The server's frames while all four bots were connected: some ran,
        // and their p99 is one of the frame histogram's bounds.
        let steady = &run["server_steady"];
        assert!(steady["ticks"].as_f64().expect("frames") > 0.0, "{run}");
        assert!(steady["tick_p99_ms"].as_f64().expect("frame p99") > 0.0, "{run}");
        assert_eq!(json["server_steady"], *steady, "the report says the same");
        // The bots' own latencies while all were connected: a part of the
        // run's, within its bounds.
        let part = &b["steady"];
        let count = |v: &serde_json::Value| v["count"].as_f64().expect("count");
        let max = |v: &serde_json::Value| v["max_ms"].as_f64().expect("max");
        let (steady_entries, steady_actions) = (count(&part["entries"]), count(&part["actions"]));
        assert!(steady_entries > 0.0 && steady_entries <= cold + warm, "{run}");
        assert!(steady_actions > 0.0 && steady_actions <= processed, "{run}");
        assert!(max(&part["actions"]) <= max(&b["actions"]), "{run}");
        assert!(count(&part["update_delay"]) <= count(&b["update_delay"]), "{run}");
        assert!(html.contains("all connected"), "the report shows them");
        before = after;
    }
}

/// Bots with their caches in memory, started warm from a cache a bot made
/// on disk: their entries are warm, nothing fails, and each bot's folder on
/// disk holds only the cache's lock and the server it trusts.
#[test]
fn bots_with_caches_in_memory_start_warm_and_write_no_cache_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    std::fs::create_dir_all(&data).expect("data dir");
    let server = server(&data);
    let on_disk = dir.path().join("bots");
    bots(&server, &data, &on_disk, &dir.path().join("cold"));
    let in_memory = dir.path().join("in-memory");
    let warm = on_disk.join("bot-0");
    let run = run_bots(
        &server,
        &data,
        &in_memory,
        &["--caches-in-memory".as_ref(), "--warm-from".as_ref(), warm.as_os_str()],
    );
    assert!(run["bots"]["errors"].as_object().expect("errors").is_empty(), "{run}");
    assert!(entries(&run, "warm") >= 4.0, "started from the copied cache: {run}");
    for bot in std::fs::read_dir(&in_memory).expect("work dir") {
        let bot = bot.expect("entry").path();
        let mut names: Vec<String> = std::fs::read_dir(&bot)
            .expect("bot dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![".lock".to_owned(), "known_servers".to_owned()],
            "{}",
            bot.display()
        );
    }
}
