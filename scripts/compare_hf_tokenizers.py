# One-off check that `berth tokenize` outputs equal Python `tokenizers` ids.
# Usage: write /tmp/mrpc_tok.jsonl, /tmp/imdb_tok.jsonl (imdb/sample/train.jsonl) and
# /tmp/mrpc_tok40.jsonl (--max-length 40) with `berth tokenize`, then
#   python3 scripts/compare_hf_tokenizers.py ~/.cache/berth/models/all-MiniLM-L6-v2
import json, sys, csv
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json"); t.no_padding(); t.no_truncation()
def rows(p): return [json.loads(l) for l in open(p)]
def check(name, ours, encs):
    bad = sum(1 for o, e in zip(ours, encs) if o["input_ids"] != e.ids or o["token_type_ids"] != e.type_ids or o["attention_mask"] != e.attention_mask)
    print(f"{name}: {len(ours)} rows, {bad} differ")
m = rows("/tmp/mrpc_tok.jsonl")
check("mrpc pairs", m, t.encode_batch([(r["#1 String"], r["#2 String"]) for r in m]))
i = rows("/tmp/imdb_tok.jsonl")
check("imdb sample", i, t.encode_batch([r["text"] for r in i]))
t.enable_truncation(40, strategy="longest_first")
m40 = rows("/tmp/mrpc_tok40.jsonl")
check("mrpc pairs max_length 40", m40, t.encode_batch([(r["#1 String"], r["#2 String"]) for r in m40]))
