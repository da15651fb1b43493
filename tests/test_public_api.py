"""The public namespaces mirror Keras's, and string identifiers resolve as in Keras."""
import kdsl


def test_namespaces_mirror_keras():
    for name in ("Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "Lion", "Ftrl"):
        assert hasattr(kdsl.optimizers, name)
    for name in ("ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay"):
        assert hasattr(kdsl.optimizers.schedules, name)
    for name in ("CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy",
                 "MeanSquaredError", "MeanAbsoluteError", "Huber", "KLDivergence", "Hinge"):
        assert hasattr(kdsl.losses, name)
    for name in ("BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy", "Precision", "Recall", "AUC"):
        assert hasattr(kdsl.metrics, name)
    for name in ("EarlyStopping", "ModelCheckpoint", "CSVLogger", "LearningRateScheduler", "ReduceLROnPlateau",
                 "TerminateOnNaN", "History", "Callback"):
        assert hasattr(kdsl.callbacks, name)
    assert callable(kdsl.utils.to_categorical) and callable(kdsl.utils.set_random_seed)
    assert callable(kdsl.datasets.mnist.load_data)


def test_string_identifiers_resolve_like_keras():
    assert type(kdsl.optimizers.get("adam")).__name__ == "Adam"
    adam = kdsl.optimizers.get("adam")
    assert adam.learning_rate == 1e-3 and adam.epsilon == 1e-7
    assert type(kdsl.losses.get("mse")).__name__ == "MeanSquaredError"
    assert type(kdsl.losses.get("categorical_crossentropy")).__name__ == "CategoricalCrossentropy"
    x = kdsl.Input((4,))
    m = kdsl.Model(x, kdsl.layers.Dense(3, activation="softmax")(x))
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert type(m._setup.metrics[m.output_names[0]][0]).__name__ == "SparseCategoricalAccuracy"
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    assert type(m._setup.metrics[m.output_names[0]][0]).__name__ == "CategoricalAccuracy"
