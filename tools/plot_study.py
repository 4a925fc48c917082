#!/usr/bin/env python3
"""Re-plot a study spread over several `hier compare` runs.

Each `hier compare --out DIR` writes DIR/compare.json and plots of its own runs only. A study run
in several sessions (one `--out` directory each) is plotted together with:

    tools/plot_study.py --out docs/experiments/study runs/study-b/compare.json runs/study-g/compare.json ...

which writes `PREFIX-steps.svg`, `PREFIX-seconds.svg` and `PREFIX-flops.svg` (default prefix
`study`) with the layout of `hier compare`'s own plots: one thin line per run in its config's
colour, one legend entry per config with the mean ± sample standard deviation of the final
16-batch validation bpc over its seeds. `--only NAME ...` keeps the named configs.
Standard library only.
"""

import argparse
import json
import math
import statistics
from pathlib import Path

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
          "#17becf", "#7f7f7f", "#bcbd22"]
W, H, PAD = 640.0, 340.0, 50.0
AXES = {
    "steps": ("step", "steps (0 – {:.0f})"),
    "seconds": ("seconds", "seconds of training (0 – {:.1f})"),
    "flops": ("flops", "training FLOPs (0 – {:.2e}): steps × tokens/step × FLOPs/token"),
}


def load(paths, only):
    runs = []
    for path in paths:
        for run in json.loads(Path(path).read_text())["runs"]:
            if not only or run["name"] in only:
                runs.append(run)
    if not runs:
        raise SystemExit("no runs to plot: check the compare.json paths and --only names")
    return runs


def by_config(runs):
    groups = {}
    for run in runs:
        groups.setdefault(run["name"], []).append(run)
    return groups


def svg(runs, axis):
    key, label = AXES[axis]
    points = [p for r in runs for p in r["curve"] if math.isfinite(p["bpc"])]
    x_max = max(p[key] for p in points) or 1.0
    y_min = min(p["bpc"] for p in points)
    y_max = max(max(p["bpc"] for p in points), y_min + 1e-6)

    def fx(x):
        return PAD + x / x_max * (W - 1.5 * PAD)

    def fy(y):
        return H - PAD - (y - y_min) / (y_max - y_min) * (H - 1.5 * PAD)

    groups = by_config(runs)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 20 + 16 * len(groups)}"'
           ' font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<polyline fill="none" stroke="black" points="{fx(0)},{fy(y_max):.1f} {fx(0)},'
           f'{fy(y_min):.1f} {fx(x_max):.1f},{fy(y_min):.1f}"/>',
           f'<text x="{W / 2}" y="{H - PAD / 3:.1f}" text-anchor="middle">{label.format(x_max)}</text>',
           f'<text x="{fx(0) - 40}" y="{fy(y_max) - 6:.1f}">valid bpc {y_max:.3f}</text>',
           f'<text x="{fx(0) - 40}" y="{fy(y_min) + 4:.1f}">{y_min:.3f}</text>']
    for i, (name, group) in enumerate(groups.items()):
        color = COLORS[i % len(COLORS)]
        for r in group:
            path = " ".join(f"{fx(p[key]):.1f},{fy(p['bpc']):.1f}" for p in r["curve"]
                            if math.isfinite(p["bpc"]))
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.2" stroke-opacity="0.8"'
                       f' points="{path}"><title>{name} seed {r["seed"]}</title></polyline>')
        finals = [r["curve"][-1]["bpc"] for r in group]
        std = statistics.stdev(finals) if len(finals) > 1 else 0.0
        y = H + 10 + 16 * i
        out.append(f'<rect x="{PAD}" y="{y - 4}" width="12" height="4" fill="{color}"/>'
                   f'<text x="{PAD + 18}" y="{y}">{name} — final {statistics.mean(finals):.4f} ± '
                   f'{std:.4f} bpc (mean ± sample std of {len(finals)} seeds)</text>')
    out.append("</svg>\n")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_json", nargs="+", help="compare.json files of `hier compare` runs")
    parser.add_argument("--out", required=True, help="directory for the plots")
    parser.add_argument("--prefix", default="study", help="file name prefix (default: study)")
    parser.add_argument("--only", nargs="*", default=[], help="config names to keep (default: all)")
    args = parser.parse_args()
    runs = load(args.compare_json, set(args.only))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for axis in AXES:
        path = out / f"{args.prefix}-{axis}.svg"
        path.write_text(svg(runs, axis))
        print(f"wrote {path} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
