"""Tidy per-epoch metrics, and ensemble summaries that leave failed runs out.

The engine's history has one row per (member, epoch) with columns ``member,
seed, epoch, step, train_loss, train_acc, test_loss, test_acc, epoch_time,
eval_time, wall_time, failed`` (plus ``train_eval_loss, train_eval_acc`` when the
clean training set is evaluated, and ``eval_bn_mode``). ``train_*`` are means
over the epoch's minibatch steps in train mode (augmented data, batch
statistics, dropout on); ``test_*``/``train_eval_*`` come from a full pass in
``eval_bn_mode``. Metrics of a failed member are NaN from the epoch it failed.
"""

from __future__ import annotations

import pandas as pd

METRIC_COLUMNS = (
    "train_loss",
    "train_acc",
    "train_eval_loss",
    "train_eval_acc",
    "test_loss",
    "test_acc",
)


def summarize(history: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch mean and std over members that have not failed, with counts.

    Failed members are dropped before averaging (never averaged in), and
    ``n_failed`` says how many there were at that epoch.
    """
    cols = [c for c in METRIC_COLUMNS if c in history.columns]
    ok = history[~history["failed"]]
    grouped = ok.groupby("epoch")[cols].agg(["mean", "std"])
    grouped.columns = [f"{c}_{stat}" for c, stat in grouped.columns]
    counts = history.groupby("epoch")["failed"].agg(n_failed="sum", n_members="size")
    out = counts.join(grouped, how="left").reset_index()
    out["n_ok"] = out["n_members"] - out["n_failed"]
    return out
