#!/usr/bin/env python3
"""Generate parity fixtures for `hier` from the PyTorch reference.

Reference: simple-hierarchical-transformer==0.4.0 (with local-attention==1.11.2,
rotary-embedding-torch==0.9.1), see tools/README.md for the venv.

    /opt/refvenv/bin/python tools/gen_fixtures.py [--out tests/fixtures] [--only CASE ...]

For every case writes tests/fixtures/<case>/{config.json, model.safetensors, expected.safetensors}.
Deterministic: CPU, float32, torch.set_num_threads(2), torch.manual_seed(<case seed>) before
model construction; the same RNG stream then perturbs the weights, draws the ids and drives the
gumbel noise of generate().
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

from simple_hierarchical_transformer import HierarchicalTransformer

NUM_TOKENS = 48
SEQ_LEN = 32
PROMPT_LEN = 5
GEN_EXTRA = 6  # generate seq_len + 6 new tokens -> context gets cropped to the last seq_len ids

# name, seed, L (number of model inputs; ids have L + 1 columns), constructor kwargs
CASES = [
    ("flat", 1, 32, dict(
        num_tokens=NUM_TOKENS, dim=32, depth=2, seq_len=SEQ_LEN, heads=2, dim_head=16,
        hierarchies=1, window_sizes=None,
    )),
    ("h12_local", 2, 32, dict(
        num_tokens=NUM_TOKENS, dim=16, depth=2, seq_len=SEQ_LEN, heads=2, dim_head=8, ff_mult=2,
        hierarchies=(1, 2), window_sizes=(8, 4),
    )),
    ("h124_stride", 3, 32, dict(
        num_tokens=NUM_TOKENS, dim=(32, 24, 16), depth=2, seq_len=SEQ_LEN, heads=2, dim_head=8,
        ff_mult=(2, 1, 1),
        hierarchies=(1, 2, 4), hierarchical_stride=(1, 2, 2), window_sizes=(8, None, 4),
    )),
    ("predict_all", 4, 32, dict(
        num_tokens=NUM_TOKENS, dim=(16, 32), depth=2, seq_len=SEQ_LEN, heads=2, dim_head=8,
        ff_mult=(2, 1),
        hierarchies=(1, 2), window_sizes=(None, None), predict_use_all_hierarchy=True,
    )),
    ("merge_all", 5, 32, dict(
        num_tokens=NUM_TOKENS, dim=(16, 16), depth=2, seq_len=SEQ_LEN, heads=2, dim_head=8, ff_mult=2,
        hierarchies=(1, 4), hierarchical_stride=(1, 2), window_sizes=(8, 4),
        hierarchy_merge_all=True,
    )),
    ("window0", 6, 32, dict(
        num_tokens=NUM_TOKENS, dim=16, depth=2, seq_len=SEQ_LEN, heads=2, dim_head=8,
        hierarchies=(1, 2), window_sizes=(0, 8),
    )),
    ("odd_len", 7, 29, dict(
        num_tokens=NUM_TOKENS, dim=16, depth=2, seq_len=SEQ_LEN, heads=2, dim_head=8, ff_mult=2,
        hierarchies=(1, 4), window_sizes=(6, 16),
    )),
    ("rollouts", 8, 32, dict(
        num_tokens=NUM_TOKENS, dim=16, depth=2, seq_len=SEQ_LEN, heads=2, dim_head=8,
        ff_mult=(2, 1),
        hierarchies=(1, 2), window_sizes=(8, 4), predict_hierarchy=2,
        num_rollouts=2, dynamics_hidden_dim=24, next_latent_loss_type="smooth_l1",
        recon_loss_weight=0.3, next_latent_loss_weight=0.5,
    )),
]

# constant rotary tensors: never perturbed (they are not learned)
CONSTANT_SUFFIXES = ("rotary_emb.freqs", "attn_fn.rel_pos.inv_freq")


def to_json_cfg(cfg):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def make_ids(num_tokens, L):
    ids = torch.randint(1, num_tokens, (2, L + 1), dtype=torch.long)
    # zeros (= ignore_index) in the interior, after the generation prompt:
    # one at an even and one at an odd column per row (even columns are chunk ends for stride 2)
    for row in range(2):
        even = 2 * int(torch.randint(3, L // 2, ()).item())
        odd = 2 * int(torch.randint(3, (L - 1) // 2, ()).item()) + 1
        assert PROMPT_LEN < even < L and PROMPT_LEN < odd < L
        ids[row, even] = 0
        ids[row, odd] = 0
    return ids


def greedy_argmax(model, prompt, n):
    """Plain argmax decoding with the reference's context cropping, to cross-check generate()."""
    out = prompt
    with torch.no_grad():
        for _ in range(n):
            logits = model(out[:, -model.seq_len:])[:, -1]
            out = torch.cat((out, logits.argmax(dim=-1, keepdim=True)), dim=-1)
    return out[:, prompt.shape[-1]:]


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def gen_case(name, seed, L, cfg, out_root):
    torch.manual_seed(seed)
    model = HierarchicalTransformer(**cfg)

    # perturb every trainable parameter away from its init
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
            else:
                assert pname.endswith(CONSTANT_SUFFIXES), pname

    ids = make_ids(cfg["num_tokens"], L)
    inp = ids[:, :-1]

    exp = {"ids": ids.clone().contiguous()}

    # 1. logits
    with torch.no_grad():
        logits = model(inp)
    assert logits.shape == (2, L, cfg["num_tokens"])
    exp["logits"] = f32(logits)

    # 2. losses + gradients
    model.zero_grad(set_to_none=True)
    total, (ce, nl, recon, per_h) = model(ids, return_loss=True)
    total.backward()
    exp["total_loss"] = f32(total)
    exp["ce_loss"] = f32(ce)
    exp["next_latent_loss"] = f32(nl)
    exp["recon_loss"] = f32(recon)
    exp["next_latent_per_hierarchy"] = f32(torch.stack([torch.as_tensor(x) for x in per_h]))
    none_grads = []
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            none_grads.append(pname)
            exp["grad." + pname] = torch.zeros_like(p, dtype=torch.float32)
        else:
            exp["grad." + pname] = f32(p.grad)
    model.zero_grad(set_to_none=True)

    # 3. hierarchical embeddings
    with torch.no_grad():
        embeds = model(inp, return_hierarchical_embeds=True)
        token_embeds = model(inp, return_hierarchical_token_embeds=True)
    for i, e in enumerate(embeds):
        exp[f"embeds.{i}"] = f32(e)
    for i, e in enumerate(token_embeds):
        exp[f"token_embeds.{i}"] = f32(e)

    # 4. greedy generation past seq_len
    n_new = cfg["seq_len"] + GEN_EXTRA
    prompt = ids[:1, :PROMPT_LEN].clone().contiguous()
    gen = model.generate(prompt, n_new, temperature=0.)
    assert gen.shape == (1, n_new), gen.shape
    ref_greedy = greedy_argmax(model, prompt, n_new)
    if not torch.equal(gen, ref_greedy):
        print(f"[{name}] WARNING: generate(temperature=0) differs from plain argmax decoding",
              file=sys.stderr)
    exp["gen_prompt"] = prompt
    exp["gen_out"] = gen.to(torch.long).contiguous()

    # write
    case_dir = os.path.join(out_root, name)
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "config.json"), "w") as f:
        json.dump(to_json_cfg(cfg), f, indent=2)
        f.write("\n")
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(case_dir, "model.safetensors"))
    save_file(exp, os.path.join(case_dir, "expected.safetensors"))

    sizes = {fn: os.path.getsize(os.path.join(case_dir, fn))
             for fn in ("config.json", "model.safetensors", "expected.safetensors")}
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"{name}: ids {tuple(ids.shape)} logits {tuple(logits.shape)} "
        f"embeds {[tuple(e.shape) for e in embeds]} params {n_params} | "
        f"total {total.detach().item():.6f} ce {ce.detach().item():.6f} next_latent {nl.detach().item():.6f} "
        f"recon {recon.detach().item():.6f} per_h {[round(float(x.detach()), 6) for x in per_h]} | "
        f"gen {gen[0].tolist()[:8]}... greedy==argmax {torch.equal(gen, ref_greedy)} | "
        f"bytes model {sizes['model.safetensors']} expected {sizes['expected.safetensors']}"
        + (f" | None grads (written as zeros): {none_grads}" if none_grads else "")
    )
    return sum(sizes.values())


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float32)

    total = 0
    for name, seed, L, cfg in CASES:
        if args.only and name not in args.only:
            continue
        total += gen_case(name, seed, L, cfg, os.path.normpath(args.out))
    print(f"total fixture bytes: {total}")


if __name__ == "__main__":
    main()
