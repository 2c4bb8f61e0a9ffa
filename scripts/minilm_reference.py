"""Reference numbers for all-MiniLM-L6-v2, written to crates/model/tests/data/.

An independent float64 numpy re-implementation of transformers' `BertModel.forward`
(eval mode: embeddings + LayerNorm, post-LN self-attention with the additive
`(1 - mask) * finfo(float32).min` mask, erf GELU, pooler tanh(dense(h[:, 0]))), run on
the fixture's real weights. Token ids come from Python `tokenizers` (a pair, padding
in the batch, so masks and token types are exercised).

Needs: pip install numpy safetensors tokenizers; `cargo xtask fixtures` first.
Run:   python3 scripts/minilm_reference.py
This stands in for the transformers numbers the model issue asks for until a session
with torch + transformers regenerates them (the GPU machine has both).
"""
import json, math, os
import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

d = os.path.join(os.environ.get("BERTH_CACHE", os.path.expanduser("~/.cache/berth")), "models/all-MiniLM-L6-v2")
cfg = json.load(open(f"{d}/config.json"))
W = {k: v.astype(np.float64) for k, v in load_file(f"{d}/model.safetensors").items()}
tok = Tokenizer.from_file(f"{d}/tokenizer.json"); tok.no_padding(); tok.no_truncation()
encs = tok.encode_batch([("This is the first sentence.", "This is the second one."),
                         "A much longer sentence, with more words in it than the first one has."])
L = max(len(e.ids) for e in encs)
ids = np.zeros((2, L), np.int64); types = np.zeros((2, L), np.int64); mask = np.zeros((2, L), np.int64)
for r, e in enumerate(encs):
    n = len(e.ids); ids[r, :n] = e.ids; types[r, :n] = e.type_ids; mask[r, :n] = 1

eps = cfg["layer_norm_eps"]; H = cfg["hidden_size"]; nh = cfg["num_attention_heads"]; hd = H // nh
erf = np.vectorize(math.erf)
def ln(x, p):
    m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * W[p + ".weight"] + W[p + ".bias"]
def lin(x, p): return x @ W[p + ".weight"].T + W[p + ".bias"]
x = (W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][np.arange(L)][None]
     + W["embeddings.token_type_embeddings.weight"][types])
x = ln(x, "embeddings.LayerNorm")
ext = (1.0 - mask[:, None, None, :]) * np.finfo(np.float32).min
for i in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{i}"
    sp = lambda t: t.reshape(2, L, nh, hd).transpose(0, 2, 1, 3)
    q, k, v = (sp(lin(x, p + f".attention.self.{n}")) for n in ("query", "key", "value"))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + ext
    s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
    c = (s @ v).transpose(0, 2, 1, 3).reshape(2, L, H)
    x = ln(lin(c, p + ".attention.output.dense") + x, p + ".attention.output.LayerNorm")
    h = lin(x, p + ".intermediate.dense"); h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
    x = ln(lin(h, p + ".output.dense") + x, p + ".output.LayerNorm")
pooled = np.tanh(lin(x[:, 0], "pooler.dense"))

out = {
    "source": "numpy float64 re-implementation of transformers BertModel (scripts/minilm_reference.py)",
    "input_ids": ids.tolist(), "token_type_ids": types.tolist(), "attention_mask": mask.tolist(),
    # The first 16 hidden dimensions at every position keep the file small.
    "hidden_first16": x[:, :, :16].tolist(),
    "pooled": pooled.tolist(),
}
path = os.path.join(os.path.dirname(__file__), "..", "crates/model/tests/data/minilm_reference.json")
json.dump(out, open(path, "w"))
print("wrote", os.path.normpath(path))
