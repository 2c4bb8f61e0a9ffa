"""Prints the scalars of a run's TensorBoard event files, read with the tensorboard
package's own event reader, as JSON [[step, tag, value], ...] on stdout.

    python read_tensorboard.py OUTPUT_DIR
"""

import glob
import json
import sys

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

out = []
files = sorted(glob.glob(f"{sys.argv[1]}/runs/*/events.out.tfevents.*"))
if not files:
    sys.exit(f"no event files under {sys.argv[1]}/runs")
for path in files:
    for event in EventFileLoader(path).Load():
        for v in event.summary.value:
            # The loader migrates simple_value into a tensor; read either.
            value = v.simple_value if v.HasField("simple_value") else v.tensor.float_val[0]
            out.append([event.step, v.tag, value])
json.dump(out, sys.stdout)
