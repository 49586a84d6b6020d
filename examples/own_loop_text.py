"""A language model in your own loop: the LR from find_lr, the decay from tune_loop, scored on the loss.

    python examples/own_loop_text.py runs/text --trials 12        # about 6 minutes on a 2-core CPU

No images here: a small causal Transformer learns to predict the next character of Python source
code (the standard library of the Python running this, so it needs no download), trained with
AdamW. Accuracy says little about a language model, so the study is scored on the validation loss
(``metric="loss"``, lower is better; printed in bits per character). ``find_lr`` sweeps the LR
with the model's own loss and clipping (three sweeps, their median), ``tune_loop`` searches the decay over the
loop below (warmup schedules are in the search: Transformers are known to want one), the best
schedule and the constant LR run again with three new seeds, and both are scored once more on
held-out text. Run it again and the study resumes.
"""

from __future__ import annotations

import argparse
import math
import sysconfig
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lrfind

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CONTEXT = 64                                      # characters the model sees


def corpus(chars: int) -> str:
    """The first ``chars`` characters of the standard library's sources, in a fixed file order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    text, size = [], 0
    for path in sorted(stdlib.glob("*.py")):
        part = path.read_text(encoding="utf-8", errors="replace")
        text.append(part)
        size += len(part)
        if size >= chars:
            break
    joined = "".join(text)[:chars]
    if len(joined) < chars:
        raise SystemExit(f"the standard library at {stdlib} holds only {len(joined):,} characters of *.py; "
                         f"pass --chars {len(joined)} or less")
    return joined


def windows(ids: torch.Tensor) -> TensorDataset:
    """Non-overlapping windows: inputs, and the same characters shifted by one as targets."""
    n = (len(ids) - 1) // CONTEXT
    x = ids[: n * CONTEXT].view(n, CONTEXT)
    y = ids[1: n * CONTEXT + 1].view(n, CONTEXT)
    return TensorDataset(x, y)


def data(chars: int, batch_size: int):
    """Train, validation and test loaders over 80/10/10 contiguous parts of the text, and the vocabulary size."""
    text = corpus(chars)
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text])
    cut1, cut2 = int(0.8 * len(ids)), int(0.9 * len(ids))
    make = lambda part, shuffle: DataLoader(windows(part), batch_size=batch_size, shuffle=shuffle,  # noqa: E731
                                            drop_last=shuffle)
    return make(ids[:cut1], True), make(ids[cut1:cut2], False), make(ids[cut2:], False), len(vocab)


class TinyGPT(nn.Module):
    """Token and position embeddings, pre-norm Transformer layers with a causal mask, a linear head."""

    def __init__(self, vocab: int, width: int = 96, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.zeros(CONTEXT, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.1, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(CONTEXT), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.position[: x.shape[1]]
        h = self.layers(h, mask=self.mask[: x.shape[1], : x.shape[1]], is_causal=True)
        return self.head(self.norm(h))


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every position's next character (nats)."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    """Mean loss per character on a loader, in nats."""
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(DEVICE), y.to(DEVICE)
            total += loss_fn(model(x), y).item() * y.numel()
            n += y.numel()
    model.train()
    return total / n


def bits(nats: float) -> str:
    return f"{nats / math.log(2):.3f} bits/char"


def fit(model, optimizer, scheduler, loader: DataLoader, epochs: int, seed: int, after_epoch=lambda model: None):
    """The training loop, the same for the trials and the final runs: batches shuffled by ``seed``,
    gradients clipped, the scheduler stepped after every optimizer step."""
    order = torch.Generator().manual_seed(seed)
    batches = DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=True, drop_last=True, generator=order)
    for _ in range(epochs):
        for x, y in batches:
            loss = loss_fn(model(x.to(DEVICE)), y.to(DEVICE))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        after_epoch(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="lrfind_text_out", help="folder of the study and its report")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--chars", type=int, default=200_000,
                    help="characters of text: 80%% train, 10%% validate, 10%% test")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--sweep-iters", type=int, default=300, help="steps of each range-test sweep")
    args = ap.parse_args()
    train_loader, val_loader, test_loader, vocab = data(args.chars, args.batch_size)
    print(f"text: {args.chars:,} characters of Python's standard library, {vocab} distinct; "
          f"{len(train_loader)} batches of {args.batch_size} x {CONTEXT} characters an epoch")

    def new_model(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return TinyGPT(vocab).to(DEVICE)

    # 1. the base LR: three sweeps of the model with AdamW, its own loss and fit()'s clipping, their median
    model = new_model(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    found = lrfind.find_lr(model, train_loader, optimizer=optimizer, loss_fn=loss_fn, num_iter=args.sweep_iters,
                           max_grad_norm=1.0, repeats=3, seed=0, progress=False, warn=False)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    found.plot(path=Path(args.out) / "range_test.png")
    base_lr = found.suggested_lr
    if base_lr is None:
        raise SystemExit(f"the range test gave no clear base LR ({found.reason}); see {args.out}/range_test.png")
    print(f"base LR {base_lr:.3g} ({found.reason}; sweeps {', '.join(f'{lr:.3g}' for lr in found.seed_lrs if lr)})")

    # 2. the decay: one trial is one run of the loop, scored on the validation loss
    def train(trial: lrfind.LoopTrial) -> float:
        model = new_model(trial.seed)
        optimizer = trial.optimizer(model.parameters())          # AdamW at the trial's peak LR
        fit(model, optimizer, trial.scheduler(optimizer), train_loader, trial.epochs, trial.seed,
            after_epoch=lambda model: trial.report(evaluate(model, val_loader)))    # Optuna may prune here
        return trial.scores[-1]

    result = lrfind.tune_loop(train, base_lr=found,             # its suggestion; the report shows its curve
                              epochs=args.epochs, steps_per_epoch=len(train_loader), metric="loss",
                              trials=args.trials, optimizer="adamw", weight_decay=0.01, out=args.out)
    best = result.best
    print(result.summary())
    print(f"best schedule: {best}")
    print(f"report in {args.out} (lrfind show --out {args.out})")

    # 3. the held-out text, once: the best schedule against the constant base LR, same seed
    scores = {}
    for label in ("best", "constant"):
        model = new_model(0)
        optimizer = best.optimizer(model.parameters(), lr=None if label == "best" else base_lr)
        scheduler, after = None, (lambda model: None)
        if label == "best":
            scheduler = best.scheduler(optimizer, epochs=args.epochs, steps_per_epoch=len(train_loader))
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                plateau, scheduler = scheduler, None
                after = lambda model: plateau.step(evaluate(model, val_loader))  # noqa: E731
        fit(model, optimizer, scheduler, train_loader, args.epochs, 0, after_epoch=after)
        scores[label] = evaluate(model, test_loader)
    print(f"test loss: best schedule {bits(scores['best'])}, constant LR {bits(scores['constant'])} "
          f"({(scores['best'] - scores['constant']) / math.log(2):+.3f} bits/char)")


if __name__ == "__main__":
    main()
