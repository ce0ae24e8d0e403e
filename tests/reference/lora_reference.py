"""Reference data for the LoRA tests (tests/test_lora.cpp), from peft and transformers.

  make DIR FAMILY [VOCAB]
                     a random-initialised transformers model of odd sizes (FAMILY llama: grouped-query
                     attention, adapters on q, v, o, gate and down only, so lathe's fused q / k / v and
                     gate / up layers carry some of their parts; gpt2: Conv1D layers, rsLoRA) saved as
                     DIR/base; peft adapters with random A and B saved as DIR/adapter; and in
                     DIR/ref.safetensors for the token ids "ids": the adapted model's logits, the mean
                     next-token cross-entropy "loss" and the gradient of every lora_A / lora_B weight
                     (by PEFT's saved name), and the logits of merge_and_unload() ("merged_logits")
  check DIR ADAPTER  peft.PeftModel.from_pretrained(DIR/base, ADAPTER): its logits on "ids" in
                     ADAPTER/peft_logits.safetensors, and its merge_and_unload() weights saved as
                     ADAPTER/merged (save_pretrained)
"""
import sys

import torch
from safetensors.torch import load_file, save_file


def build(family, vocab):
    import transformers
    if family == "llama":
        cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                       rms_norm_eps=1e-5, tie_word_embeddings=False)
        return transformers.LlamaForCausalLM(cfg), dict(
            r=3, lora_alpha=7, target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"])
    cfg = transformers.GPT2Config(vocab_size=vocab, n_embd=40, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg), dict(r=4, lora_alpha=5, use_rslora=True, fan_in_fan_out=True,
                                                   target_modules=["c_attn", "c_proj", "c_fc"])


def logits_and_loss(model, ids):
    logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
    return logits, loss


def make(out, family, vocab="97"):
    import peft
    torch.manual_seed(3)
    model, lora = build(family, int(vocab))
    model.eval()
    model.save_pretrained(f"{out}/base")
    pm = peft.get_peft_model(model, peft.LoraConfig(lora_dropout=0.0, init_lora_weights=False, **lora))
    pm.eval()
    pm.save_pretrained(f"{out}/adapter")
    ids = torch.randint(0, int(vocab), (2, 11), generator=torch.Generator().manual_seed(5))
    logits, loss = logits_and_loss(pm, ids)
    loss.backward()
    ref = {"ids": ids, "logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for name, p in pm.named_parameters():
        if "lora_" in name:
            ref["grad." + name.replace(".default", "")] = p.grad.detach().contiguous()
    with torch.no_grad():
        ref["merged_logits"] = pm.merge_and_unload()(input_ids=ids).logits
    save_file(ref, f"{out}/ref.safetensors")


def check(out, adapter):
    import peft
    import transformers
    ids = load_file(f"{out}/ref.safetensors")["ids"]
    base = transformers.AutoModelForCausalLM.from_pretrained(f"{out}/base")
    pm = peft.PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        save_file({"logits": pm(input_ids=ids).logits}, f"{adapter}/peft_logits.safetensors")
        pm.merge_and_unload().save_pretrained(f"{adapter}/merged")


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](*sys.argv[2:])
