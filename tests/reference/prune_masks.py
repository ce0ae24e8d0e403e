"""Reference pruning masks, written from the papers' definitions (for tests/test_prune.cpp).

  prune_masks.py IN OUT SPARSITY N M

IN (safetensors) holds, for each prunable layer <name>, its weight "w.<name>" (out, in) and the
inputs it saw during calibration "x.<name>" (tokens, in). OUT receives bool masks (true = kept):

  magnitude.<name>   the round(s * numel) smallest |W| of the layer removed
  global.<name>      the round(s * total) smallest |W| over all layers together removed
  wanda.<name>       Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2, the round(s * in) lowest of
                     each output row removed
  nm.<name>          N:M by magnitude: in each group of M consecutive weights of a row, the N largest kept
  nm_wanda.<name>    N:M by the Wanda score
"""
import sys

import torch
from safetensors.torch import load_file, save_file


def drop_smallest(score, k):
    """Mask of score's shape with the k smallest entries (over the whole tensor) false."""
    flat = torch.ones(score.numel(), dtype=torch.bool)
    if k > 0:
        flat[torch.topk(score.flatten(), k, largest=False).indices] = False
    return flat.reshape(score.shape)


def per_row(score, k):
    mask = torch.ones_like(score, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, False)
    return mask


def n_of_m(score, n, m):
    rows, cols = score.shape
    mask = torch.zeros_like(score, dtype=torch.bool)
    for start in range(0, cols, m):
        block = score[:, start:start + m]
        mask.scatter_(1, start + torch.topk(block, n, dim=1).indices, True)
    return mask


def main(src, dst, sparsity, n, m):
    t = load_file(src)
    names = sorted(k[2:] for k in t if k.startswith("w."))
    out = {}
    for name in names:
        w = t["w." + name].double()
        x = t["x." + name].double()
        mag = w.abs()
        wanda = mag * x.norm(p=2, dim=0).reshape(1, -1)
        out["magnitude." + name] = drop_smallest(mag, round(sparsity * w.numel()))
        out["wanda." + name] = per_row(wanda, round(sparsity * w.shape[1]))
        out["nm." + name] = n_of_m(mag, n, m)
        out["nm_wanda." + name] = n_of_m(wanda, n, m)
    every = torch.cat([t["w." + name].double().abs().flatten() for name in names])
    keep = drop_smallest(every, round(sparsity * every.numel()))
    offset = 0
    for name in names:
        w = t["w." + name]
        out["global." + name] = keep[offset:offset + w.numel()].reshape(w.shape)
        offset += w.numel()
    save_file({k: v.contiguous() for k, v in out.items()}, dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
