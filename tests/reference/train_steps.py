"""llm.c-style reference for the trainer (tests/test_train.cpp): the same initial weights and the
same batches, ten optimizer steps in PyTorch.

  python train_steps.py KIND DIR OPTIM SCHEDULE
    KIND: gpt2 or bert_mlm; OPTIM: adamw (fused), adamw_unfused, sgd, sgd_nesterov;
    SCHEDULE: cosine, linear, constant or wsd (as schedules.py builds them from
    torch.optim.lr_scheduler)

Writes DIR/init (a Hugging Face model, dropout off), DIR/batches.safetensors (micro-batches
"<field>.<step>.<micro>"), DIR/losses.json (the loss of each step: the mean over its targets) and
DIR/final (the model after the ten steps). Hyper-parameters are those of the C++ test's recipe.

The weight-decay groups are built from the module types, the usual PyTorch recipe (minGPT's
configure_optimizers): the weights of Linear and Conv1D layers decay; biases, LayerNorm and
Embedding weights do not, and a weight tied to an embedding (GPT-2's lm_head) counts as the
embedding.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
import transformers
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import schedules  # noqa: E402

transformers.logging.set_verbosity_error()

STEPS, ACCUM, BATCH, SEQ = 10, 2, 4, 16
LR, WD, BETAS, EPS, CLIP, MOMENTUM = 3e-3, 0.1, (0.9, 0.95), 1e-8, 1.0, 0.9
WARMUP, MIN_RATIO, DECAY_FRACTION = 3, 0.1, 0.4


def decay_groups(model):
    decay, no_decay = {}, {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name.endswith("bias") or isinstance(module, (torch.nn.LayerNorm, torch.nn.Embedding)):
                no_decay[id(p)] = p
            elif isinstance(module, (torch.nn.Linear, Conv1D)):
                decay[id(p)] = p
            else:
                raise SystemExit(f"no decay rule for {name} of {type(module).__name__}")
    return [p for i, p in decay.items() if i not in no_decay], list(no_decay.values())


def optimizer(model, kind):
    decay, no_decay = decay_groups(model)
    if kind.startswith("adamw"):
        groups = [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}]
        if kind == "adamw":
            return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, fused=True)
        return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, fused=False, foreach=False)
    # torch.optim.SGD's weight decay is L2 (added to the gradient), lathe's is decoupled: the
    # SGD cases run without weight decay.
    return torch.optim.SGD(decay + no_decay, lr=LR, momentum=MOMENTUM, nesterov=kind == "sgd_nesterov")


def main(kind, out, optim_kind, schedule):
    torch.manual_seed(4321)
    g = torch.Generator().manual_seed(8)
    batches = {}
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=101, n_positions=32,
                                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                           bos_token_id=None, eos_token_id=None))
        for s in range(STEPS):
            for m in range(ACCUM):
                row = torch.randint(0, 101, (BATCH, SEQ + 1), generator=g)
                batches[f"input.{s}.{m}"] = row[:, :-1].contiguous()
                batches[f"target.{s}.{m}"] = row[:, 1:].contiguous()
    else:
        model = BertForMaskedLM(BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                           intermediate_size=64, vocab_size=103, max_position_embeddings=32,
                                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
        for s in range(STEPS):
            for m in range(ACCUM):
                ids = torch.randint(5, 103, (BATCH, SEQ), generator=g)
                mask = torch.ones(BATCH, SEQ, dtype=torch.long)
                mask[1, 11:] = 0
                mask[3, 6:] = 0
                ids[mask == 0] = 0
                types = torch.zeros(BATCH, SEQ, dtype=torch.long)
                types[:, 8:] = 1
                labels = torch.full((BATCH, SEQ), -100, dtype=torch.long)
                pick = (torch.rand(BATCH, SEQ, generator=g) < 0.25) & (mask == 1)
                pick[:, 1] = True
                labels[pick] = torch.randint(5, 103, (BATCH, SEQ), generator=g)[pick]
                batches[f"input.{s}.{m}"] = ids
                batches[f"target.{s}.{m}"] = labels
                batches[f"mask.{s}.{m}"] = mask
                batches[f"types.{s}.{m}"] = types * mask
    model.save_pretrained(f"{out}/init")
    save_file(batches, f"{out}/batches.safetensors")

    opt = optimizer(model, optim_kind)
    sched = schedules.scheduler(opt, schedule, WARMUP, STEPS, MIN_RATIO, DECAY_FRACTION)
    model.train()
    losses = []
    for s in range(STEPS):
        opt.zero_grad()
        total = 0.0
        for m in range(ACCUM):
            x, y = batches[f"input.{s}.{m}"], batches[f"target.{s}.{m}"]
            if kind == "gpt2":
                logits = model(input_ids=x).logits
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            else:
                logits = model(input_ids=x, attention_mask=batches[f"mask.{s}.{m}"],
                               token_type_ids=batches[f"types.{s}.{m}"]).logits
                # As transformers' Trainer does (num_items_in_batch): the mean over the masked
                # targets of all the step's micro-batches, not the mean of their means.
                items = sum(int((batches[f"target.{s}.{k}"] != -100).sum()) for k in range(ACCUM))
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100,
                                       reduction="sum") / items * ACCUM
            (loss / ACCUM).backward()
            total += loss.item() / ACCUM
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        sched.step()
        losses.append(total)
    model.save_pretrained(f"{out}/final")
    json.dump(losses, open(f"{out}/losses.json", "w"))


if __name__ == "__main__":
    main(*sys.argv[1:5])
