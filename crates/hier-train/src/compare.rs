//! Comparing runs: a table (validation bpc, tokens/s, parameters) and an SVG plot of validation
//! bits per character against steps and against wall-clock seconds.

use std::fmt::Write as _;
use std::path::Path;

use crate::metrics::{read, Record};

/// One run's summary and validation curve.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub name: String,
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

    pub fn final_bpc(&self) -> f64 {
        self.curve.last().map_or(f64::NAN, |c| c.2)
    }

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

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Two panels side by side: validation bpc against steps, and against seconds.
pub fn svg(runs: &[RunSummary]) -> String {
    let (w, h, pad) = (420.0, 300.0, 50.0);
    let points = runs.iter().flat_map(|r| r.curve.iter());
    let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut steps, mut secs) = (1.0f64, 1.0f64);
    for &(s, t, b) in points {
        if b.is_finite() {
            y_min = y_min.min(b);
            y_max = y_max.max(b);
        }
        steps = steps.max(s as f64);
        secs = secs.max(t);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let span = (y_max - y_min).max(1e-6);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * w,
        h + 20.0 + 16.0 * runs.len() as f64
    );
    for (panel, (label, x_max)) in [("steps", steps), ("seconds", secs)]
        .into_iter()
        .enumerate()
    {
        let x0 = panel as f64 * w;
        let to_x = |x: f64| x0 + pad + (x / x_max) * (w - 1.5 * pad);
        let to_y = |y: f64| h - pad + -((y - y_min) / span) * (h - 1.5 * pad);
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
            to_x(0.0),
            to_y(y_min),
            to_x(x_max),
            to_y(y_min)
        );
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
            to_x(0.0),
            to_y(y_min),
            to_x(0.0),
            to_y(y_max)
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label} (0 – {x_max:.0})</text>",
            x0 + w / 2.0,
            h - pad / 3.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">valid bpc {y_max:.3}</text>",
            to_x(0.0) - 40.0,
            to_y(y_max) - 6.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{y_min:.3}</text>",
            to_x(0.0) - 40.0,
            to_y(y_min) + 4.0
        );
        for (i, r) in runs.iter().enumerate() {
            let path: Vec<String> = r
                .curve
                .iter()
                .filter(|c| c.2.is_finite())
                .map(|&(s, t, b)| {
                    format!(
                        "{:.1},{:.1}",
                        to_x(if panel == 0 { s as f64 } else { t }),
                        to_y(b)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
                COLORS[i % COLORS.len()],
                path.join(" ")
            );
        }
    }
    for (i, r) in runs.iter().enumerate() {
        let y = h + 10.0 + 16.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{pad}\" y=\"{}\" width=\"12\" height=\"4\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{} — final {:.4} bpc, {:.0} tok/s</text>",
            y - 4.0,
            COLORS[i % COLORS.len()],
            pad + 18.0,
            y,
            r.name,
            r.final_bpc(),
            r.tokens_per_s
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_plot_hold_every_run() {
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
        let s = svg(&runs);
        assert_eq!(s.matches("<polyline").count(), 4); // two panels x two runs
        assert!(s.contains("flat — final 2.5000 bpc"));
    }
}
