"""The Hugging Face side of the `berth chunk` benchmark: the same job as a `datasets` user writes it.

Loads a parquet file with `datasets.load_dataset` (a fresh temporary cache_dir, removed at
the end, so nothing is reused between runs), tokenizes `text` with the model's fast
tokenizer (no special tokens, no truncation, no padding) in a batched `ds.map`, chunks each
text belt_nlp style (chunk_size 510, stride 510, minimal_chunk_length 1, each window wrapped
as [CLS] window [SEP]; an empty text gives one [CLS][SEP]), keeps `label`, adds `chunks` and
`num_chunks`, and writes the result with `ds.to_parquet`.

    python3 benches/hf_chunk_reference.py --output /tmp/hf_chunks.parquet
        [--input PARQUET] [--tokenizer MODEL_DIR] [--repeat N] [--num-proc N] [--batch-size N]

Prints one table line per phase (load, map, save, total; total includes the imports and
the tokenizer's loading) and one JSON line. `tokens` counts the ids in all chunks without
[CLS]/[SEP]; peak RSS is ru_maxrss, plus the largest worker's with --num-proc.
"""
import time

T0 = time.perf_counter()
import argparse, json, os, resource, shutil, tempfile
import datasets, pyarrow.compute as pc
from transformers import BertTokenizerFast

CHUNK_SIZE, STRIDE, MIN_CHUNK_LEN = 510, 510, 1

data_dir = os.environ.get("BERTH_DATA_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/data")
cache = os.environ.get("BERTH_CACHE") or os.path.expanduser("~/.cache/berth")
ap = argparse.ArgumentParser()
ap.add_argument("--input", default=os.path.join(data_dir, "imdb/train.parquet"))
ap.add_argument("--tokenizer", default=os.path.join(cache, "models/all-MiniLM-L6-v2"))
ap.add_argument("--output", required=True)
ap.add_argument("--repeat", type=int, default=1)
ap.add_argument("--num-proc", type=int)
ap.add_argument("--batch-size", type=int, default=1000)
a = ap.parse_args()
import_s = time.perf_counter() - T0
cache_dir = tempfile.mkdtemp(prefix="hf_chunk_cache_")
try:
    t = time.perf_counter()
    ds = datasets.load_dataset("parquet", data_files=a.input, split="train", cache_dir=cache_dir)
    if a.repeat > 1:
        ds = datasets.concatenate_datasets([ds] * a.repeat)
    load_s = time.perf_counter() - t

    t = time.perf_counter()
    tok = BertTokenizerFast.from_pretrained(a.tokenizer)
    cls, sep = tok.cls_token_id, tok.sep_token_id

    def chunk(ids):
        windows = [ids[i:i + CHUNK_SIZE] for i in range(0, len(ids), STRIDE)]
        if len(windows) > 1:
            windows = [w for w in windows if len(w) >= MIN_CHUNK_LEN]
        return [[cls, *w, sep] for w in windows] or [[cls, sep]]

    def tokenize_and_chunk(batch):
        # tokenizer.json bakes in truncation and padding at 128: both off, whole texts.
        ids = tok(batch["text"], add_special_tokens=False, truncation=False, padding=False,
                  return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        chunks = [chunk(x) for x in ids]
        return {"chunks": chunks, "num_chunks": [len(c) for c in chunks]}

    ds = ds.map(tokenize_and_chunk, batched=True, batch_size=a.batch_size, num_proc=a.num_proc,
                remove_columns=["text"])
    map_s = time.perf_counter() - t

    t = time.perf_counter()
    ds.to_parquet(a.output)
    save_s = time.perf_counter() - t
    total_s = time.perf_counter() - T0

    col = ds.data.table.column("chunks")  # untimed: the ids per chunk, less [CLS] and [SEP]
    tokens = pc.sum(pc.list_value_length(pc.list_flatten(col))).as_py() - 2 * pc.sum(ds.data.table.column("num_chunks")).as_py()
    rows = len(ds)
finally:
    shutil.rmtree(cache_dir, ignore_errors=True)

self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if a.num_proc else 0.0
print("| phase | seconds |\n| --- | --- |")
for name, s in [("load", load_s), ("map", map_s), ("save", save_s), ("total", total_s)]:
    print(f"| {name} | {s:.2f} |")
print(json.dumps({"bench": "chunk", "impl": "hf-datasets", "rows": rows, "tokens": tokens,
                  "load_s": round(load_s, 3), "map_s": round(map_s, 3), "save_s": round(save_s, 3),
                  "total_s": round(total_s, 3), "import_s": round(import_s, 3),
                  "peak_rss_mb": round(self_mb + child_mb, 1), "repeat": a.repeat,
                  "num_proc": a.num_proc, "batch_size": a.batch_size}))
