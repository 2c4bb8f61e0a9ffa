"""Checks that transformers loads a Berth checkpoint and computes the same logits.

    berth predict --model RUN_DIR --input FILE.jsonl --output preds.jsonl [--max-text-len ...]
    python3 scripts/check_transformers_load.py RUN_DIR FILE.jsonl preds.jsonl [N]

Loads RUN_DIR with `AutoModelForSequenceClassification.from_pretrained` (any family
Berth trains; f32, CPU, eval, eager attention), tokenizes the first N texts (default
64) with RUN_DIR's tokenizer.json truncated to the tokens the model's positions cover
(512 for BERT, max_position_embeddings - pad_token_id - 1 for RoBERTa's family), and
prints the largest logit difference from Berth's `logits` column (or of the sigmoids
from `probabilities`, for a multi-label run; predictions made without chunk options,
i.e. truncation to the model's positions), and how many argmax labels agree. Exits
non-zero above 1e-5. Needs torch + transformers + tokenizers.
"""
import json, sys
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification

run_dir, data, preds = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 64
model = AutoModelForSequenceClassification.from_pretrained(run_dir, attn_implementation="eager",
                                                           dtype=torch.float32).eval()
c = model.config
max_tokens = c.max_position_embeddings
if c.model_type in ("roberta", "xlm-roberta", "camembert"):
    max_tokens -= c.pad_token_id + 1
tok = Tokenizer.from_file(f"{run_dir}/tokenizer.json")
tok.no_padding(); tok.enable_truncation(max_length=max_tokens)
texts = [json.loads(l)["text"] for l in open(data)][:n]
rows = [json.loads(l) for l in open(preds)][:n]
sigmoid = "logits" not in rows[0]
berth = [r["probabilities"] if sigmoid else r["logits"] for r in rows]
worst, agree = 0.0, 0
with torch.no_grad():
    for text, theirs in zip(texts, berth):
        e = tok.encode(text)
        inputs = dict(input_ids=torch.tensor([e.ids]), attention_mask=torch.tensor([e.attention_mask]))
        if c.model_type != "distilbert":
            inputs["token_type_ids"] = torch.tensor([e.type_ids])
        out = model(**inputs).logits[0]
        if sigmoid:
            out = out.sigmoid()
        worst = max(worst, max(abs(a - b) for a, b in zip(out.tolist(), theirs)))
        agree += int(out.argmax().item() == max(range(len(theirs)), key=theirs.__getitem__))
print(f"{len(texts)} texts: largest |logit difference| {worst:.3g}, argmax agrees on {agree}/{len(texts)}; "
      f"architectures {model.config.architectures}, id2label {model.config.id2label}")
sys.exit(0 if worst < 1e-5 else 1)
