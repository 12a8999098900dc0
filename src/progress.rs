//! Progress bars (indicatif) and stage event lines on stderr.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use dinoflow_engine::{ProgressBar, ProgressSink, StageEvent};
use indicatif::{MultiProgress, ProgressDrawTarget, ProgressStyle};

/// Draws one bar per running stage and prints a line per stage event.
pub struct Bars {
    multi: MultiProgress,
    quiet: bool,
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl Bars {
    /// Bars on stderr; `quiet` (for `--json`) hides everything.
    pub fn new(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            quiet,
            bars: Mutex::default(),
        }
    }

    fn line(&self, text: String) {
        if self.quiet {
            return;
        }
        if self.multi.is_hidden() || !std::io::stderr().is_terminal() {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }
}

struct Bar(indicatif::ProgressBar);

impl ProgressBar for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn set_total(&self, total: u64) {
        self.0.set_length(total);
        self.0.set_style(bar_style());
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>16.bold} [{bar:30.cyan/blue}] {human_pos}/{human_len} {msg} {per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

impl ProgressSink for Bars {
    fn bar(&self, stage: &str, total: Option<u64>, unit: &str) -> Box<dyn ProgressBar> {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n).with_style(bar_style()),
            None => indicatif::ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(
                    "{prefix:>16.bold} {spinner} {human_pos} {msg} {per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        let bar = self.multi.add(bar);
        bar.set_prefix(stage.to_string());
        bar.set_message(unit.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(stage.to_string(), bar.clone());
        }
        Box::new(Bar(bar))
    }

    fn event(&self, stage: &str, event: &StageEvent) {
        let text = match event {
            StageEvent::Cached => format!("  cached  {stage}"),
            StageEvent::Started => format!("     run  {stage}"),
            StageEvent::Done { seconds } => format!("    done  {stage} in {seconds:.2}s"),
            StageEvent::Failed { error } => format!("  FAILED  {stage}: {error}"),
            StageEvent::Skipped { reason } => format!(" skipped  {stage} ({reason})"),
            StageEvent::Waiting => {
                format!(" waiting  {stage}: another process is writing the same outputs")
            }
        };
        if matches!(event, StageEvent::Done { .. } | StageEvent::Failed { .. })
            && let Ok(mut bars) = self.bars.lock()
            && let Some(bar) = bars.remove(stage)
        {
            bar.finish_and_clear();
        }
        self.line(text);
    }
}
