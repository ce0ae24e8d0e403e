"""Learning rates of lathe's schedules as PyTorch's own schedulers produce them.

  python schedules.py OUT.json

For each case of the table below (schedule name, warmup steps, max steps, min_lr_ratio,
decay_fraction), the rate of every step 0 .. max_steps - 1 from torch.optim.lr_scheduler:
warmup is LinearLR from 1/warmup to 1; cosine is CosineAnnealingLR to lr * min_lr_ratio; linear
is LinearLR to min_lr_ratio; constant is the warmup alone; wsd (warmup-stable-decay) is the
warmup, ConstantLR at factor 1, then LinearLR to min_lr_ratio over the last decay_fraction of
the steps; the phases are joined by SequentialLR.
"""
import json
import sys
import warnings

import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, SequentialLR

warnings.filterwarnings("ignore")  # SequentialLR's deprecation notes on epoch arguments

LR = 3e-3
CASES = [
    ("cosine", 3, 10, 0.1, 0.2),
    ("cosine", 0, 12, 0.0, 0.2),
    ("cosine", 5, 40, 0.25, 0.2),
    ("linear", 3, 10, 0.1, 0.2),
    ("linear", 0, 7, 0.0, 0.2),
    ("constant", 4, 9, 0.1, 0.2),
    ("constant", 0, 5, 0.1, 0.2),
    ("wsd", 2, 10, 0.1, 0.4),
    ("wsd", 3, 20, 0.0, 0.25),
]


def scheduler(opt, name, warmup, steps, ratio, frac):
    phases, milestones = [], []
    if warmup > 0:
        phases.append(LinearLR(opt, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1))
        milestones.append(warmup)
    if name == "cosine":
        phases.append(CosineAnnealingLR(opt, T_max=steps - warmup, eta_min=opt.defaults["lr"] * ratio))
    elif name == "linear":
        phases.append(LinearLR(opt, start_factor=1.0, end_factor=ratio, total_iters=steps - warmup))
    elif name == "constant":
        phases.append(ConstantLR(opt, factor=1.0, total_iters=0))
    elif name == "wsd":
        decay = round(frac * steps)
        assert decay == frac * steps, "choose decay_fraction * max_steps whole"
        phases.append(ConstantLR(opt, factor=1.0, total_iters=0))
        milestones.append(steps - decay)
        phases.append(LinearLR(opt, start_factor=1.0, end_factor=ratio, total_iters=decay))
    if len(phases) == 1:
        return phases[0]
    return SequentialLR(opt, phases, milestones=milestones)


def rates(name, warmup, steps, ratio, frac):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = scheduler(opt, name, warmup, steps, ratio, frac)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def main(path):
    cases = [{"name": n, "warmup_steps": w, "max_steps": s, "min_lr_ratio": r, "decay_fraction": f, "lr": LR,
              "rates": rates(n, w, s, r, f)} for n, w, s, r, f in CASES]
    json.dump(cases, open(path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
