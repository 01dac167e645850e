"""Write tests/golden/loss_scale.json: `torch.amp.GradScaler`'s scale and growth tracker over
given sequences of skipped (inf gradient) and finite steps. Run once with the `bench` extra
(torch==2.13.0 CPU):

    .venv/bin/python tests/golden/generate_loss_scale.py

Each case is a scaler built with `init_scale` (the other arguments torch's defaults:
growth_factor 2.0, backoff_factor 0.5, growth_interval 2000) and `runs`, a list of
`[found_inf, count]`: `count` steps in a row whose gradient is inf (found_inf 1) or finite (0).
A step is `scaler.scale(loss).backward(); scaler.step(opt); scaler.update()` on one float32
parameter. The file stores, per run, the state after its first step and after its last one
(`[scale, growth_tracker]`): within a run the tracker only counts up, so these pin the rule.
`tests/test_loss_scale.py` checks the committed file against this script when torch is there.
"""
import json
import pathlib

import torch

HERE = pathlib.Path(__file__).resolve().parent

CASES = [
    {"name": "defaults", "init_scale": 2.0 ** 16,
     "runs": [[1, 3], [0, 1999], [1, 1], [0, 2000], [0, 1], [1, 2], [0, 4000], [1, 1]]},
    {"name": "growth to inf refused", "init_scale": 2.0 ** 127,
     "runs": [[0, 2000], [0, 2000], [1, 1], [0, 2000]]},
    {"name": "backoff below one", "init_scale": 4.0,
     "runs": [[1, 5], [0, 2000], [1, 1]]},
]


def trajectory(init_scale, runs):
    param = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    recorded = []
    for found_inf, count in runs:
        for i in range(count):
            optimizer.zero_grad()
            factor = torch.tensor(float("inf") if found_inf else 1.0)
            scaler.scale((param * factor).sum()).backward()
            scaler.step(optimizer)
            scaler.update()
            if i == 0 or i == count - 1:
                recorded.append([scaler.get_scale(), int(scaler._growth_tracker)])
    return recorded


def generate():
    return {"torch": torch.__version__,
            "cases": [dict(case, states=trajectory(case["init_scale"], case["runs"]))
                      for case in CASES]}


def as_text(golden):
    """The file's text: one line per case."""
    cases = ",\n  ".join(json.dumps(case) for case in golden["cases"])
    return f'{{"torch": {json.dumps(golden["torch"])},\n "cases": [\n  {cases}\n ]}}\n'


if __name__ == "__main__":
    (HERE / "loss_scale.json").write_text(as_text(generate()))
