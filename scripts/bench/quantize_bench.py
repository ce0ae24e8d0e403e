"""PyTorch's side of scripts/bench/quantize.sh: forward latency of the same weights in
transformers, in float32, through torch.ao's dynamic int8 quantization
(torch.ao.quantization.quantize_dynamic, fbgemm) and through torchao's int8 dynamic
activation + int8 weight config, on the Linear layers of the blocks (the output head stays
float, as in lathe's runs, unless "head" is given). Prints one JSON line per variant.

  quantize_bench.py HF_DIR encoder|lm BATCH SEQ REPS [head]
"""
import copy
import json
import statistics
import sys
import time
import warnings

import torch
from transformers import AutoModelForCausalLM, BertForMaskedLM
from transformers.pytorch_utils import Conv1D

warnings.filterwarnings("ignore")


def as_linear(module):
    """GPT-2's Conv1D layers as nn.Linear (the same product, weight transposed), so that the
    int8 paths, which quantize nn.Linear, apply to them."""
    for name, child in module.named_children():
        if isinstance(child, Conv1D):
            lin = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1])
            lin.weight.data = child.weight.data.t().contiguous()
            lin.bias.data = child.bias.data
            setattr(module, name, lin)
        else:
            as_linear(child)
    return module


def timed(model, ids, reps):
    with torch.inference_mode():
        for _ in range(2):
            model(ids)
        ms = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = model(ids)
            (out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits).sum().item()
            ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms)


def main():
    path, part, batch, seq, reps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    head = sys.argv[6:] == ["head"]
    if part == "encoder":
        model = BertForMaskedLM.from_pretrained(path).bert
        blocks = "encoder"
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
        blocks = "transformer"
    model = as_linear(model.eval())
    if head:  # the whole model, output head included (a tied head is quantized as a copy)
        blocks = None
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    print(json.dumps({"variant": "torch_fp32", "ms": timed(model, ids, reps)}), flush=True)

    dyn = copy.deepcopy(model)
    if blocks:
        setattr(dyn, blocks, torch.ao.quantization.quantize_dynamic(getattr(dyn, blocks), {torch.nn.Linear},
                                                                     dtype=torch.qint8))
    else:
        dyn = torch.ao.quantization.quantize_dynamic(dyn, {torch.nn.Linear}, dtype=torch.qint8)
    print(json.dumps({"variant": "torch_ao_quantize_dynamic", "ms": timed(dyn, ids, reps)}), flush=True)

    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError as e:
        print(json.dumps({"variant": "torchao_int8_dynamic", "error": str(e)}), flush=True)
        return
    ao = copy.deepcopy(model)
    quantize_(getattr(ao, blocks) if blocks else ao, Int8DynamicActivationInt8WeightConfig())
    print(json.dumps({"variant": "torchao_int8_dynamic", "ms": timed(ao, ids, reps)}), flush=True)


if __name__ == "__main__":
    main()
