"""Reference values for the dpo tests (tests/test_dpo.cpp).

  loss IN OUT BETA LS  for the policy log-probabilities "logps" (2B: the chosen rows, then the
                       rejected) and the reference's "reference" (B, 2) in IN, each pair's DPO loss
                       and rewards in OUT ("loss", "chosen_rewards", "rejected_rewards", (B) float64):
                       with LS 0, trl's own DPOTrainer loss (loss_type sigmoid) run on the pair alone,
                       its rewards/chosen and rewards/rejected metrics; with LS > 0, conservative DPO
                       as its note states it (Mitchell 2023): -(1 - LS) log sigmoid(beta d) - LS log
                       sigmoid(-beta d), which trl's sigmoid loss no longer takes
"""
import collections
import sys
import types

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def trl_pair(chosen, rejected, ref_chosen, ref_rejected, beta):
    """trl's DPOTrainer._compute_loss on one pair whose summed log-probabilities are given: the
    model's per-token log-probabilities are one token holding the sum."""
    from trl.trainer.dpo_trainer import DPOTrainer
    logps = torch.tensor([[chosen], [rejected]], dtype=torch.float64)
    outputs = types.SimpleNamespace(log_probs=logps, entropy=torch.zeros_like(logps),
                                    mean_logits=torch.zeros_like(logps), is_top1=torch.zeros_like(logps, dtype=torch.bool))
    model = types.SimpleNamespace(training=False)
    accelerator = types.SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)
    metrics = collections.defaultdict(lambda: collections.defaultdict(list))
    trainer = types.SimpleNamespace(model=model, accelerator=accelerator, aux_loss_enabled=False, ld_alpha=None,
                                    precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=["sigmoid"],
                                    loss_weights=[1.0], beta=beta, use_weighting=False, _metrics=metrics,
                                    _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(2, 2, dtype=torch.long), "attention_mask": torch.ones(2, 2, dtype=torch.long),
              "completion_mask": torch.tensor([[0, 1], [0, 1]]),
              "ref_chosen_logps": torch.tensor([ref_chosen], dtype=torch.float64),
              "ref_rejected_logps": torch.tensor([ref_rejected], dtype=torch.float64)}
    loss = DPOTrainer._compute_loss(trainer, lambda **kw: outputs, inputs, return_outputs=False)
    m = metrics["eval"]
    return loss.item(), m["rewards/chosen"][-1], m["rewards/rejected"][-1]


def loss(path_in, path_out, beta, ls):
    beta, ls = float(beta), float(ls)
    t = load_file(path_in)
    logps, ref = t["logps"].double(), t["reference"].double()
    n = ref.shape[0]
    out = {k: torch.zeros(n, dtype=torch.float64) for k in ("loss", "chosen_rewards", "rejected_rewards")}
    for i in range(n):
        pc, pr, rc, rr = logps[i].item(), logps[n + i].item(), ref[i, 0].item(), ref[i, 1].item()
        if ls == 0:
            value, cr, rj = trl_pair(pc, pr, rc, rr, beta)
        else:
            cr, rj = beta * (pc - rc), beta * (pr - rr)
            d = torch.tensor((pc - rc) - (pr - rr), dtype=torch.float64)
            value = (-(1 - ls) * F.logsigmoid(beta * d) - ls * F.logsigmoid(-beta * d)).item()
        out["loss"][i], out["chosen_rewards"][i], out["rejected_rewards"][i] = value, cr, rj
    save_file(out, path_out)


if __name__ == "__main__":
    {"loss": loss}[sys.argv[1]](*sys.argv[2:])
