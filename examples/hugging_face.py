"""A Hugging Face model: find_lr takes its dict batches as they are, and the loss it returns.

    pip install transformers
    python examples/hugging_face.py

A 2-layer BERT (built from a config: nothing is downloaded) learns whether a sequence of token
ids holds token 7. The DataLoader yields dicts (input_ids, attention_mask, labels), as
transformers' collators do; find_lr passes them to the model as keyword arguments and sweeps on
``outputs.loss``. The suggestion is then applied to AdamW and a short run with linear decay
after a warmup, the usual recipe for transformers, uses it.
"""

from __future__ import annotations

import sys

import torch

from lrfind import find_lr, get_schedule

try:
    from transformers import BertConfig, BertForSequenceClassification
except ImportError:
    sys.exit("this example needs transformers: pip install transformers")


def token_data(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        length = int(torch.randint(8, 24, (), generator=g))
        ids = torch.randint(8, 200, (length,), generator=g)
        label = int(torch.rand((), generator=g) < 0.5)
        if label:
            ids[int(torch.randint(0, length, (), generator=g))] = 7
        items.append({"input_ids": ids, "labels": label})
    return items


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence, as transformers' DataCollatorWithPadding does."""
    width = max(len(item["input_ids"]) for item in items)
    ids = torch.zeros(len(items), width, dtype=torch.long)
    mask = torch.zeros(len(items), width, dtype=torch.long)
    for row, item in enumerate(items):
        ids[row, :len(item["input_ids"])] = item["input_ids"]
        mask[row, :len(item["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([item["labels"] for item in items])}


def accuracy(model: torch.nn.Module, loader) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for batch in loader:
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            right += int((logits.argmax(1) == batch["labels"]).sum())
            total += len(batch["labels"])
    model.train()
    return right / total


def main() -> None:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, num_labels=2)
    model = BertForSequenceClassification(config)
    train = torch.utils.data.DataLoader(token_data(2048, 0), batch_size=32, shuffle=True, collate_fn=collate,
                                        generator=torch.Generator().manual_seed(0))
    test = torch.utils.data.DataLoader(token_data(512, 1), batch_size=128, collate_fn=collate)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    result = find_lr(model, train, optimizer=optimizer, num_iter=150, seed=0, progress=False)
    print(result.summary())
    result.plot(path="hugging_face_range_test.png")
    lr = result.apply(optimizer)            # the model and optimizer are as they were before the sweep

    epochs = 2
    total = epochs * len(train)
    scheduler = get_schedule("linear").build(optimizer, total, end_factor=0.01, warmup=total // 10)
    print(f"training at LR {lr:.3g}: linear decay after a warmup of {total // 10} steps")
    for epoch in range(epochs):
        for batch in train:
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
        print(f"epoch {epoch + 1}: test accuracy {accuracy(model, test):.1%}")


if __name__ == "__main__":
    main()
