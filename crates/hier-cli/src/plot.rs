//! `hier compare`'s plots: validation bits per character against steps, seconds or training
//! FLOPs, as SVG. Every run (config and seed) is a thin line in its config's colour, so the
//! spread over seeds shows as a bundle.

use std::fmt::Write as _;

use hier_train::compare::{by_config, mean_std, Point, RunSummary};

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// What a plot's x axis measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Axis {
    /// Optimizer steps.
    Steps,
    /// Seconds of the training loop (metrics' `elapsed_s`).
    Seconds,
    /// Training FLOPs ([`Point::flops`]).
    Flops,
}

impl Axis {
    /// The three plots `hier compare` writes.
    pub const ALL: [Axis; 3] = [Axis::Steps, Axis::Seconds, Axis::Flops];

    /// The plot's file name.
    pub fn file(self) -> &'static str {
        match self {
            Axis::Steps => "compare-steps.svg",
            Axis::Seconds => "compare-seconds.svg",
            Axis::Flops => "compare-flops.svg",
        }
    }

    fn x(self, p: &Point) -> f64 {
        match self {
            Axis::Steps => p.step as f64,
            Axis::Seconds => p.seconds,
            Axis::Flops => p.flops,
        }
    }

    fn label(self, max: f64) -> String {
        match self {
            Axis::Steps => format!("steps (0 – {max:.0})"),
            Axis::Seconds => format!("seconds of training (0 – {max:.1})"),
            Axis::Flops => format!(
                "training FLOPs (0 – {max:.2e}): steps × tokens/step × (forward with losses + 2× backward)/token"
            ),
        }
    }
}

const W: f64 = 640.0;
const H: f64 = 340.0;
const PAD: f64 = 50.0;

/// The ranges the plot spans: x from 0, bpc from its lowest to its highest value.
struct Frame {
    x_max: f64,
    y_min: f64,
    y_max: f64,
}

impl Frame {
    fn of(runs: &[RunSummary], axis: Axis) -> Self {
        let points = || {
            runs.iter()
                .flat_map(|r| &r.curve)
                .filter(|p| p.bpc.is_finite())
        };
        let x_max = points().map(|p| axis.x(p)).fold(0.0, f64::max);
        let y_min = points().map(|p| p.bpc).fold(f64::INFINITY, f64::min);
        let y_max = points().map(|p| p.bpc).fold(f64::NEG_INFINITY, f64::max);
        let (y_min, y_max) = if y_min.is_finite() {
            (y_min, y_max)
        } else {
            (0.0, 1.0)
        };
        Frame {
            x_max: if x_max > 0.0 { x_max } else { 1.0 },
            y_min,
            // a flat curve still gets a height
            y_max: y_max.max(y_min + 1e-6),
        }
    }

    fn x(&self, x: f64) -> f64 {
        PAD + x / self.x_max * (W - 1.5 * PAD)
    }

    fn y(&self, y: f64) -> f64 {
        H - PAD - (y - self.y_min) / (self.y_max - self.y_min) * (H - 1.5 * PAD)
    }

    /// The axes and their labels.
    fn axes(&self, axis: Axis) -> String {
        let (x0, y0, top) = (self.x(0.0), self.y(self.y_min), self.y(self.y_max));
        format!(
            "<polyline fill=\"none\" stroke=\"black\" points=\"{x0},{top:.1} {x0},{y0:.1} {:.1},{y0:.1}\"/>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"{}\" y=\"{:.1}\">valid bpc {:.3}</text>\n<text x=\"{}\" y=\"{:.1}\">{:.3}</text>\n",
            self.x(self.x_max),
            W / 2.0,
            H - PAD / 3.0,
            axis.label(self.x_max),
            x0 - 40.0,
            top - 6.0,
            self.y_max,
            x0 - 40.0,
            y0 + 4.0,
            self.y_min
        )
    }
}

/// Validation bpc against `axis`: a line per run, a legend entry per config.
pub fn svg(runs: &[RunSummary], axis: Axis) -> String {
    let frame = Frame::of(runs, axis);
    let groups = by_config(runs);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        H + 20.0 + 16.0 * groups.len() as f64
    );
    out.push_str(&frame.axes(axis));
    for (i, (name, group)) in groups.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for r in group {
            let path: Vec<String> = r
                .curve
                .iter()
                .filter(|p| p.bpc.is_finite())
                .map(|p| format!("{:.1},{:.1}", frame.x(axis.x(p)), frame.y(p.bpc)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.2\" stroke-opacity=\"0.8\" points=\"{}\"><title>{name} seed {}</title></polyline>",
                path.join(" "),
                r.run.seed
            );
        }
        let finals: Vec<f64> = group.iter().map(|r| r.final_bpc()).collect();
        let (mean, std) = mean_std(&finals);
        let y = H + 10.0 + 16.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{PAD}\" y=\"{}\" width=\"12\" height=\"4\" fill=\"{color}\"/><text x=\"{}\" y=\"{y}\">{name} — final {mean:.4} ± {std:.4} bpc (mean ± sample std of {} seeds)</text>",
            y - 4.0,
            PAD + 18.0,
            group.len()
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hier_train::compare::Run;

    #[test]
    fn every_run_is_a_line_and_every_config_a_legend_entry() {
        let runs: Vec<RunSummary> = [("flat", 0, 3.0), ("flat", 1, 3.1), ("h12", 0, 2.9)]
            .into_iter()
            .map(|(name, seed, first)| RunSummary {
                run: Run {
                    name: name.to_string(),
                    seed,
                    parameters: 10,
                    flops_per_token: 1e6,
                    tokens_per_step: 64.0,
                },
                steps: 20,
                curve: [(10, first), (20, first - 0.5)]
                    .map(|(step, bpc)| Point {
                        step,
                        seconds: step as f64 / 10.0,
                        flops: step as f64 * 64e6,
                        bpc,
                    })
                    .to_vec(),
                tokens_per_s: 100.0,
            })
            .collect();
        for axis in Axis::ALL {
            let s = svg(&runs, axis);
            assert_eq!(s.matches("<title>").count(), 3, "{s}");
            assert!(s.contains("flat — final 2.5500 ± 0.0707 bpc"), "{s}");
            assert!(s.contains("h12 — final 2.4000 ± 0.0000 bpc"), "{s}");
        }
        assert!(svg(&runs, Axis::Flops).contains("(0 – 1.28e9)"));
        assert!(svg(&runs, Axis::Seconds).contains("(0 – 2.0)"));
    }
}
