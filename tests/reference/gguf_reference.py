"""GGUF files lathe writes, checked with the gguf package (llama.cpp's own Python reader and
reference quantizers) and run in llama.cpp itself (llama-cpp-python).

  gguf_reference.py quants FILE.safetensors
      FILE holds rows_<T> (float32) and lathe's bytes_<T> / back_<T> for each ggml type T: the
      bytes must equal gguf.quants.quantize(rows, T) and back_<T> gguf.quants.dequantize.
  gguf_reference.py check CASE.json
      CASE: {"gguf", "hf_dir", "expect": {key: value}, "types": {gguf tensor: type} (optional),
             "prompt", "greedy", "logits" (safetensors with "logits" (T, vocab)), "logits_tol",
             "lines", "line_tokens", "quantized_from_hf": bool,
             "codes_carried": bool (quantized tensors hold a quantized model's codes)}
      Every tensor of the file must be what convert_hf_to_gguf.py makes of the Hugging Face
      directory's tensor of the same name (gguf's tensor-name map, GPT-2's Conv1D transposed,
      Llama's q / k permuted), in the file's type: floats cast, quantized types byte for byte as
      gguf.quants.quantize writes them. llama.cpp then loads the file: its logits over
      prompt + greedy must be within logits_tol of lathe's, its greedy continuation must equal
      lathe's (when "greedy_must_match"), and its tokenization of each line lathe's.
Prints one JSON line of figures.
"""
import json
import sys

import numpy as np


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def quants(path):
    import gguf
    from safetensors.numpy import load_file

    t = load_file(path)
    report = {}
    for key in sorted(t):
        if not key.startswith("rows_"):
            continue
        name = key[len("rows_"):]
        qtype = gguf.GGMLQuantizationType[name.upper()]
        rows = t[key].astype(np.float32)
        want = gguf.quants.quantize(rows, qtype)
        want_bytes = np.ascontiguousarray(want).view(np.uint8).reshape(-1)
        got = t["bytes_" + name].reshape(-1)
        if not np.array_equal(want_bytes, got):
            bad = np.flatnonzero(want_bytes != got)
            fail(f"{name}: {len(bad)} of {got.size} bytes differ from gguf.quants.quantize, first at byte {bad[0]}: "
                 f"lathe {got[bad[0]]} gguf {want_bytes[bad[0]]}")
        back = gguf.quants.dequantize(want, qtype)
        lathe_back = t["back_" + name].reshape(back.shape)
        if not np.array_equal(back, lathe_back):
            fail(f"{name}: dequantized values differ by up to {np.abs(back - lathe_back).max()}")
        report[name] = int(got.size)
    print(json.dumps({"bytes_checked": report}))


def permute(w, n_head, n_head_kv):
    # convert_hf_to_gguf.py's LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_tensors(hf_dir, arch, config):
    """The Hugging Face tensors under their GGUF names, as convert_hf_to_gguf.py would write them."""
    import glob
    import gguf
    from safetensors.numpy import load_file

    tensors = {}
    for f in sorted(glob.glob(f"{hf_dir}/*.safetensors")):
        tensors.update(load_file(f))
    n_layer = config.get("n_layer", config.get("num_hidden_layers"))
    arch_enum = {"gpt2": gguf.MODEL_ARCH.GPT2, "llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}[arch]
    names = gguf.get_tensor_name_map(arch_enum, n_layer)
    out = {}
    for name, t in tensors.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        t = t.astype(np.float32)
        if arch == "gpt2" and name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            t = t.T
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            t = permute(t, config["num_attention_heads"], config["num_attention_heads"])
        if arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            t = permute(t, config["num_attention_heads"], config.get("num_key_value_heads"))
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            fail(f"gguf has no name for {name}")
        out[gname] = np.ascontiguousarray(t)
    return out


def check_tensors(reader, case, arch, config):
    import gguf

    want = hf_tensors(case["hf_dir"], arch, config)
    seen = set()
    worst = {}
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":
            continue
        if t.name not in want:
            fail(f"{t.name}: not a tensor of the Hugging Face model")
        w = want[t.name]
        seen.add(t.name)
        shape = tuple(int(d) for d in reversed(t.shape))
        if shape != w.shape:
            fail(f"{t.name}: shape {shape}, the Hugging Face tensor's is {w.shape}")
        expected_type = case.get("types", {}).get(t.name)
        if expected_type and t.tensor_type.name != expected_type:
            fail(f"{t.name}: type {t.tensor_type.name}, expected {expected_type}")
        q = t.tensor_type
        if q == gguf.GGMLQuantizationType.F32:
            got = np.asarray(t.data, dtype=np.float32).reshape(shape)
            ref = w
        elif q in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16):
            got = gguf.quants.dequantize(np.asarray(t.data), q).reshape(shape)
            ref = gguf.quants.dequantize(gguf.quants.quantize(w, q), q).reshape(shape)
        else:
            raw = np.asarray(t.data).reshape(-1)
            ref_bytes = gguf.quants.quantize(w, q).reshape(-1)
            if case.get("codes_carried"):
                # The file holds the quantized model's own codes: its values are the Hugging Face
                # tensor's (the values those codes stand for) up to the F16 rounding of each
                # block's scale and minimum, where quantizing them again moves them much further.
                got = gguf.quants.dequantize(raw.reshape(np.asarray(t.data).shape), q).reshape(shape)
                err = float(np.sqrt(((got - w) ** 2).mean()) / max(np.sqrt((w ** 2).mean()), 1e-30))
                if err > 1e-3:
                    fail(f"{t.name}: {q.name} values differ from the quantized model's by {err} rms (> 1e-3)")
                worst[q.name] = max(worst.get(q.name, 0.0), err)
                continue
            if not np.array_equal(raw, ref_bytes):
                fail(f"{t.name}: {q.name} bytes differ from gguf.quants.quantize of the Hugging Face tensor in "
                     f"{int((raw != ref_bytes).sum())} places")
            got = gguf.quants.dequantize(raw.reshape(np.asarray(t.data).shape), q).reshape(shape)
            ref = w
            err = float(np.sqrt(((got - ref) ** 2).mean()) / max(np.sqrt((ref ** 2).mean()), 1e-30))
            worst[q.name] = max(worst.get(q.name, 0.0), err)
            continue
        if not np.array_equal(got, ref.astype(np.float32)):
            fail(f"{t.name}: values differ by up to {np.abs(got - ref).max()}")
    missing = set(want) - seen
    if missing:
        fail(f"the file lacks {sorted(missing)}")
    return worst


def check_metadata(reader, expect):
    for key, value in expect.items():
        field = reader.fields.get(key)
        if field is None:
            fail(f"missing metadata key {key}")
        got = field.contents()
        if isinstance(value, float):
            ok = abs(got - value) <= 1e-6 * max(1.0, abs(value))
        else:
            ok = got == value
        if not ok:
            fail(f"{key}: {got!r}, expected {value!r}")


def run_llama_cpp(case):
    from llama_cpp import Llama
    from safetensors.numpy import load_file

    # A float32 KV cache (llama.cpp's default is F16): the comparison is of the weights' arithmetic.
    llm = Llama(model_path=case["gguf"], n_ctx=case.get("n_ctx", 0), n_threads=2, logits_all=True,
                verbose=False, seed=0, type_k=0, type_v=0)
    report = {}
    prompt = case["prompt"]
    greedy = case["greedy"]
    lathe_logits = load_file(case["logits"])["logits"]
    llm.reset()
    llm.eval(prompt + greedy[:-1])
    scores = np.array(llm.scores[: llm.n_tokens], dtype=np.float32)
    if scores.shape != lathe_logits.shape:
        fail(f"llama.cpp logits {scores.shape}, lathe's {lathe_logits.shape}")
    diff = float(np.abs(scores - lathe_logits).max())
    scale = float(np.abs(lathe_logits).max())
    report["logits_max_abs_diff"] = diff
    report["logits_max_abs"] = scale
    if diff > case["logits_tol"]:
        fail(f"llama.cpp logits differ from lathe's by {diff} (> {case['logits_tol']}; largest logit {scale})")
    llm.reset()
    got = []
    for tok in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        got.append(int(tok))
        if len(got) == len(greedy):
            break
    report["greedy_equal"] = got == greedy
    report["greedy_agree"] = next((i for i, (a, b) in enumerate(zip(got, greedy)) if a != b), len(greedy))
    if case.get("greedy_must_match", True) and got != greedy:
        fail(f"llama.cpp's greedy tokens {got} differ from lathe's {greedy}")
    for line, tokens in zip(case.get("lines", []), case.get("line_tokens", [])):
        ids = llm.tokenize(line.encode("utf-8"), add_bos=False, special=False)
        if ids != tokens:
            fail(f"llama.cpp tokenizes {line!r} as {ids}, lathe as {tokens}")
    report["lines_tokenized"] = len(case.get("lines", []))
    return report


def check(case_path):
    import gguf

    case = json.load(open(case_path))
    reader = gguf.GGUFReader(case["gguf"])
    check_metadata(reader, case.get("expect", {}))
    arch = reader.fields["general.architecture"].contents()
    config = json.load(open(f"{case['hf_dir']}/config.json"))
    case.setdefault("n_ctx", int(reader.fields[f"{arch}.context_length"].contents()))
    report = {"arch": arch, "tensors": len(reader.tensors)}
    report["quantized_rms_error"] = check_tensors(reader, case, arch, config)
    report.update(run_llama_cpp(case))
    print(json.dumps(report))


if __name__ == "__main__":
    {"quants": quants, "check": check}[sys.argv[1]](sys.argv[2])
