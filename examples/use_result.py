"""From a range test to a training run: base LR from find_lr, decay from the schedule registry.

    LRFIND_DATA_DIR=~/data python examples/use_result.py [range_test.json]

Reads a saved result (from `lrfind range-test`) or runs a fresh range test, then trains LeNet for
two epochs with the suggested LR and a cosine decay built as torch's own scheduler.
"""

from __future__ import annotations

import sys

import torch

from lrfind import RangeTestResult, find_lr, get_model, get_schedule, load_dataset


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train, val = load_dataset("mnist", "train", device=device).holdout(10_000)
    model = get_model("lenet", seed=0).to(device)

    if len(sys.argv) > 1:
        result = RangeTestResult.load(sys.argv[1])
    else:
        result = find_lr(model, train.loader(64, seed=0), num_iter=300)
    print(result.summary())
    base_lr = result.suggested_lr
    if base_lr is None:
        sys.exit(f"no clear base LR: {result.reason}")

    epochs, loader = 2, train.loader(64, seed=1)
    total = epochs * len(loader)
    cosine = get_schedule("cosine")
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9)
    scheduler = cosine.build(optimizer, total, min_factor=0.01, warmup=len(loader) // 10)
    print("the same scheduler, as code to paste:\n" +
          cosine.snippet(base_lr, total, min_factor=0.01, warmup=len(loader) // 10, steps_per_epoch=len(loader)))

    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            batches = val.loader(1000, shuffle=False, drop_last=False)   # every image, the last batch too
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
        print(f"epoch {epoch + 1}: validation accuracy {100 * correct / len(val):.2f}%, "
              f"LR now {scheduler.get_last_lr()[0]:.3g}")


if __name__ == "__main__":
    main()
