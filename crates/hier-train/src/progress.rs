//! Progress for long runs: a progress bar on a terminal (with the `progress` feature), plain
//! log lines otherwise (CI, files, or a library built without the feature).

#[cfg(feature = "progress")]
use indicatif::{ProgressBar, ProgressStyle};

/// How a run reports its steps: a bar, log lines, or nothing.
pub enum Progress {
    /// An indicatif bar on stderr.
    #[cfg(feature = "progress")]
    Bar(ProgressBar),
    /// A line on stderr every `every` steps and at the last one.
    Lines {
        /// Steps between lines (at least 1).
        every: u64,
        /// The step the run ends at.
        total: u64,
    },
    /// Nothing: the data-parallel replicas other than rank 0.
    Silent,
}

impl Progress {
    /// A bar when stderr is a terminal (and the `progress` feature is on), else a line every
    /// `every` steps.
    pub fn new(start: u64, total: u64, every: u64) -> Self {
        #[cfg(feature = "progress")]
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_position(start);
            return Progress::Bar(bar);
        }
        let _ = start; // lines report only the steps done from here on
        Progress::Lines {
            every: every.max(1),
            total,
        }
    }

    /// Report finished step `step` (1-based) with a short status.
    pub fn step(&self, step: u64, status: &str) {
        match self {
            #[cfg(feature = "progress")]
            Progress::Bar(bar) => {
                bar.set_position(step);
                bar.set_message(status.to_string());
            }
            Progress::Lines { every, total } => {
                if step.is_multiple_of(*every) || step == *total {
                    eprintln!("step {step}/{total} {status}");
                }
            }
            Progress::Silent => {}
        }
    }

    /// A line that stays (validation results, samples).
    pub fn println(&self, line: &str) {
        match self {
            #[cfg(feature = "progress")]
            Progress::Bar(bar) => bar.println(line),
            Progress::Lines { .. } => eprintln!("{line}"),
            Progress::Silent => {}
        }
    }

    /// Close the bar, leaving it on screen (nothing for lines).
    pub fn finish(&self) {
        #[cfg(feature = "progress")]
        if let Progress::Bar(bar) = self {
            bar.finish();
        }
    }
}
