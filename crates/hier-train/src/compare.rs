//! Comparing runs: each run's validation curve against steps, seconds and training FLOPs, its
//! speed, and Markdown tables of them — per config (mean and spread over seeds) and per run.
//! `hier compare` also plots the curves (SVG) and writes the runs as JSON ([`json`]).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::metrics::{read, Record};

/// What a run is, known before it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The config's label in the tables and plots; runs of one config share it.
    pub name: String,
    /// The run's seed (initialisation and batch order).
    pub seed: u64,
    /// Parameter count of the run's model.
    pub parameters: usize,
    /// Training FLOPs per input token: [`hier_model::flops::training_per_token`] at the
    /// model's `seq_len` (forward with the loss heads, backward counted as twice that).
    pub flops_per_token: f64,
    /// Tokens all replicas together train on per optimizer step.
    pub tokens_per_step: f64,
}

/// One validation of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Optimizer steps done.
    pub step: u64,
    /// Seconds of the training loop (the metrics' `elapsed_s`).
    pub seconds: f64,
    /// Training FLOPs spent: `step × tokens_per_step × flops_per_token`.
    pub flops: f64,
    /// Validation bits per character.
    pub bpc: f64,
}

/// One run's summary and validation curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// Optimizer steps the run reached.
    pub steps: u64,
    /// Every validation, in order.
    pub curve: Vec<Point>,
    /// Mean training tokens per second.
    pub tokens_per_s: f64,
}

impl RunSummary {
    /// Read `run_dir/metrics.jsonl` of `run`.
    pub fn read(run: Run, run_dir: &Path) -> std::io::Result<Self> {
        let mut curve = Vec::new();
        let (mut speed, mut steps) = (0.0, 0u64);
        let mut train_steps = 0usize;
        for record in read(&run_dir.join("metrics.jsonl"))? {
            match record {
                Record::Valid(v) => curve.push(Point {
                    step: v.step,
                    seconds: v.elapsed_s,
                    flops: v.step as f64 * run.tokens_per_step * run.flops_per_token,
                    bpc: v.valid_bpc,
                }),
                Record::Train(t) => {
                    speed += t.tokens_per_s;
                    train_steps += 1;
                    steps = steps.max(t.step);
                }
            }
        }
        Ok(RunSummary {
            run,
            steps,
            curve,
            tokens_per_s: speed / train_steps.max(1) as f64,
        })
    }

    /// Bits per character of the last validation (NaN without one).
    pub fn final_bpc(&self) -> f64 {
        self.curve.last().map_or(f64::NAN, |p| p.bpc)
    }

    /// Lowest validation bits per character (NaN without a validation).
    pub fn best_bpc(&self) -> f64 {
        self.curve.iter().map(|p| p.bpc).fold(f64::NAN, f64::min)
    }

    /// Seconds of the training loop at the last validation (0 without one).
    pub fn seconds(&self) -> f64 {
        self.curve.last().map_or(0.0, |p| p.seconds)
    }
}

/// The configs' names in the order of their first run, each with its runs.
pub fn by_config(runs: &[RunSummary]) -> Vec<(&str, Vec<&RunSummary>)> {
    let mut groups: Vec<(&str, Vec<&RunSummary>)> = Vec::new();
    for r in runs {
        match groups.iter_mut().find(|(name, _)| *name == r.run.name) {
            Some((_, group)) => group.push(r),
            None => groups.push((&r.run.name, vec![r])),
        }
    }
    groups
}

/// Mean and sample standard deviation (`n − 1` in the denominator; 0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// `mean ± std` over the seeds, or the value alone for one seed.
fn spread(values: &[f64]) -> String {
    match mean_std(values) {
        (mean, _) if values.len() < 2 => format!("{mean:.4}"),
        (mean, std) => format!("{mean:.4} ± {std:.4}"),
    }
}

/// A Markdown table with a row per config: its seeds, parameters, training FLOPs per token,
/// steps reached (the range over seeds when they differ), mean seconds, final and best
/// validation bpc as mean ± sample standard deviation over the seeds, and mean tokens/s.
pub fn table(runs: &[RunSummary]) -> String {
    let mut out = String::from(
        "| config | seeds | parameters | train FLOPs/token | steps | seconds | final valid bpc | best valid bpc | tokens/s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, group) in by_config(runs) {
        let of = |f: fn(&RunSummary) -> f64| group.iter().map(|r| f(r)).collect::<Vec<f64>>();
        let first = &group[0].run;
        let (lo, hi) = group.iter().fold((u64::MAX, 0), |(lo, hi), r| {
            (lo.min(r.steps), hi.max(r.steps))
        });
        let steps = match lo == hi {
            true => hi.to_string(),
            false => format!("{lo}–{hi}"),
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {:.3e} | {steps} | {:.1} | {} | {} | {:.0} |",
            group.len(),
            first.parameters,
            first.flops_per_token,
            mean_std(&of(RunSummary::seconds)).0,
            spread(&of(RunSummary::final_bpc)),
            spread(&of(RunSummary::best_bpc)),
            mean_std(&of(|r| r.tokens_per_s)).0,
        );
    }
    out
}

/// A Markdown table with a row per run (config and seed).
pub fn runs_table(runs: &[RunSummary]) -> String {
    let mut out = String::from("| config | seed | steps | seconds | final valid bpc | best valid bpc | tokens/s |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.4} | {:.4} | {:.0} |",
            r.run.name,
            r.run.seed,
            r.steps,
            r.seconds(),
            r.final_bpc(),
            r.best_bpc(),
            r.tokens_per_s
        );
    }
    out
}

/// The runs as JSON, `{"flops": <convention>, "runs": [...]}`, to re-plot a study from.
pub fn json(runs: &[RunSummary]) -> String {
    let value = serde_json::json!({
        "flops": "training FLOPs: step x tokens_per_step x flops_per_token; flops_per_token is \
                  hier_model::flops::training_per_token at seq_len (forward with losses, backward 2x)",
        "runs": runs,
    });
    serde_json::to_string_pretty(&value).expect("runs serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str, seed: u64, steps: u64, bpcs: &[f64]) -> RunSummary {
        let curve = bpcs
            .iter()
            .enumerate()
            .map(|(i, &bpc)| Point {
                step: 10 * (i as u64 + 1),
                seconds: i as f64 + 1.0,
                flops: 0.0,
                bpc,
            })
            .collect();
        RunSummary {
            run: Run {
                name: name.into(),
                seed,
                parameters: 10,
                flops_per_token: 1.5e6,
                tokens_per_step: 64.0,
            },
            steps,
            curve,
            tokens_per_s: 100.0 + 2.0 * seed as f64,
        }
    }

    #[test]
    fn the_table_has_a_row_per_config_with_the_spread_over_seeds() {
        let runs = vec![
            summary("flat", 0, 20, &[3.0, 2.5]),
            summary("h12", 0, 20, &[2.9, 2.4]),
            summary("flat", 1, 18, &[3.0, 2.7, 2.6]),
            summary("h12", 1, 20, &[2.9, 2.2]),
        ];
        let t = table(&runs);
        // final 2.5 and 2.6: mean 2.55, sample std 0.0707; best likewise; seconds 2 and 3
        let flat =
            "| flat | 2 | 10 | 1.500e6 | 18–20 | 2.5 | 2.5500 ± 0.0707 | 2.5500 ± 0.0707 | 101 |";
        assert!(t.contains(flat), "{t}");
        assert!(
            t.contains("| h12 | 2 | 10 | 1.500e6 | 20 | 2.0 | 2.3000 ± 0.1414 |"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 4, "{t}");
        let per_run = runs_table(&runs);
        assert!(
            per_run.contains("| flat | 1 | 18 | 3.0 | 2.6000 | 2.6000 | 102 |"),
            "{per_run}"
        );
    }

    #[test]
    fn one_seed_has_no_spread_and_the_json_reads_back() {
        let runs = vec![summary("flat", 7, 20, &[3.0, 2.5])];
        assert!(table(&runs).contains("| 2.5000 | 2.5000 | 114 |"));
        let value: serde_json::Value = serde_json::from_str(&json(&runs)).unwrap();
        let back: Vec<RunSummary> = serde_json::from_value(value["runs"].clone()).unwrap();
        assert_eq!(back, runs);
        assert_eq!(mean_std(&[1.0, 3.0]), (2.0, 2f64.sqrt()));
    }

    /// `hier compare --from` re-reads `json`'s output: every float comes back to the bit,
    /// including ones the shortest representation prints with 17 digits (serde_json's
    /// `float_roundtrip`; without it parsing may land one ulp off).
    #[test]
    fn runs_read_back_from_json_are_the_same_to_the_bit() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            f64::from_bits((state >> 12) | 0x3FF0_0000_0000_0000) * 1234.5678
        };
        let runs: Vec<RunSummary> = (0..50)
            .map(|seed| {
                let mut run = summary("r", seed, 30, &[next(), next(), next()]);
                run.tokens_per_s = next();
                run.run.flops_per_token = next() * 1e6;
                run
            })
            .collect();
        #[derive(Deserialize)]
        struct Recorded {
            runs: Vec<RunSummary>,
        }
        let back: Recorded = serde_json::from_str(&json(&runs)).unwrap();
        let differ = back.runs.iter().zip(&runs).filter(|(a, b)| a != b).count();
        assert_eq!(
            (back.runs.len(), differ),
            (runs.len(), 0),
            "runs read back differently"
        );
    }
}
