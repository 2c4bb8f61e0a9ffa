"""Opens a Berth run directory with transformers (no torch needed) and prints what it
read, as JSON on stdout, for the Rust test that compares it with Berth's own view.

    python check_hf_run.py DIR [DIR...] < texts.json

For each DIR: TrainerState.load_from_json(DIR/trainer_state.json) (transformers builds
it from every key and refuses unknown ones), AutoConfig (id2label) and AutoTokenizer
(the ids of each text read from stdin, a JSON list of strings).
"""

import json
import sys

from transformers import AutoConfig, AutoTokenizer
from transformers.trainer_callback import TrainerState

texts = json.load(sys.stdin)
out = {}
for d in sys.argv[1:]:
    state = TrainerState.load_from_json(f"{d}/trainer_state.json")
    config = AutoConfig.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    out[d] = {
        "global_step": state.global_step,
        "log_entries": len(state.log_history),
        "id2label": {str(k): v for k, v in config.id2label.items()},
        "model_type": config.model_type,
        "tokenizer_class": type(tok).__name__,
        "is_fast": tok.is_fast,
        "model_max_length": tok.model_max_length,
        "ids": [tok(t)["input_ids"] for t in texts],
    }
json.dump(out, sys.stdout)
