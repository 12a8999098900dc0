//! How the engine reports progress and stage events; the CLI draws them, tests may record them.

/// A progress bar for one stage.
pub trait ProgressBar: Send + Sync {
    /// Advances by `n` units.
    fn inc(&self, n: u64);
    /// Sets or corrects the total.
    fn set_total(&self, total: u64);
    /// Marks the bar finished.
    fn finish(&self);
}

/// What the scheduler tells the user about, stage by stage.
#[derive(Debug, Clone, PartialEq)]
pub enum StageEvent {
    /// The stage's outputs were already committed.
    Cached,
    /// The stage started running.
    Started,
    /// The stage committed its outputs after `seconds`.
    Done {
        /// Wall time.
        seconds: f64,
    },
    /// The stage failed.
    Failed {
        /// The error, with its causes.
        error: String,
    },
    /// The stage did not run because an upstream stage failed or the run stopped.
    Skipped {
        /// Why.
        reason: String,
    },
    /// Waiting for another process that is writing the same fingerprint.
    Waiting,
}

/// Receives progress bars and events.
pub trait ProgressSink: Send + Sync {
    /// A new bar for `stage`.
    fn bar(&self, stage: &str, total: Option<u64>, unit: &str) -> Box<dyn ProgressBar>;
    /// A stage event.
    fn event(&self, stage: &str, event: &StageEvent);
}

/// A sink that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

struct NoBar;

impl ProgressBar for NoBar {
    fn inc(&self, _: u64) {}
    fn set_total(&self, _: u64) {}
    fn finish(&self) {}
}

impl ProgressSink for Silent {
    fn bar(&self, _: &str, _: Option<u64>, _: &str) -> Box<dyn ProgressBar> {
        Box::new(NoBar)
    }
    fn event(&self, _: &str, _: &StageEvent) {}
}
