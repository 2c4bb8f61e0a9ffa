"""Writes crates/model/tests/fixtures/tiny-pytorch/: a tiny random BertModel saved as
a PyTorch pickle (`pytorch_model.bin`, with the old `LayerNorm.gamma`/`beta` names
that original BERT checkpoints use) beside its logits, for the test that Berth reads
`.bin` checkpoints through candle's pickle reader as transformers does.

    python scripts/make_pytorch_fixture.py   # needs torch and transformers
"""

import json
import os

import torch
from transformers import BertConfig, BertModel

out = os.path.join(os.path.dirname(__file__), "../crates/model/tests/fixtures/tiny-pytorch")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
config = BertConfig(
    vocab_size=64,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=32,
)
model = BertModel(config).eval()
config.architectures = ["BertModel"]
config.to_json_file(os.path.join(out, "config.json"))
state = {}
for k, v in model.state_dict().items():
    k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    state["bert." + k] = v.contiguous()
torch.save(state, os.path.join(out, "pytorch_model.bin"))
ids = torch.tensor([[2, 7, 9, 11, 3]])
with torch.no_grad():
    hidden = model(input_ids=ids).last_hidden_state[0]
json.dump(
    {"input_ids": ids[0].tolist(), "last_hidden_state": hidden.tolist()},
    open(os.path.join(out, "expected.json"), "w"),
)
