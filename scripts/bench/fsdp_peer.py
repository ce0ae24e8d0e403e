"""PyTorch's FSDP2 on CPU ranks: the peer of lathe's distributed.strategy fsdp in scripts/bench/memory.sh.

A GPT-2 124M-shaped transformers GPT2LMHeadModel, each block and then the whole model wrapped
with torch.distributed.fsdp.fully_shard (gloo), AdamW, random tokens; optionally each block
checkpointed (torch.utils.checkpoint, non-reentrant). Prints the median tokens/s of the steps
after the first (all ranks' tokens) and the largest peak RSS of the ranks.

    torchrun --standalone --nproc-per-node 2 scripts/bench/fsdp_peer.py --steps 4 --seq 128 --batch 2
"""

import argparse
import resource
import statistics
import time

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.utils.checkpoint import checkpoint
from transformers import GPT2Config, GPT2LMHeadModel


class Checkpointed(torch.nn.Module):
    """A block whose forward is re-run in the backward (torch.utils.checkpoint)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, hidden_states, *args, **kwargs):
        return checkpoint(self.block, hidden_states, *args, use_reentrant=False, **kwargs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--checkpointing", choices=["none", "blocks"], default="none")
    a = p.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    torch.manual_seed(1)
    config = GPT2Config(n_positions=a.seq, n_embd=768, n_layer=12, n_head=12, vocab_size=50257, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    model.config.use_cache = False
    for i, block in enumerate(model.transformer.h):
        if a.checkpointing == "blocks":
            block = Checkpointed(block)
            model.transformer.h[i] = block
        fully_shard(block)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), foreach=True)
    g = torch.Generator().manual_seed(dist.get_rank())
    times = []
    for _ in range(a.steps):
        ids = torch.randint(0, 4096, (a.batch, a.seq), generator=g)
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    rss = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20])
    dist.all_reduce(rss, op=dist.ReduceOp.MAX)
    tokens = a.batch * a.seq * dist.get_world_size()
    if dist.get_rank() == 0:
        tps = tokens / statistics.median(times[1:] or times)
        print(f"PyTorch {torch.__version__} FSDP2, checkpointing {a.checkpointing}: tokens/s {tps:.0f}, "
              f"peak RSS {rss.item():.2f} GiB per rank (largest)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
