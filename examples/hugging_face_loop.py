"""Hugging Face's Trainer: the base LR from find_lr, the decay from tune_loop, each trial a Trainer run.

    pip install transformers accelerate
    python examples/hugging_face_loop.py runs/hf --trials 8

The 2-layer BERT of hugging_face.py (built from a config: nothing is downloaded) learns whether a
sequence of token ids holds token 7. find_lr sweeps it with AdamW on its dict batches. Each trial
of tune_loop then runs a `Trainer` with `optimizers=trial.hugging_face(optimizer)` (the trial's
scheduler, which the Trainer steps after every optimizer step) and
`trial.hugging_face_callback("eval_loss")`, which reports each epoch's evaluation, where Optuna
may stop the trial. The task is easy (every schedule reaches 100% accuracy), so the study ranks
the trials on the validation loss. At the end the best schedule trains once more, at twice the
tuned length, and is scored on a test set.
"""

from __future__ import annotations

import argparse
import math
import tempfile

import numpy as np
import torch

import lrfind

try:
    from transformers import BertConfig, BertForSequenceClassification, PrinterCallback, Trainer, TrainingArguments
except ImportError:
    raise SystemExit("this example needs transformers and accelerate: pip install transformers accelerate") from None

from hugging_face import collate, token_data       # the data of examples/hugging_face.py

BATCH = 32


def make_model(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=128, num_labels=2))


def accuracy(prediction) -> dict[str, float]:
    """compute_metrics: the Trainer reports it as eval_accuracy."""
    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}


def run(model, optimizers, epochs: int, seed: int, train, evaluate, callbacks=()) -> Trainer:
    args = TrainingArguments(tempfile.mkdtemp(), num_train_epochs=epochs, per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=128, eval_strategy="epoch", save_strategy="no",
                             logging_strategy="no", report_to=[], disable_tqdm=True, seed=seed, use_cpu=True,
                             metric_for_best_model="loss")   # what the Trainer steps a plateau schedule on
    trainer = Trainer(model, args, train_dataset=train, eval_dataset=evaluate, data_collator=collate,
                      compute_metrics=accuracy, optimizers=optimizers, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)                    # the metrics of every evaluation, printed
    trainer.train()
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder for the study and its report")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    train, val, test = token_data(2048, 0), token_data(512, 1), token_data(512, 2)
    steps_per_epoch = math.ceil(len(train) / BATCH)             # the Trainer keeps a last, smaller batch

    model = make_model(0)
    loader = torch.utils.data.DataLoader(train, batch_size=BATCH, shuffle=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    found = lrfind.find_lr(model, loader, optimizer=optimizer, num_iter=150, seed=0, progress=False)
    print(found.summary())

    def trial_run(trial) -> float:
        model = make_model(trial.seed)
        run(model, trial.hugging_face(trial.optimizer(model.parameters())), trial.epochs, trial.seed, train, val,
            [trial.hugging_face_callback("eval_loss")])
        return trial.scores[-1]

    result = lrfind.tune_loop(trial_run, base_lr=found, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                              metric="loss", trials=args.trials, optimizer="adamw", weight_decay=0.01,
                              out=args.out, final_seeds=0)
    print(result.summary())

    best, epochs = result.best, 2 * args.epochs
    model = make_model(0)
    optimizer = best.optimizer(model.parameters())
    scheduler = best.scheduler(optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch)
    trainer = run(model, (optimizer, scheduler), epochs, 0, train, test)
    scores = trainer.evaluate()
    print(f"{best}: test loss {scores['eval_loss']:.4f}, {100 * scores['eval_accuracy']:.2f}% test accuracy "
          f"after {epochs} epochs")


if __name__ == "__main__":
    main()
