//! Medians, a plain-text table and the JSON results file.

use std::path::Path;
use std::time::{Duration, Instant};

/// The median of some durations.
pub(crate) fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Times one run of `f`.
pub(crate) fn time<R>(f: impl FnOnce() -> R) -> (Duration, R) {
    let start = Instant::now();
    let r = f();
    (start.elapsed(), r)
}

/// Milliseconds with three decimals.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Prints rows under a header, columns padded to fit.
pub(crate) fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    println!("\n{title}");
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect();
        println!("  {}", padded.join("  "));
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Writes the results as pretty JSON to `dir/name.json`.
pub(crate) fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value)?)?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// The reference zone a bench runs on.
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct ZoneArgs {
    /// Objects in the reference zone.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) objects: u64,
    /// Shards in the reference zone.
    #[arg(long, default_value_t = 64)]
    pub(crate) shards: u64,
    /// Seed of the reference zone.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
}

impl ZoneArgs {
    /// Generates the zone.
    pub(crate) fn generate(&self) -> hoard_bench::reference::ReferenceZone {
        hoard_bench::reference::generate(self.objects, self.shards, self.seed)
    }
}
