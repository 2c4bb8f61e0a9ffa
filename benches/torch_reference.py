"""The PyTorch side of `cargo xtask bench train`: the same models, shapes and steps.

BertForSequenceClassification (RobertaFor..., DistilBertFor... for roberta-base and
distilbert-base; transformers), random init, SDPA attention, AdamW
(fused on CUDA), full steps (forward, loss, backward, clip_grad_norm_, step), warm-up
excluded, torch.cuda.synchronize() before the clock is read, TF32 off. bf16 is
autocast (f32 master weights), as the issue's reference numbers were taken.

    python3 benches/torch_reference.py [--device cpu|cuda] [--precision f32|bf16]
                                       [--steps N] [--warmup N] [--config NAME]

Prints the same table and JSON lines as bench-train.
"""
import argparse, json, resource, time
import torch
from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification)

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cpu")
ap.add_argument("--precision", default="f32")
ap.add_argument("--steps", type=int)
ap.add_argument("--warmup", type=int)
ap.add_argument("--config")
a = ap.parse_args()
gpu = a.device.startswith("cuda")
steps = a.steps or (20 if gpu else 3)
warmup = a.warmup or (5 if gpu else 1)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(0)
shapes = [("bert-base", 768, 12, 12, 3072, *((512, 32) if gpu else (512, 1))),
          ("bert-base", 768, 12, 12, 3072, *((128, 128) if gpu else (128, 4))),
          ("roberta-base", 768, 12, 12, 3072, *((512, 32) if gpu else (512, 1))),
          ("roberta-base", 768, 12, 12, 3072, *((128, 128) if gpu else (128, 4))),
          ("distilbert-base", 768, 6, 12, 3072, *((512, 32) if gpu else (512, 1))),
          ("distilbert-base", 768, 6, 12, 3072, *((128, 128) if gpu else (128, 4))),
          ("minilm-l6", 384, 6, 12, 1536, *((512, 32) if gpu else (512, 2))),
          # BertForMaskedLM, 15% of positions labelled (3 in every 20), -100 elsewhere
          ("minilm-l6-mlm", 384, 6, 12, 1536, 128, 128 if gpu else 16)]

def flops(h, layers, inter, seq, batch):
    tokens = batch * seq
    return 6 * (4 * h * h + 2 * h * inter) * layers * tokens + 12 * seq * h * layers * tokens

print("| model | seq | batch | precision | device | ms/step | tokens/s | model TFLOP/s | peak memory |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
lines = []
for name, h, layers, heads, inter, seq, batch in shapes:
    if a.config and a.config != name:
        continue
    mlm = name.endswith("-mlm")
    if name.startswith("roberta"):
        cfg = RobertaConfig(vocab_size=50265, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=inter, max_position_embeddings=514, type_vocab_size=1,
                            pad_token_id=1, layer_norm_eps=1e-5, num_labels=2)
        cls = RobertaForSequenceClassification
    elif name.startswith("distilbert"):
        cfg = DistilBertConfig(vocab_size=30522, dim=h, n_layers=layers, n_heads=heads, hidden_dim=inter,
                               max_position_embeddings=512, num_labels=2)
        cls = DistilBertForSequenceClassification
    else:
        cfg = BertConfig(vocab_size=30522, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=inter, max_position_embeddings=512, num_labels=2)
        cls = BertForMaskedLM if mlm else BertForSequenceClassification
    model = cls(cfg).to(a.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=gpu)
    ids = (1000 + (torch.arange(batch * seq) * 7919) % 28000).reshape(batch, seq).to(a.device)
    if mlm:
        pos = torch.arange(batch * seq).reshape(batch, seq).to(a.device)
        labels = torch.where((pos * 7 + 3) % 20 < 3, ids, torch.full_like(ids, -100))
    else:
        labels = (torch.arange(batch) % 2).to(a.device)
    def step():
        with torch.autocast(device_type="cuda" if gpu else "cpu", dtype=torch.bfloat16,
                            enabled=a.precision == "bf16"):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(warmup):
        step()
    if gpu:
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1e3 / steps
    tokens = batch * seq
    tf = flops(h, layers, inter, seq, batch) / (ms / 1e3) / 1e12
    if gpu:
        mem = torch.cuda.max_memory_allocated() / 2**30; mem_s = f"{mem:.2f} GiB"
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20; mem_s = f"{mem:.2f} GiB RSS"
    print(f"| {name} (torch) | {seq} | {batch} | {a.precision} | {a.device} | {ms:.1f} | {tokens / (ms / 1e3):.0f} | {tf:.3f} | {mem_s} |")
    lines.append({"impl": "torch", "model": name, "seq": seq, "batch": batch, "precision": a.precision,
                  "device": a.device, "ms_per_step": ms, "tokens_per_s": tokens / (ms / 1e3),
                  "model_tflops": tf, "peak_memory_gib": mem, "steps": steps, "warmup": warmup})
    del model, opt
for l in lines:
    print(json.dumps(l))
