"""An exported GPT folder run by ONNX Runtime GenAI (onnxruntime_genai).

  genai_reference.py CASE.json
      CASE: {"dir", "cases": [{"prompt_ids", "greedy", "messages" (optional), "chat_text" (optional)}]}
      For each case: with messages, GenAI's own tokenizer renders them with the folder's chat
      template (add_generation_prompt) and must give chat_text, and its encoding must give
      prompt_ids; GenAI's greedy search from prompt_ids must give lathe's greedy tokens (it stops
      at the end-of-text token as lathe does).
Prints one JSON line.
"""
import json
import sys

import onnxruntime_genai as og


def main(path):
    case = json.load(open(path))
    model = og.Model(case["dir"])
    tok = og.Tokenizer(model)
    report = {"cases": 0}
    for c in case["cases"]:
        if "messages" in c:
            text = tok.apply_chat_template(json.dumps(c["messages"]), add_generation_prompt=True)
            if text != c["chat_text"]:
                sys.exit(f"GenAI renders the chat as {text!r}, lathe as {c['chat_text']!r}")
            ids = [int(i) for i in tok.encode(text)]
            if ids != c["prompt_ids"]:
                sys.exit(f"GenAI encodes the chat as {ids}, lathe as {c['prompt_ids']}")
        params = og.GeneratorParams(model)
        # One more than lathe's tokens: the end-of-text token lathe stopped at (left out of its
        # tokens) or, at the model's context, none.
        context = json.load(open(f"{case['dir']}/genai_config.json"))["model"]["context_length"]
        extra = 1 if c["finish_reason"] == "stop_token" else 0
        params.set_search_options(max_length=min(len(c["prompt_ids"]) + len(c["greedy"]) + extra, context),
                                  do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(c["prompt_ids"])
        out = []
        while not gen.is_done():
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        if out and out[-1] == case["eos"]:
            out = out[:-1]  # lathe leaves the stop token out
        elif len(out) > len(c["greedy"]):
            sys.exit(f"GenAI went on past lathe's tokens {c['greedy']}: {out}")
        if out != c["greedy"]:
            sys.exit(f"GenAI's greedy tokens {out} differ from lathe's {c['greedy']}")
        report["cases"] += 1
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
