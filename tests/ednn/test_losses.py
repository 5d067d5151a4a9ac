import keras
import numpy as np
import pytest

import ednn  # noqa: F401  (registers the Keras objects)
from ednn.losses import WeightedMAE


def test_weighted_mae_weighs_each_target():
    y_true = np.zeros((2, 2), "float32")
    y_pred = np.array([[1.0, 10.0], [3.0, 30.0]], "float32")
    loss = WeightedMAE([1.0, 0.1])
    assert float(loss(y_true, y_pred)) == pytest.approx((1 + 1 + 3 + 3) / 4)


def test_a_model_compiled_with_it_loads_from_a_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss=WeightedMAE([2.0, 0.5]))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.loss.weights == [2.0, 0.5]


@pytest.mark.parametrize("weights", [[], [1.0, 0.0], [-1.0]])
def test_weights_must_be_positive(weights):
    with pytest.raises(ValueError, match="positive"):
        WeightedMAE(weights)
