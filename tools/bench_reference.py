"""Time the PyTorch reference on the same configurations and modes as `hier bench`, so the two
can be compared on one machine in one run (optional venv, never used by CI; see tools/README.md).

    python tools/bench_reference.py --config CONFIG.json --mode train|infer|generate \
        --batch 4 --steps 10 --warmup 2 [--threads 2]

Prints one JSON object per line with mode, median_ms, tokens_per_s, peak_rss_mib.
"""
import argparse
import json
import resource
import statistics
import time

import torch
from simple_hierarchical_transformer import HierarchicalTransformer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--mode", choices=["train", "infer", "generate"], required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    config = json.load(open(a.config))
    model = HierarchicalTransformer(**config)
    n, vocab = config.get("seq_len", 2048), config["num_tokens"]

    def ids(length):
        return torch.randint(1, vocab, (a.batch, length))

    rows = []
    if a.mode == "train":
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        times = []
        for i in range(a.warmup + a.steps):
            x = ids(n + 1)
            t0 = time.perf_counter()
            loss, _ = model(x, return_loss=True)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if i >= a.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
        rows.append(("train", statistics.median(times), a.batch * n))
    elif a.mode == "infer":
        model.eval()
        times = []
        with torch.no_grad():
            for i in range(a.warmup + a.steps):
                x = ids(n)
                t0 = time.perf_counter()
                model(x)
                if i >= a.warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
        rows.append(("infer", statistics.median(times), a.batch * n))
    else:
        prompt = ids(1)
        t0 = time.perf_counter()
        model.generate(prompt, a.steps)
        rows.append(("generate_recompute", (time.perf_counter() - t0) * 1e3 / a.steps, a.batch))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for mode, ms, tokens in rows:
        print(json.dumps({"mode": mode, "median_ms": ms, "tokens_per_s": tokens / (ms / 1e3),
                          "batch": a.batch, "seq_len": n, "peak_rss_mib": peak, "backend": "torch-cpu"}))


if __name__ == "__main__":
    main()
