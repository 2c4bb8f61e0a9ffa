"""Reference numbers for all-MiniLM-L6-v2 from Hugging Face transformers itself.

Writes crates/model/tests/data/minilm_reference.json: the token ids (Python
`tokenizers`, a text pair and a longer single text, padded in one batch), then
`BertForSequenceClassification` in eval mode, f32, CPU, eager attention:
the first 16 hidden dimensions at every position, the pooled output, and the
logits of a 2-label classifier whose weights (seeded, std 0.02) are stored in the
file too, so the Rust test builds the same head.

Needs torch + transformers (pip install torch transformers) and `cargo xtask
fixtures`. Run: python3 scripts/transformers_reference.py
"""
import json, os
import torch
import transformers
from transformers import BertForSequenceClassification
from tokenizers import Tokenizer

d = os.path.join(os.environ.get("BERTH_CACHE", os.path.expanduser("~/.cache/berth")), "models/all-MiniLM-L6-v2")
tok = Tokenizer.from_file(f"{d}/tokenizer.json"); tok.no_padding(); tok.no_truncation()
encs = tok.encode_batch([("This is the first sentence.", "This is the second one."),
                         "A much longer sentence, with more words in it than the first one has."])
L = max(len(e.ids) for e in encs)
ids = torch.zeros((2, L), dtype=torch.long); types = torch.zeros_like(ids); mask = torch.zeros_like(ids)
for r, e in enumerate(encs):
    n = len(e.ids)
    ids[r, :n] = torch.tensor(e.ids); types[r, :n] = torch.tensor(e.type_ids); mask[r, :n] = 1

model = BertForSequenceClassification.from_pretrained(d, num_labels=2, attn_implementation="eager",
                                                      dtype=torch.float32).eval()
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=g) * 0.02)
    model.classifier.bias.copy_(torch.tensor([0.01, -0.02]))
    out = model(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
    base = model.bert(input_ids=ids, token_type_ids=types, attention_mask=mask)

ref = {
    "source": f"transformers {transformers.__version__} BertForSequenceClassification, torch {torch.__version__}, f32 CPU eager (scripts/transformers_reference.py)",
    "input_ids": ids.tolist(), "token_type_ids": types.tolist(), "attention_mask": mask.tolist(),
    # The first 16 hidden dimensions at every position keep the file small.
    "hidden_first16": base.last_hidden_state[:, :, :16].tolist(),
    "pooled": base.pooler_output.tolist(),
    "classifier_weight": model.classifier.weight.tolist(),
    "classifier_bias": model.classifier.bias.tolist(),
    "logits": out.logits.tolist(),
}
path = os.path.join(os.path.dirname(__file__), "..", "crates/model/tests/data/minilm_reference.json")
json.dump(ref, open(path, "w"))
print("wrote", path, "logits", ref["logits"])
