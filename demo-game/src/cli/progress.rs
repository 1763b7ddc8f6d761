//! Progress of long work (import, export, generate, render) as a bar on
//! stderr. The bar draws only when stderr is a terminal, so scripts and
//! tests see just the result lines on stdout.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for one piece of work.
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar labelled `verb`, counting `unit`s (its length is set by the first report).
    pub(crate) fn new(verb: &str, unit: &str) -> Progress {
        let bar = ProgressBar::new(0);
        let template = format!("{verb:>10} [{{bar:40}}] {{pos}}/{{len}} {unit} {{elapsed}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }

    /// A callback taking (done, total).
    pub(crate) fn callback(&self) -> impl Fn(u64, u64) + Sync + use<> {
        let bar = self.bar.clone();
        move |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        }
    }

    /// Clears the bar.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
