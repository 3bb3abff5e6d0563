"""Class probabilities matched by name onto a candidate's classes (one helper for the
champion/challenger, replay and shadow gates)."""

from __future__ import annotations

import numpy as np

from kiln.gates.base import on_classes


def test_probabilities_are_matched_by_class_name() -> None:
    proba = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    same = on_classes(proba, ["a", "b", "c"], ["a", "b", "c"])
    np.testing.assert_array_equal(same, proba)
    # other order, a class the candidate lacks (dropped), one the other version lacks (0)
    moved = on_classes(proba, ["c", "x", "a"], ["a", "b", "c"])
    np.testing.assert_array_equal(moved, [[0.3, 0.0, 0.2], [0.3, 0.0, 0.6]])
    # a null probability stays unknown
    row = on_classes([[np.nan, 0.4]], ["b", "a"], ["a", "b"])
    assert row[0, 0] == 0.4 and np.isnan(row[0, 1])
