#!/usr/bin/env python3
"""Check that a model directory written by hier loads into the PyTorch reference and gives the same logits.

    /opt/refvenv/bin/python tools/check_torch_load.py MODEL_DIR IDS_JSON HIER_OUT_SAFETENSORS

MODEL_DIR             directory with config.json (HierarchicalTransformer kwargs) and model.safetensors
IDS_JSON              a JSON list of equal-length lists of ints: a path to a .json file, or the JSON text itself
HIER_OUT_SAFETENSORS  safetensors file holding the tensor `logits` [b, n, num_tokens] computed by hier

Loads with load_state_dict(strict=True), runs model(ids) and prints the max abs difference.
Exit status 0 if it is < 1e-4, 1 otherwise (also on shape mismatch / load errors).
"""

import json
import os
import sys

TOL = 1e-4


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, ids_arg, out_path = argv[1:]

    import torch
    from safetensors.torch import load_file
    from simple_hierarchical_transformer import HierarchicalTransformer

    torch.set_num_threads(2)

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)

    if os.path.exists(ids_arg):
        with open(ids_arg) as f:
            ids_list = json.load(f)
    else:
        ids_list = json.loads(ids_arg)
    if not (isinstance(ids_list, list) and ids_list and all(isinstance(r, list) for r in ids_list)):
        print("IDS_JSON must be a non-empty JSON list of lists of ints", file=sys.stderr)
        return 1
    if len({len(r) for r in ids_list}) != 1:
        print("IDS_JSON rows must all have the same length", file=sys.stderr)
        return 1
    ids = torch.tensor(ids_list, dtype=torch.long)

    model = HierarchicalTransformer(**cfg)
    state = load_file(os.path.join(model_dir, "model.safetensors"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        print(f"load_state_dict(strict=True) failed:\n{e}", file=sys.stderr)
        return 1
    model.eval()

    with torch.no_grad():
        logits = model(ids)

    hier = load_file(out_path)
    if "logits" not in hier:
        print(f"{out_path} has no tensor 'logits' (keys: {sorted(hier)})", file=sys.stderr)
        return 1
    hier_logits = hier["logits"].to(torch.float32)
    if tuple(hier_logits.shape) != tuple(logits.shape):
        print(f"shape mismatch: hier {tuple(hier_logits.shape)} vs torch {tuple(logits.shape)}",
              file=sys.stderr)
        return 1

    diff = (hier_logits - logits).abs().max().item()
    ok = diff < TOL
    print(f"max abs diff {diff:.3e} over logits {tuple(logits.shape)} "
          f"({'OK' if ok else 'FAIL'}, tol {TOL:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
