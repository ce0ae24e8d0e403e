"""Reference GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers"), for tests/test_quantize.cpp.

  gptq.py IN OUT

IN (safetensors) holds the weight "w" (out, in), the calibration inputs "x" (tokens, in) and
"config" = [bits, group_size, damp] (float64). OUT receives the dequantized weight "q" (out, in)
and the integer codes "codes" (out, in) of GPTQ, and those of round-to-nearest ("rtn_q").

This is the paper's Algorithm 1 without its lazy batching: after each column is quantized, its
error (w - q) / [H^-1]_jj is spread over every column after it at once, through the row of the
upper Cholesky factor of H^-1. Lazy batching changes when updates are applied, not what they
are, so a lazily batched implementation must agree. The Hessian is H = 2 X^T X / n, dampened by
damp * mean(diag H); inputs that never fired (diag 0) get H_jj = 1 and a zero weight column.

Grids (the stored formats):
  8 bits: symmetric per output row, scale = max|w| / 127, q = clamp(round(w / scale), -127, 127),
          dequantized q * scale; the scales come from the weights before any update.
  4 bits: asymmetric per group of group_size inputs of a row, scale = (max - min) / 15,
          zero = min + 8 * scale, q = clamp(round((w - zero) / scale) + 8, 0, 15), dequantized
          (q - 8) * scale + zero; a group's scale and zero come from its weights as updated
          when its first column is reached.
"""
import sys

import torch
from safetensors.torch import load_file, save_file

MIN_SCALE = 1e-10


def grid_params(w, bits):
    if bits == 8:
        return (w.abs().amax(dim=1) / 127).clamp(min=MIN_SCALE), None
    lo, hi = w.amin(dim=1), w.amax(dim=1)
    scale = ((hi - lo) / 15).clamp(min=MIN_SCALE)
    return scale, lo + 8 * scale


def quantize(w, scale, zero, bits):
    """Codes and dequantized values of a column w (rows,)."""
    if bits == 8:
        q = torch.clamp(torch.round(w / scale), -127, 127)
        return q, q * scale
    q = torch.clamp(torch.round((w - zero) / scale) + 8, 0, 15)
    return q, (q - 8) * scale + zero


def rtn(w, bits, group):
    q = torch.empty_like(w)
    codes = torch.empty_like(w)
    for start in range(0, w.shape[1], group):
        block = w[:, start:start + group]
        scale, zero = grid_params(block, bits)
        for j in range(block.shape[1]):
            c, v = quantize(block[:, j], scale, zero, bits)
            codes[:, start + j], q[:, start + j] = c, v
    return codes, q


def gptq(w, x, bits, group, damp):
    W = w.clone()
    H = 2 * x.T @ x / x.shape[0]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], dtype=H.dtype)
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)
    cols = W.shape[1]
    Q = torch.zeros_like(W)
    codes = torch.zeros_like(W)
    scale, zero = grid_params(W, bits) if bits == 8 else (None, None)
    for j in range(cols):
        if bits == 4 and j % group == 0:
            scale, zero = grid_params(W[:, j:j + group], bits)
        c, v = quantize(W[:, j], scale, zero, bits)
        codes[:, j], Q[:, j] = c, v
        err = (W[:, j] - v) / U[j, j]
        W[:, j:] -= err[:, None] * U[j, j:][None, :]
    return codes, Q


def main():
    src, out = sys.argv[1], sys.argv[2]
    t = load_file(src)
    w, x = t["w"].double(), t["x"].double()
    bits, group, damp = t["config"].tolist()
    bits, group = int(bits), int(group) if bits == 4 else w.shape[1]
    codes, q = gptq(w, x, bits, group, damp)
    rcodes, rq = rtn(w, bits, group)
    save_file({"q": q.contiguous(), "codes": codes.contiguous(), "rtn_q": rq.contiguous(),
               "rtn_codes": rcodes.contiguous()}, out)


if __name__ == "__main__":
    main()
