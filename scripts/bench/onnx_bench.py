"""PyTorch's and ONNX Runtime's side of scripts/bench/onnx.sh.

  make KIND DIR                 KIND gpt2 (GPT-2 124M) or bert (BERT-base masked LM), random weights:
                                DIR/hf (transformers' save_pretrained), DIR/torch_fp32/model.onnx
                                (torch.onnx.export of the same model) and DIR/torch_int8/model.onnx
                                (onnxruntime.quantization.quantize_dynamic of that file, per-channel int8,
                                the output head left float as lathe's quantize stage leaves it)
  time DIR BATCH SEQ REPS [ROUND]
                                ONNX Runtime (CPU, default session options) on DIR/{lathe,torch}_{fp32,int8}:
                                one JSON line each, the median of REPS runs after a warm-up of two runs and
                                at least a second; which side goes first alternates with ROUND
  report DIR                    the table of every JSON line in DIR/times.jsonl (medians over rounds)
"""
import json
import statistics
import sys
import time
import warnings

import numpy as np


def make(kind, out):
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(use_cache=False)).eval()
    else:
        model = BertForMaskedLM(BertConfig()).eval()
    model.save_pretrained(f"{out}/hf")

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, extra):
            if kind == "gpt2":
                return self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=extra).logits
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=extra).logits

    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    mask = torch.ones_like(ids)
    extra = torch.arange(16).expand(2, 16) if kind == "gpt2" else torch.zeros_like(ids)
    names = ["input_ids", "attention_mask", "position_ids" if kind == "gpt2" else "token_type_ids"]
    import os
    os.makedirs(f"{out}/torch_fp32", exist_ok=True)
    os.makedirs(f"{out}/torch_int8", exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(Logits(model), (ids, mask, extra), f"{out}/torch_fp32/model.onnx", input_names=names,
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch_size", 1: "sequence_length"} for n in names + ["logits"]})
    # The output head stays float on both sides (lathe's quantize stage skips the output_head
    # role by default; a tied head is the embedding table): the peer excludes the MatMul or Gemm
    # that produces the logits.
    import onnx
    graph = onnx.load(f"{out}/torch_fp32/model.onnx").graph
    producer = {o: n for n in graph.node for o in n.output}
    node = producer["logits"]
    while node.op_type not in ("MatMul", "Gemm"):
        node = next(producer[i] for i in node.input if i in producer)
    quantize_dynamic(f"{out}/torch_fp32/model.onnx", f"{out}/torch_int8/model.onnx", per_channel=True,
                     weight_type=QuantType.QInt8, nodes_to_exclude=[node.name])


def time_all(directory, batch, seq, reps, round_index="0"):
    import onnxruntime as ort
    batch, seq, reps = int(batch), int(seq), int(reps)
    rng = np.random.default_rng(0)
    # The side that goes first alternates with the round: the first session of a process
    # runs in a machine state the second does not.
    for side in ("lathe", "torch") if int(round_index) % 2 == 0 else ("torch", "lathe"):
        for variant in ("fp32", "int8"):
            sess = ort.InferenceSession(f"{directory}/{side}_{variant}/model.onnx", providers=["CPUExecutionProvider"])
            vocab = 30000
            feeds = {}
            for i in sess.get_inputs():
                if i.name == "input_ids":
                    feeds[i.name] = rng.integers(0, vocab, (batch, seq), dtype=np.int64)
                elif i.name == "attention_mask":
                    feeds[i.name] = np.ones((batch, seq), np.int64)
                elif i.name == "position_ids":
                    feeds[i.name] = np.tile(np.arange(seq, dtype=np.int64), (batch, 1))
                else:
                    feeds[i.name] = np.zeros((batch, seq), np.int64)
            output = [sess.get_outputs()[0].name]  # the logits; lathe's BERT also offers hidden states
            warm = time.perf_counter()  # warm-up: two runs and at least a second
            for r in range(2):
                sess.run(output, feeds)
            while time.perf_counter() - warm < 1.0:
                sess.run(output, feeds)
            ms = []
            for r in range(reps):
                t0 = time.perf_counter()
                sess.run(output, feeds)
                ms.append((time.perf_counter() - t0) * 1000)
            print(json.dumps({"side": f"ort_{side}_onnx", "variant": variant, "batch": batch,
                              "ms": statistics.median(ms)}), flush=True)


def report(directory):
    rows = {}
    for line in open(f"{directory}/times.jsonl"):
        r = json.loads(line)
        rows.setdefault((r["model"], r["batch"], r["side"], r["variant"]), []).append(r["ms"])
    med = {k: statistics.median(v) for k, v in rows.items()}
    for model in sorted({k[0] for k in med}):
        for batch in sorted({k[1] for k in med if k[0] == model}):
            print(f"\n{model}, batch {batch} x 128: forward ms (median over rounds)")
            print(f"  {'':<10} {'LibTorch':>10} {'ORT lathe':>10} {'ORT torch':>10} {'lathe/torch export':>19} "
                  f"{'ORT lathe vs LibTorch':>22}")
            for variant in ("fp32", "int8"):
                lt = med.get((model, batch, "lathe_libtorch", variant))
                ol = med.get((model, batch, "ort_lathe_onnx", variant))
                ot = med.get((model, batch, "ort_torch_onnx", variant))
                print(f"  {variant:<10} {lt:>10.2f} {ol:>10.2f} {ot:>10.2f} {ot / ol:>18.2f}x {lt / ol:>21.2f}x")
    print("\nlathe/torch export > 1: ONNX Runtime runs lathe's graph faster than PyTorch's export of the same model"
          " (int8: torch's export quantized by onnxruntime.quantization.quantize_dynamic, per-channel; the output"
          " head float on both sides).")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"make": make, "time": time_all, "report": report}[cmd](*args)
