#!/usr/bin/env python3
"""A gradient-boosted classifier on hand-made features: the comparison the inference issue asks
the ml mode to beat.

Trained on the training rows `stockgrid train --export` writes (training seeds only), its pickup
threshold tuned on calibration rows (`stockgrid sim features` over the calibration runs) for a
broken-promise rate of 1%, exactly as `stockgrid train` tunes the ml mode's, and scored on the
rows `stockgrid sim features` writes for evaluation runs. Features are the simple, hand-made
ones (record margin, time since the last sale, age and kind of the last count, velocity, units
sold since the count, quantity, location kind, feed silence); none of the belief's outputs.
For each scenario it reports the pickup broken-promise rate and recall at the tuned threshold,
then the operating points swept on the evaluation rows themselves (an oracle threshold,
generous to the baseline): the best recall at a broken-promise rate <= 1%, the least
broken-promise rate at recall >= 95%, and ECE over 10 bins.

    pip install scikit-learn pandas
    python3 ops/gbt_baseline.py TRAINING_ROWS.csv CALIBRATION_ROWS.csv EVALUATION_ROWS.csv
"""
import sys

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

HAND_MADE = [
    "record_margin", "log_hours_since_sale", "log_days_since_anchor", "anchor_count",
    "anchor_rfid", "anchor_snapshot", "log_sales_per_day", "log_units_sold_since_anchor",
    "log_quantity", "kind_fc", "kind_warehouse", "log_feed_silence_ratio",
]


def sweep(p, y):
    order = np.argsort(-p, kind="stable")
    p, y = p[order], y[order]
    positives = max(y.sum(), 1)
    # Cut only between distinct probabilities.
    last = np.r_[p[1:] != p[:-1], True]
    promised = np.arange(1, len(p) + 1)[last]
    kept = np.cumsum(y)[last]
    broken = (promised - kept) / promised
    recall = kept / positives
    r_at_1 = recall[broken <= 0.01].max(initial=0.0)
    reachable = broken[recall >= 0.95]
    b_at_95 = reachable.min() if len(reachable) else float("nan")
    return r_at_1, b_at_95


def tune(p, y, target=0.01):
    """The lowest threshold whose broken-promise rate is at most the target (most recall)."""
    order = np.argsort(-p, kind="stable")
    p, y = p[order], y[order]
    last = np.r_[p[1:] != p[:-1], True]
    promised = np.arange(1, len(p) + 1)[last]
    broken = (promised - np.cumsum(y)[last]) / promised
    ok = np.nonzero(broken <= target)[0]
    return p[last][ok[-1]] if len(ok) else 1.0 + 1e-9


def ece(p, y, bins=10):
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return total / len(p)


def main():
    training = pd.read_csv(sys.argv[1])
    calibration = pd.read_csv(sys.argv[2])
    evaluation = pd.read_csv(sys.argv[3])
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, max_leaf_nodes=31,
                                           random_state=0)
    model.fit(training[HAND_MADE].to_numpy(), training["label"].to_numpy())
    pickup = calibration[calibration["surface"] == "pickup"]
    threshold = tune(model.predict_proba(pickup[HAND_MADE].to_numpy())[:, 1],
                     pickup["label"].to_numpy())
    print(f"pickup threshold tuned on calibration rows: {threshold:.4f}")
    evaluation["gbt"] = model.predict_proba(evaluation[HAND_MADE].to_numpy())[:, 1]
    print(f"{'scenario':<22} {'tuned broken':>12} {'recall':>7} {'R@1%':>7} {'B@95%':>7} {'ECE':>7}")
    for scenario, rows in evaluation[evaluation["surface"] == "pickup"].groupby("scenario", sort=False):
        p, y = rows["gbt"].to_numpy(), rows["label"].to_numpy()
        promised = p >= threshold
        broken = (promised & (y == 0)).sum() / max(promised.sum(), 1)
        recall = (promised & (y == 1)).sum() / max((y == 1).sum(), 1)
        r_at_1, b_at_95 = sweep(p, y)
        print(f"{scenario:<22} {100 * broken:>11.2f}% {100 * recall:>6.1f}% {100 * r_at_1:>6.1f}% "
              f"{100 * b_at_95:>6.2f}% {ece(p, y):>7.4f}")


if __name__ == "__main__":
    main()
