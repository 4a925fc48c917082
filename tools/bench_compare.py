#!/usr/bin/env python3
"""Alternate `hier bench` and the PyTorch reference (tools/bench_reference.py) on the same
configs, several rounds, and report the median of each and their ratio.

On a shared or noisy machine one pair of runs says little; alternating rounds puts both under
the same conditions. Example:

    tools/bench_compare.py --config tools/bench/flat.json --config tools/bench/h12.json \
        --mode train --batch 4 --steps 5 --warmup 1 --rounds 5 --devices default --devices 1

`--devices default` runs `hier bench` without the flag (hier's own choice: one replica per
core on the CPU); a number passes `--devices N`.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hier", default="target/release/hier")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--config", action="append", required=True)
    p.add_argument("--mode", default="train", choices=["train", "infer"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--devices", action="append",
                   help="hier replicas: a number, or 'default' for none given (repeatable)")
    a = p.parse_args()
    devices = a.devices or ["default"]
    reference = Path(__file__).with_name("bench_reference.py")
    common = ["--mode", a.mode, "--batch", str(a.batch), "--steps", str(a.steps),
              "--warmup", str(a.warmup)]
    print("| config | runner | median ms (rounds) | peak RSS MiB | speed vs reference |")
    print("|---|---|---:|---:|---:|")
    for config in a.config:
        times = {}
        rss = {}
        for _ in range(a.rounds):
            for d in devices:
                flag = [] if d == "default" else ["--devices", d]
                name = "hier (default flags)" if d == "default" else f"hier --devices {d}"
                r = run([a.hier, "bench", "--config", config, *common, *flag, "--json"])
                times.setdefault(name, []).append(r["median_ms"])
                rss[name] = r["peak_rss_mib"]
            r = run([a.python, str(reference), "--config", config, *common,
                     "--threads", str(a.threads)])
            times.setdefault("reference", []).append(r["median_ms"])
            rss["reference"] = r["peak_rss_mib"]
        base = statistics.median(times["reference"])
        for name, ms in times.items():
            m = statistics.median(ms)
            rounds = ", ".join(f"{x:.0f}" for x in ms)
            print(f"| {Path(config).stem} | {name} | {m:.0f} ({rounds}) | {rss[name]:.0f} | {base / m:.2f}× |")


if __name__ == "__main__":
    main()
