//! `hier compare`'s plot: validation bits per character against steps and against wall-clock
//! seconds, as SVG.

use std::fmt::Write as _;

use hier_train::compare::RunSummary;

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
    fn the_plot_holds_every_run() {
        let runs: Vec<RunSummary> = ["flat", "h12"]
            .iter()
            .zip([3.0, 2.9])
            .map(|(name, first)| RunSummary {
                name: name.to_string(),
                parameters: 10,
                curve: vec![(10, 1.0, first), (20, 2.0, first - 0.5)],
                tokens_per_s: 100.0,
            })
            .collect();
        let s = svg(&runs);
        assert_eq!(s.matches("<polyline").count(), 4); // two panels x two runs
        assert!(s.contains("flat — final 2.5000 bpc"), "{s}");
        assert!(s.contains("h12 — final 2.4000 bpc"), "{s}");
    }
}
