//! Comparing runs: each run's validation curve and speed, and a Markdown table of them
//! (validation bpc, tokens/s, parameters). `hier compare` also plots the curves (SVG).

use std::fmt::Write as _;
use std::path::Path;

use crate::metrics::{read, Record};

/// One run's summary and validation curve.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Label of the run in the table and plot.
    pub name: String,
    /// Parameter count of the run's model.
    pub parameters: usize,
    /// `(step, seconds, bpc)` per validation.
    pub curve: Vec<(u64, f64, f64)>,
    /// Mean training tokens per second.
    pub tokens_per_s: f64,
}

impl RunSummary {
    /// Read `run_dir/metrics.jsonl`.
    pub fn read(name: &str, parameters: usize, run_dir: &Path) -> std::io::Result<Self> {
        let mut curve = Vec::new();
        let (mut speed, mut steps) = (0.0, 0usize);
        for record in read(&run_dir.join("metrics.jsonl"))? {
            match record {
                Record::Valid(v) => curve.push((v.step, v.elapsed_s, v.valid_bpc)),
                Record::Train(t) => {
                    speed += t.tokens_per_s;
                    steps += 1;
                }
            }
        }
        Ok(RunSummary {
            name: name.to_string(),
            parameters,
            curve,
            tokens_per_s: speed / steps.max(1) as f64,
        })
    }

    /// Bits per character of the last validation (NaN without one).
    pub fn final_bpc(&self) -> f64 {
        self.curve.last().map_or(f64::NAN, |c| c.2)
    }

    /// Lowest validation bits per character (NaN without a validation).
    pub fn best_bpc(&self) -> f64 {
        self.curve.iter().map(|c| c.2).fold(f64::NAN, f64::min)
    }
}

/// A Markdown table of the runs.
pub fn table(runs: &[RunSummary]) -> String {
    let mut out = String::from("| run | parameters | final valid bpc | best valid bpc | tokens/s | seconds |\n|---|---:|---:|---:|---:|---:|\n");
    for r in runs {
        let seconds = r.curve.last().map_or(0.0, |c| c.1);
        let _ = writeln!(
            out,
            "| {} | {} | {:.4} | {:.4} | {:.0} | {:.0} |",
            r.name,
            r.parameters,
            r.final_bpc(),
            r.best_bpc(),
            r.tokens_per_s,
            seconds
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_holds_every_run() {
        let runs = vec![
            RunSummary {
                name: "flat".into(),
                parameters: 10,
                curve: vec![(10, 1.0, 3.0), (20, 2.0, 2.5)],
                tokens_per_s: 100.0,
            },
            RunSummary {
                name: "h12".into(),
                parameters: 20,
                curve: vec![(10, 2.0, 2.9), (20, 4.0, 2.4)],
                tokens_per_s: 50.0,
            },
        ];
        let t = table(&runs);
        assert!(
            t.contains("| flat | 10 | 2.5000 | 2.5000 | 100 | 2 |"),
            "{t}"
        );
        assert!(t.contains("| h12 | 20 | 2.4000 | 2.4000 | 50 | 4 |"), "{t}");
    }
}
