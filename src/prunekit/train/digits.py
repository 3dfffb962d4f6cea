"""Small, real training-time pruning experiments on scikit-learn's handwritten digits (ships offline).

An MLP 64-300-100-10 (LeNet-300-100 scaled to 8×8 images) trains in about a second on 2 CPU cores,
so whole lottery-ticket sweeps with controls and several seeds fit in minutes.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import PrunekitError
from ..oneshot.scores import magnitude_scores
from ..selection import global_counts, smallest_mask
from ..targets import find_targets, weight_view
from .gradual import GradualPruner
from .lottery import lottery
from .masks import attach

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DigitsSetup:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    test_fraction: float = 0.25


def load_digits_split(seed: int = 0, test_fraction: float = 0.25):
    """(x_train, y_train, x_test, y_test) as tensors, pixel values scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise PrunekitError("the digits experiments need scikit-learn: pip install scikit-learn") from e
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0  # (1797, 64)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def make_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


class DigitsTask:
    """Training and evaluation closures over one fixed split; batches are seeded per call."""

    def __init__(self, setup: DigitsSetup = DigitsSetup(), seed: int = 0) -> None:
        self.setup, self.seed = setup, seed
        self.x, self.y, self.x_test, self.y_test = load_digits_split(seed, setup.test_fraction)

    def train(self, model: nn.Module, epochs: int | None = None, on_step=None, start_step: int = 0) -> int:
        opt = torch.optim.Adam(model.parameters(), lr=self.setup.lr)
        gen = torch.Generator().manual_seed(self.seed)
        step = start_step
        for _ in range(self.setup.epochs if epochs is None else epochs):
            for idx in torch.randperm(len(self.y), generator=gen).split(self.setup.batch_size):
                opt.zero_grad()
                nn.functional.cross_entropy(model(self.x[idx]), self.y[idx]).backward()
                opt.step()
                step += 1
                if on_step is not None:
                    on_step(step)
        return step

    def steps_per_epoch(self) -> int:
        return -(-len(self.y) // self.setup.batch_size)

    @torch.no_grad()
    def accuracy(self, model: nn.Module) -> float:
        return float((model(self.x_test).argmax(1) == self.y_test).float().mean())


def run_lottery(rounds: int = 12, prune_fraction: float = 0.2, seeds: int = 3, rewind_epochs: int = 0,
                setup: DigitsSetup = DigitsSetup()) -> dict:
    """Winning tickets (reset to θ₀, or rewound), the random-reinit control, and dense, per seed."""
    runs = []
    for seed in range(seeds):
        task = DigitsTask(setup, seed)
        rewind = functools.partial(task.train, epochs=rewind_epochs) if rewind_epochs else None
        history = lottery(make_mlp, task.train, task.accuracy, rounds, prune_fraction, "global", rewind,
                          random_reinit_control=True, seed=seed)
        runs.append([{"round": h.round, "sparsity": h.sparsity, "ticket": h.accuracy,
                      "random_reinit": h.control_accuracy} for h in history])
    return {"experiment": "lottery", "dataset": "sklearn digits", "model": "MLP 64-300-100-10",
            "rounds": rounds, "prune_fraction": prune_fraction, "rewind_epochs": rewind_epochs, "seeds": seeds,
            "setup": vars(setup), "runs": runs}


def run_gradual_vs_oneshot(sparsity: float = 0.9, seeds: int = 3, setup: DigitsSetup = DigitsSetup()) -> dict:
    """Same model, same final sparsity, same total steps (1.5 × the dense budget):
    one-shot = dense training, one global magnitude prune, masked fine-tuning for the remaining half;
    gradual = cubic schedule from 20% to 80% of the run, then masked training to the end."""
    out = []
    for seed in range(seeds):
        task = DigitsTask(setup, seed)
        e = setup.epochs
        dense = make_mlp(seed)
        task.train(dense, epochs=e)
        dense_acc = task.accuracy(dense)
        targets = find_targets(dense)
        scores = {n: magnitude_scores(weight_view(t)) for n, t in targets.items()}
        counts = global_counts(list(scores.values()), sparsity)
        attach(dense, {n: smallest_mask(s, c) for (n, s), c in zip(scores.items(), counts, strict=True)})
        oneshot_no_ft = task.accuracy(dense)
        task.train(dense, epochs=e // 2)
        oneshot = task.accuracy(dense)

        total = task.steps_per_epoch() * (e + e // 2)
        model = make_mlp(seed)
        pruner = GradualPruner(model, sparsity, int(0.2 * total), int(0.8 * total), frequency=10, scope="global")
        task.train(model, epochs=e + e // 2, on_step=pruner.step)
        out.append({"seed": seed, "dense": dense_acc, "oneshot_no_finetune": oneshot_no_ft,
                    "oneshot_finetuned": oneshot, "gradual": task.accuracy(model)})
    return {"experiment": "gradual_vs_oneshot", "sparsity": sparsity, "setup": vars(setup), "runs": out}


def plot_lottery(result: dict, path: str | Path) -> None:
    """Accuracy vs sparsity: tickets, random-reinit control, dense; mean ± min/max over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    rounds = len(runs[0])
    remaining = [100 * (1 - runs[0][r]["sparsity"]) for r in range(rounds)]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, label, style in (("ticket", "winning ticket (reset to θ₀)" if not result["rewind_epochs"]
                               else f"winning ticket (rewound to epoch {result['rewind_epochs']})", "o-"),
                              ("random_reinit", "same mask, random re-init", "s--")):
        rs = range(1, rounds) if key == "random_reinit" else range(rounds)
        vals = [[run[r][key] for run in runs] for r in rs]
        mean = [sum(v) / len(v) for v in vals]
        xs = [remaining[r] for r in rs]
        ax.plot(xs, mean, style, label=label)
        ax.fill_between(xs, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
    dense = sum(run[0]["ticket"] for run in runs) / len(runs)
    ax.axhline(dense, color="gray", linestyle=":", label="dense")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Lottery tickets, {result['model']} on {result['dataset']} ({len(runs)} seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

