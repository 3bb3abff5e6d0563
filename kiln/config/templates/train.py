"""A custom train function: Kiln calls it once per segment and once for the fallback.

X is a DataFrame of the features (categorical ones already encoded as numbers), y the target.
Return any fitted object whose predict(X) takes a 2-D array of the features in the same order.
"""

from lightgbm import LGBMRegressor


def train(X, y, context):
    model = LGBMRegressor(n_estimators=200, learning_rate=0.05, n_jobs=context.threads, verbose=-1)
    model.fit(X.to_numpy(), y.to_numpy())
    return model
