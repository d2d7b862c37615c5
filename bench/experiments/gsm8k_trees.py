"""Nonlinear models over the hand-made features (rules 23 + arithmetic 21), sklearn,
hyperparameters fixed before any run (docs/smart-routing.md, "Tried on 2026-12-03").
Needs scikit-learn (a separate venv: it is not a product dependency)."""

import numpy as np
from gsm8k_common import SEEDS, data, fold_array, labels, report
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)

rows, c = data()
y, weak, strong = labels(rows)
gain = strong - weak
x = np.hstack([c["rules"], c["arith"]])
gsm = np.array([r["family"] == "gsm8k" for r in rows])


def gbt():
    return HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=200,
        max_depth=3,
        min_samples_leaf=20,
        l2_regularization=1.0,
        random_state=0,
    )


def rf():
    return RandomForestClassifier(
        n_estimators=500, min_samples_leaf=10, max_features="sqrt", n_jobs=1, random_state=0
    )


def rf_gain():
    return RandomForestRegressor(
        n_estimators=500, min_samples_leaf=10, max_features=0.33, n_jobs=1, random_state=0
    )


def oof(make, target, only_gsm=False, proba=True):
    runs = []
    for seed in SEEDS:
        fold = fold_array(rows, seed)
        s = np.zeros(len(rows))
        for k in range(5):
            tr = np.where((fold != k) & (gsm if only_gsm else True))[0]
            te = np.where(fold == k)[0]
            m = make().fit(x[tr], target[tr])
            s[te] = m.predict_proba(x[te])[:, 1] if proba else m.predict(x[te])
        runs.append(s)
    return np.asarray(runs)


report("GBT, all sources, label y", rows, oof(gbt, y))
rf_runs = oof(rf, y)
report("RF, all sources, label y", rows, rf_runs)
report("RF, GSM8K only, label y", rows, oof(rf, y, only_gsm=True))
report("RF regressor, all sources, strong-weak", rows, oof(rf_gain, gain, proba=False))
