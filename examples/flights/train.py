"""A custom train function for kiln.custom.yaml: a LightGBM model on the delay's log-scale.

Kiln calls train(X, y, context) once per segment and once for the fallback. X holds the features
(categorical ones encoded as numbers), y the target; the returned object's predict(X) is what
serves. Wrapping the booster in a small class keeps prediction on the lean NumPy path.
"""

from __future__ import annotations

import numpy as np
from lightgbm import LGBMRegressor

SHIFT = 100.0  # arrival delays start around -90 minutes


class ShiftedLogModel:
    def __init__(self, model: LGBMRegressor) -> None:
        self.model = model

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.expm1(self.model.booster_.predict(X, num_threads=1)) - SHIFT


def train(X, y, context):
    cats = [X.columns.get_loc(c) for c in context.categorical]
    model = LGBMRegressor(
        n_estimators=200, learning_rate=0.05, num_leaves=31, n_jobs=context.threads, verbose=-1
    )
    model.fit(
        X.to_numpy(), np.log1p(np.clip(y.to_numpy() + SHIFT, 0, None)), categorical_feature=cats
    )
    return ShiftedLogModel(model)
