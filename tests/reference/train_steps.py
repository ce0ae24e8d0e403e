"""llm.c-style reference for the trainer (tests/test_train.cpp): the same initial weights and the
same batches, ten AdamW steps in PyTorch.

  python train_steps.py KIND DIR     KIND: gpt2 or bert_mlm

Writes DIR/init (a Hugging Face model, dropout off), DIR/batches.safetensors (micro-batches
"<field>.<step>.<micro>"), DIR/losses.json (the loss of each step, mean over micro-batches) and
DIR/final (the model after the ten steps). Hyper-parameters are those of the C++ test's recipe.
"""
import json
import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
import transformers
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

transformers.logging.set_verbosity_error()

STEPS, ACCUM, BATCH, SEQ = 10, 2, 4, 16
LR, WD, BETAS, EPS, CLIP = 3e-3, 0.1, (0.9, 0.95), 1e-8, 1.0
WARMUP, MIN_RATIO = 3, 0.1


def lr_at(step):
    """Linear warmup, then cosine to LR * MIN_RATIO at step STEPS (the recipe's schedule)."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    p = min(max((step - WARMUP) / (STEPS - WARMUP), 0.0), 1.0)
    floor = LR * MIN_RATIO
    return floor + (LR - floor) * 0.5 * (1 + math.cos(math.pi * p))


def main(kind, out):
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

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        embedding = "embeddings" in name or name.endswith("wte.weight") or name.endswith("wpe.weight")
        (decay if p.dim() >= 2 and not embedding else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS, fused=True)
    model.train()
    losses = []
    for s in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = lr_at(s)
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
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100)
            (loss / ACCUM).backward()
            total += loss.item() / ACCUM
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        losses.append(total)
    model.save_pretrained(f"{out}/final")
    json.dump(losses, open(f"{out}/losses.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
