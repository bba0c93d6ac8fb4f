"""The two seed models (Keras 3)."""

from __future__ import annotations

import keras
import numpy as np

from training.data.housing import DEEP_FEATURES, WIDE_FEATURES


def build_classifier(learning_rate: float) -> keras.Model:
    """Fashion-MNIST MLP; expects pixels already scaled to [0, 1]."""
    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="fashion_mnist",
    )
    model.compile(
        loss="sparse_categorical_crossentropy",
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        metrics=["accuracy"],
    )
    return model


def split_inputs(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 raw features -> (wide = [:, :5], deep = [:, 2:]) as float32."""
    features = np.asarray(features, dtype=np.float32)
    return features[:, : len(WIDE_FEATURES)], features[:, 8 - len(DEEP_FEATURES) :]


def build_regressor(train_features: np.ndarray, learning_rate: float) -> keras.Model:
    """Wide & deep regressor with an auxiliary output.

    Standardisation lives in the model (one Normalization layer per input, adapted on the
    training rows) so the served model takes the raw features.
    """
    wide_train, deep_train = split_inputs(train_features)
    input_wide = keras.Input(shape=(len(WIDE_FEATURES),), name="wide")
    input_deep = keras.Input(shape=(len(DEEP_FEATURES),), name="deep")
    norm_wide = keras.layers.Normalization(name="norm_wide")
    norm_deep = keras.layers.Normalization(name="norm_deep")
    norm_wide.adapt(wide_train)
    norm_deep.adapt(deep_train)
    hidden1 = keras.layers.Dense(30, activation="relu", name="hidden1")(norm_deep(input_deep))
    hidden2 = keras.layers.Dense(30, activation="relu", name="hidden2")(hidden1)
    concat = keras.layers.concatenate([norm_wide(input_wide), hidden2])
    main = keras.layers.Dense(1, name="main")(concat)
    aux = keras.layers.Dense(1, name="aux")(hidden2)
    model = keras.Model(inputs=[input_wide, input_deep], outputs=[main, aux], name="housing")
    model.compile(
        loss=("mse", "mse"),
        loss_weights=(0.9, 0.1),
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        metrics=[["root_mean_squared_error"], ["root_mean_squared_error"]],
    )
    return model
