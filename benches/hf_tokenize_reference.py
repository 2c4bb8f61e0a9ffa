"""The raw `tokenizers` (Python) reference for Berth's tokenization benches and `berth tokenize`.

Reads the `text` column of a parquet file and encodes every text with
`tokenizers.Tokenizer.from_file(MODEL_DIR/tokenizer.json).encode_batch_fast` (no truncation,
no padding, special tokens added): once in a single call over all texts, and once in
batches of --batch-size. Falls back to `encode_batch` where `encode_batch_fast` is missing.

    python3 benches/hf_tokenize_reference.py [--input PARQUET] [--tokenizer MODEL_DIR] [--batch-size N]

Prints a table of both runs (seconds, tokens/s) and one JSON line.
"""
import argparse, json, os, resource, time
import pyarrow.parquet as pq
from tokenizers import Tokenizer

data_dir = os.environ.get("BERTH_DATA_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/data")
cache = os.environ.get("BERTH_CACHE") or os.path.expanduser("~/.cache/berth")
ap = argparse.ArgumentParser()
ap.add_argument("--input", default=os.path.join(data_dir, "imdb/train.parquet"))
ap.add_argument("--tokenizer", default=os.path.join(cache, "models/all-MiniLM-L6-v2"))
ap.add_argument("--batch-size", type=int, default=1000)
a = ap.parse_args()

texts = pq.read_table(a.input, columns=["text"]).column("text").to_pylist()
tok = Tokenizer.from_file(os.path.join(a.tokenizer, "tokenizer.json"))
tok.no_truncation()  # tokenizer.json bakes in truncation and padding at 128
tok.no_padding()
encode = getattr(tok, "encode_batch_fast", tok.encode_batch)

def timed(batches):
    t = time.perf_counter()
    tokens = sum(len(e.ids) for b in batches for e in encode(b, add_special_tokens=True))
    return time.perf_counter() - t, tokens

all_s, tokens = timed([texts])
batched_s, tokens_b = timed(texts[i:i + a.batch_size] for i in range(0, len(texts), a.batch_size))
assert tokens == tokens_b
print("| what | seconds | tokens/s |\n| --- | --- | --- |")
print(f"| {encode.__name__}, all {len(texts)} texts at once | {all_s:.2f} | {tokens / all_s:,.0f} |")
print(f"| {encode.__name__}, batches of {a.batch_size} | {batched_s:.2f} | {tokens / batched_s:,.0f} |")
print(json.dumps({"bench": "tokenize", "impl": "tokenizers-py", "fn": encode.__name__, "rows": len(texts),
                  "tokens": tokens, "all_s": round(all_s, 3), "all_tokens_per_s": round(tokens / all_s),
                  "batched_s": round(batched_s, 3), "batched_tokens_per_s": round(tokens / batched_s),
                  "batch_size": a.batch_size,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
