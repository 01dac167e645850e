"""Write tests/golden/train_stateful.json: PyTorch float64 training of a small network with
BatchNorm1d by minibatch SGD, the reference for `fdl.train.fit` on a stateful model. Run once
with the `bench` extra (torch==2.13.0 CPU):

    .venv/bin/python tests/golden/generate_train_stateful.py

The network is Linear(4, 6) -> BatchNorm1d(6) -> ReLU -> Linear(6, 1), trained in train mode
with plain SGD (lr 0.1) on the mean squared error, batches of 8 consecutive rows of 24 (no
shuffling), for 3 epochs. Stored: the initial weights (PyTorch's (out, in) layout), the data,
each epoch's row-weighted mean training loss, the weights and running statistics
(running_mean, running_var, num_batches_tracked) at the end, and the eval-mode outputs on
held-out rows. Inputs come from a fixed NumPy generator, so re-running reproduces the file.
"""
import json
import pathlib

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261203)
ROWS, BATCH, EPOCHS, LR = 24, 8, 3, 0.1


def listed(t):
    return t.detach().numpy().tolist()


def main():
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
                              torch.nn.Linear(6, 1))
    with torch.no_grad():  # weights from the NumPy generator; BatchNorm's affine not 1 and 0
        for p in net.parameters():
            p.copy_(torch.tensor(rng.normal(size=tuple(p.shape)) * 0.5))
    initial = {name: listed(p) for name, p in net.named_parameters()}
    x = torch.tensor(rng.normal(size=(ROWS, 4)) * 1.5 + 0.3)
    y = (x[:, :1] ** 2 - x[:, 1:2]).detach()
    x_eval = torch.tensor(rng.normal(size=(5, 4)))
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    losses = []
    net.train()
    for _ in range(EPOCHS):
        total = 0.0
        for start in range(0, ROWS, BATCH):
            xb, yb = x[start:start + BATCH], y[start:start + BATCH]
            loss = torch.nn.functional.mse_loss(net(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(xb)
        losses.append(total / ROWS)
    net.eval()
    bn = net[1]
    golden = {"rows": ROWS, "batch": BATCH, "epochs": EPOCHS, "lr": LR, "initial": initial,
              "x": listed(x), "y": listed(y), "x_eval": listed(x_eval), "losses": losses,
              "final": {name: listed(p) for name, p in net.named_parameters()},
              "running_mean": listed(bn.running_mean), "running_var": listed(bn.running_var),
              "count": int(bn.num_batches_tracked), "eval_output": listed(net(x_eval))}
    path = pathlib.Path(__file__).with_name("train_stateful.json")
    path.write_text(json.dumps(golden) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
