"""ONNX Runtime (and the onnx package's full checker) on lathe's ONNX exports, for tests/test_export.cpp.

  run DIR INPUTS OUT      every case "<case>.<input>" of INPUTS (safetensors) through DIR/model.onnx:
                          OUT gets "<case>.<output>" for each output. A GPT case with "<case>.past"
                          (the number of leading positions to cache) also runs
                          DIR/decoder_with_past_model.onnx on those positions with an empty cache, then
                          on the rest with the cache it returned: "<case>.past_logits" (the logits of
                          the rest) and "<case>.prefill_logits".
  greedy DIR PROMPT N OUT greedy continuation of the prompt (comma-separated ids) by N tokens with
                          DIR/decoder_with_past_model.onnx, one token per step after the prompt;
                          OUT "tokens".
  meta FILE               prints the model's metadata_props as JSON after onnx.checker's full check
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.numpy import load_file, save_file


def session(path):
    onnx.checker.check_model(path, full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def empty_past(sess, batch):
    feeds = {}
    for i in sess.get_inputs():
        if i.name.startswith("past_key_values."):
            feeds[i.name] = np.zeros((batch, i.shape[1], 0, i.shape[3]), np.float32)
    return feeds


def with_presents(sess, outputs):
    names = [o.name for o in sess.get_outputs()]
    return {n.replace("present.", "past_key_values."): v for n, v in zip(names, outputs) if n.startswith("present.")}


def run(directory, inputs_file, out_file):
    inputs = load_file(inputs_file)
    model = session(f"{directory}/model.onnx")
    wanted = {i.name for i in model.get_inputs()}
    cases = sorted({k.split(".", 1)[0] for k in inputs})
    out = {}
    decoder = None
    for case in cases:
        feeds = {k.split(".", 1)[1]: v for k, v in inputs.items() if k.startswith(case + ".")}
        past = int(feeds.pop("past")) if "past" in feeds else None
        results = model.run(None, {k: v for k, v in feeds.items() if k in wanted})
        for o, v in zip(model.get_outputs(), results):
            out[f"{case}.{o.name}"] = v
        if past is None:
            continue
        if decoder is None:
            decoder = session(f"{directory}/decoder_with_past_model.onnx")
        batch = feeds["input_ids"].shape[0]
        first = {k: v[:, :past] for k, v in feeds.items()}
        first.update(empty_past(decoder, batch))
        r1 = decoder.run(None, first)
        second = {"input_ids": feeds["input_ids"][:, past:], "position_ids": feeds["position_ids"][:, past:],
                  "attention_mask": feeds["attention_mask"]}
        second.update(with_presents(decoder, r1))
        r2 = decoder.run(None, second)
        out[f"{case}.prefill_logits"] = r1[0]
        out[f"{case}.past_logits"] = r2[0]
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, out_file)


def greedy(directory, prompt, n, out_file):
    decoder = session(f"{directory}/decoder_with_past_model.onnx")
    ids = np.array([[int(t) for t in prompt.split(",")]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
    feeds.update(empty_past(decoder, 1))
    total = ids.shape[1]
    tokens = []
    for _ in range(int(n)):
        outputs = decoder.run(None, feeds)
        token = int(np.argmax(outputs[0][0, -1]))
        tokens.append(token)
        feeds = {"input_ids": np.array([[token]], dtype=np.int64), "attention_mask": np.ones((1, total + 1), np.int64),
                 "position_ids": np.array([[total]], dtype=np.int64)}
        feeds.update(with_presents(decoder, outputs))
        total += 1
    save_file({"tokens": np.array(tokens, dtype=np.int64)}, out_file)


def meta(path):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    print(json.dumps({p.key: p.value for p in model.metadata_props}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd, args = sys.argv[1], sys.argv[2:]
    {"run": run, "greedy": greedy, "meta": meta}[cmd](*args)
