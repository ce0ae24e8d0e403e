"""A quantized model's Hugging Face directory in the compressed-tensors layout, read by the
compressed-tensors package and by transformers.

  compressed_reference.py DIR IDS.safetensors TOL
      IDS holds "input_ids" (B, T) and "logits" (lathe's quantized model's, B, T, V). Checks:
        - quantization_config validates as compressed-tensors' own QuantizationConfig;
        - transformers loads the directory through compressed-tensors (its ModelCompressor reads
          the safetensors keys the format defines and decompresses them), every quantized layer
          carries its scheme, and the logits over IDS are within TOL of lathe's.
Prints one JSON line.
"""
import json
import sys

import torch
from safetensors.torch import load_file


def main(path, ids_file, tol):
    from compressed_tensors.quantization import QuantizationConfig
    from transformers import AutoModelForCausalLM

    config = json.load(open(f"{path}/config.json"))
    qc = QuantizationConfig.model_validate(config["quantization_config"])
    data = load_file(ids_file)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    quantized = [n for n, m in model.named_modules() if getattr(m, "quantization_scheme", None) is not None]
    with torch.no_grad():
        logits = model(data["input_ids"]).logits.float()
    diff = float((logits - data["logits"]).abs().max())
    report = {"format": qc.format, "quantized_modules": len(quantized), "logits_max_abs_diff": diff,
              "logits_max_abs": float(data["logits"].abs().max())}
    if diff > tol:
        sys.exit(f"transformers' logits differ from lathe's quantized model's by {diff} (> {tol})")
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
