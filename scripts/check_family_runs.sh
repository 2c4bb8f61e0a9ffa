# Trains classification and multi-label runs on every family's tiny fixture model with
# the debug berth binary, predicts, and checks with torch + transformers that the run
# loads in AutoModelForSequenceClassification with the same logits (within 1e-5).
#   PYTHON=/path/to/venv/bin/python bash scripts/check_family_runs.sh
set -e -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
B=$ROOT/target/debug/berth; R=${TMPDIR:-/tmp}/berth-family-runs; rm -rf $R; mkdir -p $R
F=$ROOT/crates/model/tests/fixtures/families
R=$R python3 - <<'P'
import json
S=["The soul becomes dyed with the colour of its thoughts.","You have power over your mind, not outside events.","Waste no more time arguing what a good man should be.","Very little is needed to make a happy life.","The best revenge is not to be like your enemy.","Accept the things to which fate binds you."]
with open(__import__("os").environ["R"] + "/train.jsonl","w") as f:
    for i in range(12):
        f.write(json.dumps({"text":S[i%6],"label":["neg","neu","pos"][i%3],"tags":[["calm"],["calm","stoic"],["wise"]][i%3]})+"\n")
P
for fam in bert roberta xlm-roberta camembert distilbert electra; do
 for task in classification multi_label_classification; do
  m=$R/$fam-model; mkdir -p $m; cp $F/$fam/seqcls/config.json $F/$fam/seqcls/model.safetensors $F/$fam/tokenizer.json $m/
  lab=label; [ $task = multi_label_classification ] && lab=tags
  cat > $R/$fam-$task.toml <<T
task = "$task"
model = "$m"
[data]
data_dir = "$R"
format = "json"
train = "train.jsonl"
text_column = "text"
label_column = "$lab"
max_length = 24
[training]
output_dir = "$R/run-$fam-$task"
max_steps = 3
per_device_train_batch_size = 4
learning_rate = 1e-3
save_strategy = "no"
T
  HF_HUB_OFFLINE=1 $B train --config $R/$fam-$task.toml > /dev/null 2>&1
  HF_HUB_OFFLINE=1 $B predict --model $R/run-$fam-$task --input $R/train.jsonl --output $R/pred-$fam-$task.jsonl > /dev/null 2>&1
  echo -n "$fam $task: "; $PY $ROOT/scripts/check_transformers_load.py $R/run-$fam-$task $R/train.jsonl $R/pred-$fam-$task.jsonl 2>&1 | grep -v Warning | tail -1
 done
done
