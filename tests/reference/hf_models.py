"""Reference states from Hugging Face transformers for the model tests (tests/test_models.cpp).

  make KIND DIR          tiny random model of KIND (gpt2, llama, llama3, qwen2, mistral, gemma, gemma2,
                         phi3, bert_mlm, bert_cls), saved to
                         DIR/hf, and DIR/ref.safetensors with inputs, logits, the loss and the
                         gradient of every parameter ("grad.<name>")
  logits DIR REF OUT     runs the model in DIR on REF's inputs, writes OUT with "logits"
  generate DIR REF OUT N greedy continuation of REF's "prompt" by N tokens (HF generate), OUT "tokens"
  resave DIR OUT DTYPE SIZE  transformers' save_pretrained of DIR's model cast to DTYPE, in shards of
                         at most SIZE ("2KB")
  same DIR_A DIR_B       the two directories hold the same config (as transformers reads it) and the same
                         tensors; prints each difference and exits 1 when there is one
  counts OUT             parameter counts of the presets' Hugging Face configs (meta device)
  large DIR              a Llama of about 500 MB in bfloat16 (252M parameters, random normal weights),
                         saved by save_pretrained in shards of at most 200 MB
"""
import json
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
import transformers
from transformers import (AutoModelForCausalLM, BertConfig, BertForMaskedLM, BertForSequenceClassification,
                          BertModel, Gemma2Config, Gemma2ForCausalLM, GemmaConfig, GemmaForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

DECODERS = ("gpt2", "llama", "llama3", "qwen2", "mistral", "gemma", "gemma2", "phi3")

transformers.logging.set_verbosity_error()


def build(kind):
    torch.manual_seed(1234)
    if kind == "gpt2":
        cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=97, n_positions=64, bos_token_id=None,
                         eos_token_id=None)
        model = GPT2LMHeadModel(cfg)
    elif kind == "llama":
        cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=48, vocab_size=97, max_position_embeddings=64, rms_norm_eps=1e-5,
                          tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)
        model = LlamaForCausalLM(cfg)
    elif kind == "llama3":
        # Llama 3.1's rope scaling with an original context of 32 positions (so that the
        # frequencies kept, divided and smoothed all occur at head width 12), a head width that is
        # not hidden / heads, and a tied head as the 1B / 3B models have.
        cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=12, intermediate_size=48, vocab_size=97, max_position_embeddings=64,
                          rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                          rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 32})
        model = LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = Qwen2Config(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=40, vocab_size=97, max_position_embeddings=64, rms_norm_eps=1e-6,
                          tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
        model = Qwen2ForCausalLM(cfg)
    elif kind == "mistral":
        # A window of 5 positions, shorter than the 16-token inputs and the generated sequences.
        cfg = MistralConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=40, vocab_size=97, max_position_embeddings=64, rms_norm_eps=1e-5,
                            sliding_window=5, bos_token_id=None, eos_token_id=None)
        model = MistralForCausalLM(cfg)
    elif kind == "gemma":
        # Embeddings scaled by sqrt(32), norms stored as scale - 1 (made non-zero below), a GeGLU
        # MLP with the tanh GELU, a head width that is not hidden / heads, a tied head.
        cfg = GemmaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=12, intermediate_size=40, vocab_size=97, max_position_embeddings=64,
                          hidden_act="gelu_pytorch_tanh", bos_token_id=None, eos_token_id=None, pad_token_id=None)
        model = GemmaForCausalLM(cfg)
    elif kind == "gemma2":
        # Three layers: windowed (5 positions), full, windowed, as Gemma2Config's default
        # layer_types alternate. Scores scaled by 1 / sqrt(16) where the head width is 12, and caps
        # low enough to bend the scores and logits of this small model (Gemma 2 ships 50 and 30).
        cfg = Gemma2Config(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=12, intermediate_size=40, vocab_size=97, max_position_embeddings=64,
                           sliding_window=5, query_pre_attn_scalar=16, attn_logit_softcapping=0.8,
                           final_logit_softcapping=1.5, bos_token_id=None, eos_token_id=None, pad_token_id=None)
        model = Gemma2ForCausalLM(cfg)
    elif kind == "phi3":
        # Fused qkv_proj and gate_up_proj, a window of 6 positions, an untied head.
        cfg = Phi3Config(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=40, vocab_size=97, max_position_embeddings=64,
                         original_max_position_embeddings=64, rms_norm_eps=1e-5, sliding_window=6,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
        model = Phi3ForCausalLM(cfg)
    else:
        cfg = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                         vocab_size=101, max_position_embeddings=64, num_labels=3)
        model = BertForMaskedLM(cfg) if kind == "bert_mlm" else BertForSequenceClassification(cfg)
    # Every tensor gets a non-trivial value (biases and norm scales included), so a tensor
    # mapped to the wrong place shows in the logits.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def inputs(kind):
    g = torch.Generator().manual_seed(99)
    if kind in DECODERS:
        ids = torch.randint(0, 97, (3, 16), generator=g)
        return {"input_ids": ids}
    ids = torch.randint(5, 101, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    for row, length in enumerate([12, 7, 3]):
        mask[row, length:] = 0
        ids[row, length:] = 0
    types = torch.zeros(3, 12, dtype=torch.long)
    types[:, 6:] = 1
    types = types * mask
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if kind == "bert_mlm":
        labels = torch.full((3, 12), -100, dtype=torch.long)
        pick = (torch.rand(3, 12, generator=g) < 0.4) & (mask == 1)
        pick[:, 1] = True
        labels[pick] = torch.randint(0, 101, (3, 12), generator=g)[pick]
        out["labels"] = labels
    else:
        out["labels"] = torch.tensor([0, 2, 1])
    return out


def forward(model, kind, inp):
    kwargs = {k: v for k, v in inp.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    logits = model(**kwargs).logits
    if kind in DECODERS:
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), inp["input_ids"][:, 1:].reshape(-1))
    elif kind == "bert_mlm":
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), inp["labels"].reshape(-1), ignore_index=-100)
    else:
        loss = F.cross_entropy(logits, inp["labels"])
    return logits, loss


def make(kind, out_dir, max_shard_size=None):
    model = build(kind)
    if max_shard_size:  # several model-0000k-of-0000n.safetensors and model.safetensors.index.json
        model.save_pretrained(f"{out_dir}/hf", max_shard_size=max_shard_size)
    else:
        model.save_pretrained(f"{out_dir}/hf")
    inp = inputs(kind)
    logits, loss = forward(model, kind, inp)
    loss.backward()
    ref = dict(inp)
    ref["logits"] = logits.detach().contiguous()
    ref["loss"] = loss.detach().reshape(1)
    for name, p in model.named_parameters():
        ref["grad." + name] = p.grad.contiguous()
    save_file(ref, f"{out_dir}/ref.safetensors")


def load_any(model_dir):
    arch = json.load(open(f"{model_dir}/config.json"))["architectures"][0]
    cls = {"GPT2LMHeadModel": GPT2LMHeadModel, "LlamaForCausalLM": LlamaForCausalLM,
           "Qwen2ForCausalLM": Qwen2ForCausalLM, "MistralForCausalLM": MistralForCausalLM,
           "GemmaForCausalLM": GemmaForCausalLM, "Gemma2ForCausalLM": Gemma2ForCausalLM,
           "Phi3ForCausalLM": Phi3ForCausalLM,
           "BertForMaskedLM": BertForMaskedLM, "BertForSequenceClassification": BertForSequenceClassification}[arch]
    return cls.from_pretrained(model_dir).eval()


def logits(model_dir, ref_file, out_file):
    model = load_any(model_dir)
    ref = load_file(ref_file)
    kwargs = {k: v for k, v in ref.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        out = model(**kwargs).logits
    save_file({"logits": out.contiguous()}, out_file)


def generate(model_dir, ref_file, out_file, n):
    model = load_any(model_dir)
    prompt = load_file(ref_file)["prompt"].reshape(1, -1)
    out = model.generate(prompt, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0,
                         attention_mask=torch.ones_like(prompt))
    save_file({"tokens": out[0, prompt.size(1):].contiguous()}, out_file)


def resave(model_dir, out_dir, dtype, size):
    model = load_any(model_dir).to(getattr(torch, dtype))
    model.save_pretrained(out_dir, max_shard_size=size)


def same(dir_a, dir_b):
    from transformers import AutoConfig
    from safetensors import safe_open
    # What only says how and when the file was written.
    incidental = {"transformers_version", "dtype", "torch_dtype", "_name_or_path"}
    a = {k: v for k, v in AutoConfig.from_pretrained(dir_a).to_dict().items() if k not in incidental}
    b = {k: v for k, v in AutoConfig.from_pretrained(dir_b).to_dict().items() if k not in incidental}
    diffs = [f"config {k}: {a.get(k, '<absent>')!r} vs {b.get(k, '<absent>')!r}"
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]

    def tensors(d):
        import glob
        out = {}
        for f in sorted(glob.glob(f"{d}/*.safetensors")):
            with safe_open(f, "pt") as st:
                out.update({k: st.get_tensor(k) for k in st.keys()})
        return out
    ta, tb = tensors(dir_a), tensors(dir_b)
    diffs += [f"tensor {k}: only in one" for k in sorted(set(ta) ^ set(tb))]
    diffs += [f"tensor {k}: values differ" for k in sorted(set(ta) & set(tb))
              if ta[k].shape != tb[k].shape or not torch.equal(ta[k].float(), tb[k].float())]
    for d in diffs:
        print(d, file=sys.stderr)
    sys.exit(1 if diffs else 0)


def counts(out_file):
    gpt = {"gpt2-124m": (12, 12, 768), "gpt2-355m": (24, 16, 1024), "gpt2-774m": (36, 20, 1280),
           "gpt2-1.5b": (48, 25, 1600)}
    result = {}
    with torch.device("meta"):
        for name, (l, h, d) in gpt.items():
            m = GPT2LMHeadModel(GPT2Config(n_layer=l, n_head=h, n_embd=d))
            result[name] = sum(p.numel() for p in m.parameters())
        result["gpt-tiny"] = sum(p.numel() for p in GPT2LMHeadModel(
            GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=256, vocab_size=1000)).parameters())
        bert = {"bert-base": (12, 12, 768, 30522), "bert-large": (24, 16, 1024, 30522), "bert-tiny": (2, 2, 128, 1000)}
        for name, (l, h, d, v) in bert.items():
            cfg = BertConfig(num_hidden_layers=l, num_attention_heads=h, hidden_size=d, intermediate_size=4 * d,
                             vocab_size=v)
            result[name] = sum(p.numel() for p in BertForMaskedLM(cfg).parameters())
            result[name + "/classifier"] = sum(p.numel() for p in BertForSequenceClassification(cfg).parameters())
    json.dump(result, open(out_file, "w"))


def large(out_dir):
    cfg = LlamaConfig(num_hidden_layers=14, hidden_size=1024, num_attention_heads=16, num_key_value_heads=8,
                      intermediate_size=4096, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=None)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    model.tie_weights()
    model.save_pretrained(out_dir, max_shard_size="200MB")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif cmd == "logits":
        logits(*sys.argv[2:5])
    elif cmd == "generate":
        generate(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif cmd == "resave":
        resave(*sys.argv[2:6])
    elif cmd == "same":
        same(sys.argv[2], sys.argv[3])
    elif cmd == "counts":
        counts(sys.argv[2])
    elif cmd == "large":
        large(sys.argv[2])
    else:
        raise SystemExit(f"unknown command {cmd}")
