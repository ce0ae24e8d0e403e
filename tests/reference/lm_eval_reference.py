"""Reference data for the task evaluation tests (tests/test_eval.cpp), from lm-evaluation-harness.

  make DIR FAMILY   a random-initialised transformers model of odd sizes (FAMILY gpt2, or llama: grouped-query
                    attention and a tokenizer whose post-processor puts a BOS first) with a byte-level BPE
                    tokenizer trained on KJV lines, saved in DIR/model; documents written from KJV verses in
                    DIR/data; and harness task files in DIR/tasks: multiple choice (ARC's templates, 0- and
                    5-shot), last word (LAMBADA's), rolling perplexity over documents longer than the context,
                    generate-until with GSM8K's filters and exact-match options, and partial scoring
                    (Winogrande's, 2-shot from the scored split)
  run DIR OUT       lm_eval.simple_evaluate with its "hf" model on DIR/model and every task of DIR/tasks:
                    results and per-document samples (arguments, responses, filtered responses) in OUT
  suite DIR OUT     the harness's own arc_easy, arc_challenge, piqa, hellaswag, lambada_openai, winogrande
                    (2-shot) and wikitext task files (with their Python rules), pointed at documents in each
                    dataset's fields written from KJV verses in DIR/suite_data/<task>/<split>.jsonl, run on
                    DIR/model as in `run`; their names prefixed "local_"
"""
import json
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = ["kjv_mc", "kjv_mc5", "kjv_last_word", "kjv_rolling", "kjv_gen", "kjv_partial"]
BOOTSTRAP_ITERS = 2000


def verses(n):
    out = []
    with open(os.path.join(ROOT, "data/kjv/kjv.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if len(line.split(" ")) >= 8:
                out.append(line)
            if len(out) >= n:
                break
    return out


def tokenizer(out, corpus, family):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|begin_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}
    if family == "llama":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                           special_tokens=[("<|begin_of_text|>", bos)])
        config["bos_token"] = "<|begin_of_text|>"
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return tok


def model(out, family, vocab, eos, bos):
    import torch
    import transformers
    torch.manual_seed(7)
    if family == "llama":
        cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=40, intermediate_size=68, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96,
                                       rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=bos,
                                       eos_token_id=eos)
        m = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.GPT2Config(vocab_size=vocab, n_embd=36, n_layer=2, n_head=3, n_positions=96,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos,
                                      eos_token_id=eos)
        m = transformers.GPT2LMHeadModel(cfg)
    # Larger weights than the default init, so the model prefers some tokens and greedy text varies.
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    m.eval()
    m.save_pretrained(out)


def write_jsonl(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def data(out, rng):
    vs = verses(600)
    rng.shuffle(vs)
    files = {}

    def split(name, docs, cut):
        files[f"{name}_train"] = os.path.join(out, f"{name}_train.jsonl")
        files[f"{name}_test"] = os.path.join(out, f"{name}_test.jsonl")
        write_jsonl(files[f"{name}_train"], docs[:cut])
        write_jsonl(files[f"{name}_test"], docs[cut:])

    # Multiple choice, ARC's shape: a question, four labelled endings, the answer's label.
    mc = []
    for i in range(60):
        words = vs[i].split(" ")
        half = len(words) // 2
        others = [vs[(i + k * 97) % len(vs)].split(" ") for k in range(1, 4)]
        endings = [" ".join(o[len(o) // 2:]) for o in others]
        gold = rng.randrange(4)
        endings.insert(gold, " ".join(words[half:]))
        mc.append({"id": f"q{i}", "question": " ".join(words[:half]),
                   "choices": {"text": endings, "label": ["A", "B", "C", "D"]}, "answerKey": "ABCD"[gold]})
    split("mc", mc, 20)
    # Last word: whole verses.
    write_jsonl(os.path.join(out, "last_word.jsonl"), [{"text": v} for v in vs[100:130]])
    files["last_word"] = os.path.join(out, "last_word.jsonl")
    # Rolling perplexity: documents of several verses, longer than the context.
    write_jsonl(os.path.join(out, "rolling.jsonl"),
                [{"page": "\n".join(vs[200 + 5 * i: 205 + 5 * i])} for i in range(8)])
    files["rolling"] = os.path.join(out, "rolling.jsonl")
    # Generation with GSM8K's answer format.
    gen = [{"question": v, "answer": f"{v.split(' ')[0]} #### {rng.randrange(-50, 5000):,}"} for v in vs[300:330]]
    split("gen", gen, 6)
    # Partial scoring, Winogrande's shape: a sentence with a blank and two options.
    part = []
    for i in range(24):
        words = vs[400 + i].split(" ")
        k = rng.randrange(2, len(words) - 2)
        other = rng.choice(vs[450 + i].split(" "))
        options = [words[k], other] if rng.random() < 0.5 else [other, words[k]]
        part.append({"sentence": " ".join(words[:k] + ["_"] + words[k + 1:]), "option1": options[0],
                     "option2": options[1], "answer": "1" if options[0] == words[k] else "2"})
    write_jsonl(os.path.join(out, "partial.jsonl"), part)
    files["partial"] = os.path.join(out, "partial.jsonl")
    return files


def tasks(out, files):
    def data_files(**splits):
        return {"dataset_path": "json", "dataset_kwargs": {"data_files": splits}}

    mc = {"task": "kjv_mc", "output_type": "multiple_choice", **data_files(train=files["mc_train"], test=files["mc_test"]),
          "training_split": "train", "test_split": "test", "description": "Finish the verse.\n\n",
          "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{choices.label.index(answerKey)}}",
          "doc_to_choice": "{{choices.text}}", "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                                               for m in ("acc", "acc_norm", "acc_bytes", "exact_match")]}
    mc5 = {"include": "kjv_mc.yaml", "task": "kjv_mc5", "num_fewshot": 5}
    last = {"task": "kjv_last_word", "output_type": "loglikelihood", **data_files(test=files["last_word"]),
            "test_split": "test", "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
            "doc_to_target": "{{' '+text.split(' ')[-1]}}", "target_delimiter": "",
            "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                            {"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    rolling = {"task": "kjv_rolling", "output_type": "loglikelihood_rolling", **data_files(test=files["rolling"]),
               "test_split": "test", "doc_to_text": "", "doc_to_target": "{{page}}",
               "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")]}
    gen = {"task": "kjv_gen", "output_type": "generate_until",
           **data_files(train=files["gen_train"], test=files["gen_test"]), "training_split": "train",
           "test_split": "test", "fewshot_split": "train", "num_fewshot": 2,
           "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{answer}}",
           "generation_kwargs": {"until": ["Question:", "\n\n"], "do_sample": False, "temperature": 0.0,
                                 "max_gen_toks": 20},
           "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                            "ignore_case": True, "ignore_punctuation": False,
                            "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}],
           "filter_list": [{"name": "strict-match", "filter": [
               {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}, {"function": "take_first"}]},
               {"name": "flexible-extract", "filter": [
                   {"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                   {"function": "take_first"}]},
               {"name": "last-word", "filter": [
                   {"function": "regex", "group_select": -1, "regex_pattern": "(\\w+)"}, {"function": "take_first"}]}]}
    partial = {"task": "kjv_partial", "output_type": "multiple_choice", **data_files(test=files["partial"]),
               "test_split": "test", "fewshot_split": "test", "num_fewshot": 2,
               "doc_to_text": "{{ answer | int - 1 }}",
               "doc_to_target": "{{ sentence[sentence.index('_') + 1:] | trim }}",
               "doc_to_choice": "{{ [sentence[:sentence.index('_')] + option1, sentence[:sentence.index('_')] + option2] }}",
               "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}
    # JSON is YAML; it spells "\n\n" as an escape, which every YAML reader reads alike (yaml-cpp
    # drops a newline of a single-quoted scalar that ends in blank lines, as PyYAML writes it).
    for t in (mc, mc5, last, rolling, gen, partial):
        with open(os.path.join(out, t["task"] + ".yaml"), "w", encoding="utf-8") as f:
            json.dump(t, f, indent=1, ensure_ascii=False)


def make(out, family):
    for d in ("model", "data", "tasks"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    rng = random.Random(11)
    tok = tokenizer(os.path.join(out, "model"), verses(3000), family)
    model(os.path.join(out, "model"), family, tok.get_vocab_size(), tok.token_to_id("<|endoftext|>"),
          tok.token_to_id("<|begin_of_text|>"))
    tasks(os.path.join(out, "tasks"), data(os.path.join(out, "data"), rng))


def run(out, result_file):
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_CACHE"] = os.path.join(out, "datasets_cache")
    import lm_eval
    from lm_eval.tasks import TaskManager
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={out}/model,dtype=float32", tasks=TASKS,
                                  task_manager=TaskManager(include_path=os.path.join(out, "tasks")), device="cpu",
                                  batch_size=1, log_samples=True, bootstrap_iters=BOOTSTRAP_ITERS)
    samples = {}
    for task, items in res["samples"].items():
        samples[task] = [{"doc_id": s["doc_id"], "arguments": [list(a)[:2] if isinstance(a, (list, tuple)) else a
                                                               for a in s["arguments"]],
                          "resps": s["resps"], "filtered_resps": s["filtered_resps"], "filter": s["filter"]}
                         for s in items]
    with open(result_file, "w", encoding="utf-8") as f:
        json.dump({"results": res["results"], "samples": samples, "bootstrap_iters": BOOTSTRAP_ITERS}, f,
                  ensure_ascii=False, default=str)


SUITE = {  # task: (harness directory, file, splits)
    "arc_easy": ("arc", "arc_easy.yaml", ("train", "validation", "test")),
    "arc_challenge": ("arc", "arc_challenge.yaml", ("train", "validation", "test")),
    "piqa": ("piqa", "piqa.yaml", ("train", "validation")),
    "hellaswag": ("hellaswag", "hellaswag.yaml", ("train", "validation")),
    "lambada_openai": ("lambada", "lambada_openai.yaml", ("test",)),
    "winogrande": ("winogrande", "default.yaml", ("train", "validation")),
    "wikitext": ("wikitext", "wikitext.yaml", ("train", "validation", "test")),
}


def suite_docs(task, rng, vs):
    def phrase():
        v = rng.choice(vs).split(" ")
        k = rng.randrange(0, max(1, len(v) - 6))
        return " ".join(v[k:k + rng.randrange(2, 6)])
    if task in ("arc_easy", "arc_challenge"):
        labels = ["A", "B", "C", "D"] if rng.random() < 0.7 else ["1", "2", "3", "4"]
        return {"id": str(rng.random()), "question": rng.choice(vs),
                "choices": {"text": [phrase() for _ in labels], "label": labels}, "answerKey": rng.choice(labels)}
    if task == "piqa":
        return {"goal": rng.choice(vs), "sol1": phrase(), "sol2": phrase(), "label": rng.randrange(2)}
    if task == "hellaswag":
        tag = lambda: rng.choice(["", " [title]", " [header]", "  ", " [step]"])
        ctx_a, ctx_b = rng.choice(vs) + tag(), phrase().lower()
        return {"ind": rng.randrange(9999), "activity_label": phrase().split(" ")[0], "ctx_a": ctx_a, "ctx_b": ctx_b,
                "ctx": ctx_a + " " + ctx_b, "endings": [" " + phrase() + tag() + " " + phrase() for _ in range(4)],
                "source_id": "x", "split": "val", "split_type": "indomain", "label": str(rng.randrange(4))}
    if task == "lambada_openai":
        return {"text": rng.choice(vs)}
    if task == "winogrande":
        w = rng.choice(vs).split(" ")
        k = rng.randrange(1, len(w) - 2)
        opts = [w[k], phrase().split(" ")[0]]
        rng.shuffle(opts)
        return {"sentence": " ".join(w[:k] + ["_"] + w[k + 1:]), "option1": opts[0], "option2": opts[1],
                "answer": "1" if opts[0] == w[k] else "2"}
    # wikitext: the tokenized form its detokenizer undoes
    bits = [" = = " + phrase() + " = = \n", phrase() + " @-@ " + phrase(), " 12 @,@ 000 ", " 3 @.@ 5 ",
            " ( " + phrase() + " ) ", ' " ' + phrase() + ' " ', " the king 's ", " N ", " , ", " . ", " ; ", " \n "]
    return {"page": "".join(rng.choice(vs) + rng.choice(bits) for _ in range(rng.randrange(6, 14)))}


def suite(out, result_file):
    import lm_eval
    import shutil
    rng = random.Random(23)
    vs = verses(2000)
    harness = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    tasks_dir = os.path.join(out, "suite_harness")
    for task, (sub, name, splits) in SUITE.items():
        d = os.path.join(out, "suite_data", task)
        os.makedirs(d, exist_ok=True)
        files = {}
        for split in splits:
            files[split] = os.path.join(d, split + ".jsonl")
            write_jsonl(files[split], [suite_docs(task, rng, vs) for _ in range(10 if split == "train" else 16)])
        tdir = os.path.join(tasks_dir, task)
        os.makedirs(tdir, exist_ok=True)
        for f in os.listdir(os.path.join(harness, sub)):
            if f.endswith(".py"):
                shutil.copy(os.path.join(harness, sub, f), tdir)
        for f in {name, "arc_easy.yaml"} if sub == "arc" else {name}:
            text = open(os.path.join(harness, sub, f)).read()
            lines = [l for l in text.splitlines() if not l.startswith(("dataset_path:", "dataset_name:"))]
            # The copy arc_challenge includes is a task of its own for the harness: another name.
            prefix = "local_" if f == name else f"local_{task}_base_"
            lines = [l.replace("task: ", "task: " + prefix, 1) if l.startswith("task: ") else l for l in lines]
            lines += ["dataset_path: json", "dataset_kwargs:", "  data_files:"]
            lines += [f"    {s}: {p}" for s, p in files.items()]
            with open(os.path.join(tdir, f if f == name else "arc_easy.yaml"), "w") as fh:
                fh.write("\n".join(lines) + "\n")
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_CACHE"] = os.path.join(out, "datasets_cache")
    from lm_eval.tasks import TaskManager
    manager = TaskManager(include_path=tasks_dir)
    results, samples = {}, {}
    for names, shots in (([f"local_{t}" for t in SUITE if t != "wikitext"], 2), (["local_wikitext"], 0)):
        res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={out}/model,dtype=float32", tasks=names,
                                      task_manager=manager, device="cpu", batch_size=1, log_samples=True,
                                      bootstrap_iters=BOOTSTRAP_ITERS, num_fewshot=shots)
        results.update(res["results"])
        for task, items in res["samples"].items():
            samples[task] = [{"doc_id": s["doc_id"], "arguments": [list(a)[:2] for a in s["arguments"]],
                              "resps": s["resps"], "filtered_resps": s["filtered_resps"], "filter": s["filter"]}
                             for s in items]
    with open(result_file, "w", encoding="utf-8") as f:
        json.dump({"results": results, "samples": samples, "bootstrap_iters": BOOTSTRAP_ITERS}, f,
                  ensure_ascii=False, default=str)


if __name__ == "__main__":
    {"make": make, "run": run, "suite": suite}[sys.argv[1]](*sys.argv[2:])
