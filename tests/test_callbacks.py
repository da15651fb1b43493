"""Keras callbacks driven by a scripted fake fit loop; expected sequences written by hand from Keras's rules."""
import math
import os

import numpy as np
import pytest

from kdsl.callbacks import (Callback, CallbackList, CSVLogger, EarlyStopping, History, LearningRateScheduler,
                            ModelCheckpoint, ProgbarLogger, ReduceLROnPlateau, TerminateOnNaN, resolve_mode)
from kdsl.errors import KdslError


class FakeOptimizer:
    def __init__(self, learning_rate=0.1):
        self.learning_rate = learning_rate


class FakeModel:
    """The model contract the callbacks rely on. Its one weight holds the index of the last epoch trained."""

    def __init__(self, learning_rate=0.1):
        self.stop_training = False
        self.optimizer = FakeOptimizer(learning_rate)
        self.weights = [np.array([-1.0]), np.zeros(2)]
        self.saves = []          # (kind, path) in order

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]

    def save(self, path):
        self.saves.append(("model", path))
        with open(path, "w") as f:
            f.write("model")

    def save_weights(self, path):
        self.saves.append(("weights", path))
        with open(path, "w") as f:
            f.write("weights")


def fit(model, callbacks, epoch_logs, steps=3, batch_loss=None, verbose=0):
    """A fit loop like Keras 3's: batch hooks, then epoch end (even after a stop), then stop check."""
    cbs = CallbackList(callbacks, add_history=True, model=model, verbose=verbose, epochs=len(epoch_logs),
                       steps=steps)
    model.stop_training = False
    model.batches_run = 0
    cbs.on_train_begin()
    for epoch, logs in enumerate(epoch_logs):
        cbs.on_epoch_begin(epoch)
        for batch in range(steps):
            cbs.on_train_batch_begin(batch)
            model.batches_run += 1
            loss = batch_loss(epoch, batch) if batch_loss else 1.0
            cbs.on_train_batch_end(batch, {"loss": loss})
            if model.stop_training:
                break
        model.weights[0] = np.array([float(epoch)])
        cbs.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    cbs.on_train_end()
    return model.history


def val_losses(*values):
    return [{"loss": 1.0, "val_loss": v} for v in values]


# -- History / CallbackList ---------------------------------------------------------------------

def test_history_records_every_epoch():
    model = FakeModel()
    h = fit(model, [], [{"loss": 0.5, "accuracy": 0.7}, {"loss": 0.4, "accuracy": 0.8}])
    assert isinstance(h, History)
    assert h.epoch == [0, 1]
    assert h.history == {"loss": [0.5, 0.4], "accuracy": [0.7, 0.8]}
    assert model.history is h


def test_callback_list_dispatches_in_order_with_params_and_model():
    calls = []

    class Recorder(Callback):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def on_epoch_end(self, epoch, logs=None):
            calls.append((self.tag, epoch, dict(logs)))
            logs[self.tag] = epoch          # later callbacks see what earlier ones add

        def on_batch_end(self, batch, logs=None):   # the Keras 2 alias still fires
            calls.append((self.tag, "batch", batch))

    a, b = Recorder("a"), Recorder("b")
    model = FakeModel()
    cbs = CallbackList([a, [b]], add_history=True, add_progbar=False, model=model, verbose=0, epochs=1, steps=2)
    assert a.model is model and b.params == {"verbose": 0, "epochs": 1, "steps": 2}
    assert len(cbs) == 3 and isinstance(cbs.callbacks[-1], History)
    cbs.on_train_batch_end(0, {"loss": 1.0})
    cbs.on_epoch_end(0, {"loss": 1.0})
    assert calls == [("a", "batch", 0), ("b", "batch", 0), ("a", 0, {"loss": 1.0}), ("b", 0, {"loss": 1.0, "a": 0})]
    assert cbs.history.history == {"loss": [1.0], "a": [0], "b": [0]}


def test_callback_list_keeps_user_history_and_adds_progbar():
    h = History()
    cbs = CallbackList([h], add_history=True, add_progbar=True, model=FakeModel(), verbose=0, epochs=1, steps=1)
    assert cbs.callbacks[0] is h and sum(isinstance(c, History) for c in cbs) == 1
    assert isinstance(cbs.callbacks[-1], ProgbarLogger)
    with pytest.raises(KdslError, match="Callbacks must be instances"):
        CallbackList([lambda: None])


def test_base_callback_hooks_are_no_ops():
    cb = Callback()
    assert cb.model is None and cb.params is None
    for hook in ("on_train_begin", "on_train_end", "on_test_begin", "on_test_end", "on_predict_begin",
                 "on_predict_end"):
        getattr(cb, hook)({})
    for hook in ("on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end",
                 "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin", "on_predict_batch_end"):
        getattr(cb, hook)(0, {})


def test_resolve_mode():
    assert resolve_mode("val_loss", "auto", "X") == "min"
    assert resolve_mode("val_accuracy", "auto", "X") == "max"
    assert resolve_mode("acc", "auto", "X") == "max"
    assert resolve_mode("val_auc_1", "auto", "X") == "max"
    assert resolve_mode("val_precision", "auto", "X") == "max"
    assert resolve_mode("mean_absolute_error", "auto", "X") == "min"
    assert resolve_mode("val_accuracy", "min", "X") == "min"
    with pytest.warns(UserWarning, match="X mode 'up' is unknown, fallback to auto mode"):
        assert resolve_mode("loss", "up", "X") == "min"


# -- EarlyStopping ------------------------------------------------------------------------------

def test_early_stopping_patience_and_restore_best_weights(capsys):
    # patience=2: e0 best 1.0; e1 best 0.8; e2 wait 1; e3 wait 2 -> stop after epoch index 3.
    model = FakeModel()
    es = EarlyStopping(patience=2, restore_best_weights=True, verbose=1)
    h = fit(model, [es], val_losses(1.0, 0.8, 0.85, 0.9, 0.7, 0.6))
    assert h.epoch == [0, 1, 2, 3]
    assert es.stopped_epoch == 3 and es.best == 0.8 and es.best_epoch == 1
    assert model.weights[0].tolist() == [1.0]      # weights at the end of epoch index 1
    out = capsys.readouterr().out
    assert "Epoch 4: early stopping" in out
    assert "Restoring model weights from the end of the best epoch: 2." in out


def test_early_stopping_without_restore_keeps_last_weights():
    model = FakeModel()
    fit(model, [EarlyStopping(patience=2)], val_losses(1.0, 0.8, 0.85, 0.9, 0.7))
    assert model.weights[0].tolist() == [3.0]


def test_early_stopping_patience_zero():
    assert fit(FakeModel(), [EarlyStopping()], val_losses(1.0, 1.1, 0.5)).epoch == [0, 1]
    # equal is not an improvement
    assert fit(FakeModel(), [EarlyStopping()], val_losses(1.0, 0.9, 0.9, 0.1)).epoch == [0, 1, 2]


def test_early_stopping_min_delta():
    # improvements must exceed 0.1: 0.95 is not one -> wait 1 >= patience 1 at epoch 1.
    es = EarlyStopping(monitor="val_loss", min_delta=0.1, patience=1)
    assert fit(FakeModel(), [es], val_losses(1.0, 0.95, 0.85, 0.8)).epoch == [0, 1]
    assert es.best == 1.0
    # negative min_delta is taken as its absolute value, as in Keras
    assert fit(FakeModel(), [EarlyStopping(min_delta=-0.1, patience=1)], val_losses(1.0, 0.95, 0.8)).epoch == [0, 1]


def test_early_stopping_max_mode_from_name():
    logs = [{"val_accuracy": v} for v in (0.5, 0.6, 0.55, 0.58, 0.7)]
    es = EarlyStopping(monitor="val_accuracy", patience=2)
    assert fit(FakeModel(), [es], logs).epoch == [0, 1, 2, 3]
    assert es.best == 0.6
    # explicit mode="min" on the same data: 0.6 is worse than 0.5 -> e1 wait 1, e2 wait 2 -> stop at 2
    assert fit(FakeModel(), [EarlyStopping(monitor="val_accuracy", patience=2, mode="min")], logs).epoch == [0, 1, 2]


def test_early_stopping_baseline():
    # Without a baseline: e2 is the first non-improvement (wait 1 < 2): trains all 3 epochs.
    assert fit(FakeModel(), [EarlyStopping(patience=2)], val_losses(1.0, 0.9, 0.95)).epoch == [0, 1, 2]
    # With baseline 0.5 nothing beats it, so the wait never restarts: e0 wait 1, e1 wait 2 (improving, no
    # check), e2 wait 3 >= 2 -> stop at epoch index 2.
    es = EarlyStopping(patience=2, baseline=0.5, restore_best_weights=True)
    model = FakeModel()
    assert fit(model, [es], val_losses(1.0, 0.9, 0.95, 0.3)).epoch == [0, 1, 2]
    assert es.stopped_epoch == 2
    assert model.weights[0].tolist() == [1.0]      # best epoch among those seen, despite the baseline
    # beating the baseline restarts the wait
    es = EarlyStopping(patience=2, baseline=0.5)
    assert fit(FakeModel(), [es], val_losses(0.4, 0.45, 0.46, 0.47)).epoch == [0, 1, 2]


def test_early_stopping_start_from_epoch():
    es = EarlyStopping(patience=0, start_from_epoch=2, restore_best_weights=True)
    model = FakeModel()
    # epochs 0 and 1 are not monitored; e2 best 1.0; e3 wait 1 >= 0 -> stop.
    assert fit(model, [es], val_losses(0.5, 0.9, 1.0, 1.1, 1.2)).epoch == [0, 1, 2, 3]
    assert es.best_epoch == 2 and model.weights[0].tolist() == [2.0]


def test_early_stopping_restores_best_even_without_stopping():
    model = FakeModel()
    es = EarlyStopping(patience=5, restore_best_weights=True)
    assert fit(model, [es], val_losses(1.0, 0.5, 0.7)).epoch == [0, 1, 2]
    assert es.stopped_epoch == 0 and model.weights[0].tolist() == [1.0]


def test_early_stopping_missing_monitor_warns_and_never_stops():
    with pytest.warns(UserWarning, match=r"Early stopping conditioned on metric `val_loss` which is not "
                                         r"available. Available metrics are: loss,accuracy"):
        h = fit(FakeModel(), [EarlyStopping()], [{"loss": 1.0, "accuracy": 0.5}] * 3)
    assert h.epoch == [0, 1, 2]


def test_early_stopping_is_reusable():
    es = EarlyStopping(patience=1, restore_best_weights=True)
    assert fit(FakeModel(), [es], val_losses(0.1, 0.2, 0.3)).epoch == [0, 1]
    model = FakeModel()
    assert fit(model, [es], val_losses(1.0, 0.9, 0.8)).epoch == [0, 1, 2]    # best reset at train begin
    assert model.weights[0].tolist() == [2.0]


def test_early_stopping_numpy_values():
    logs = [{"val_loss": np.float32(v)} for v in (1.0, 2.0)]
    assert fit(FakeModel(), [EarlyStopping()], logs).epoch == [0, 1]


# -- ModelCheckpoint ----------------------------------------------------------------------------

def test_checkpoint_save_best_only_formats_path(tmp_path):
    model = FakeModel()
    pattern = str(tmp_path / "ckpt" / "model-{epoch:02d}-{val_loss:.2f}.kdckpt")
    cb = ModelCheckpoint(pattern, save_best_only=True)
    fit(model, [cb], val_losses(1.0, 0.8, 0.9, 0.7, 0.7))
    names = [os.path.basename(p) for _, p in model.saves]
    assert names == ["model-01-1.00.kdckpt", "model-02-0.80.kdckpt", "model-04-0.70.kdckpt"]
    assert all(kind == "model" for kind, _ in model.saves)
    assert sorted(os.listdir(tmp_path / "ckpt")) == names
    assert cb.best == 0.7


def test_checkpoint_every_epoch_and_weights_only(tmp_path):
    model = FakeModel()
    cb = ModelCheckpoint(str(tmp_path / "w{epoch}.bin"), save_weights_only=True, verbose=1)
    fit(model, [cb], val_losses(1.0, 2.0, 3.0))
    assert model.saves == [("weights", str(tmp_path / f"w{i}.bin")) for i in (1, 2, 3)]


def test_checkpoint_verbose_messages(tmp_path, capsys):
    cb = ModelCheckpoint(str(tmp_path / "m.kdckpt"), save_best_only=True, verbose=1)
    fit(FakeModel(), [cb], val_losses(1.0, 2.0))
    out = capsys.readouterr().out
    assert f"Epoch 1: val_loss improved from inf to 1.00000, saving model to {tmp_path / 'm.kdckpt'}" in out
    assert "Epoch 2: val_loss did not improve from 1.00000" in out


def test_checkpoint_max_mode_and_threshold(tmp_path):
    model = FakeModel()
    logs = [{"val_accuracy": v} for v in (0.5, 0.7, 0.6, 0.8)]
    fit(model, [ModelCheckpoint(str(tmp_path / "{epoch}"), monitor="val_accuracy", save_best_only=True)], logs)
    assert [os.path.basename(p) for _, p in model.saves] == ["1", "2", "4"]
    model = FakeModel()
    fit(model, [ModelCheckpoint(str(tmp_path / "{epoch}"), save_best_only=True, initial_value_threshold=0.85)],
        val_losses(0.9, 0.8, 0.95, 0.85))
    assert [os.path.basename(p) for _, p in model.saves] == ["2"]


def test_checkpoint_batch_frequency(tmp_path):
    # save_freq=2, 3 batches per epoch: counts 1,2* | 1,2* | ... -> (epoch 1, batch 2), (2, 1), (2, 3)
    model = FakeModel()
    fit(model, [ModelCheckpoint(str(tmp_path / "e{epoch}-b{batch}"), save_freq=2)], val_losses(1.0, 0.9))
    assert [os.path.basename(p) for _, p in model.saves] == ["e1-b2", "e2-b1", "e2-b3"]
    with pytest.raises(KdslError, match="Unrecognized save_freq"):
        ModelCheckpoint("x", save_freq="batch")


def test_checkpoint_missing_monitor_warns_and_saves(tmp_path):
    model = FakeModel()
    with pytest.warns(UserWarning, match="Can save best model only with val_loss available"):
        fit(model, [ModelCheckpoint(str(tmp_path / "m"), save_best_only=True)], [{"loss": 1.0}])
    assert len(model.saves) == 1


def test_checkpoint_bad_pattern_and_directory(tmp_path):
    with pytest.raises(KdslError, match=r'Failed to format this callback filepath: ".*\{val_acc\}"'):
        fit(FakeModel(), [ModelCheckpoint(str(tmp_path / "{val_acc}"))], val_losses(1.0))
    (tmp_path / "d").mkdir()
    with pytest.raises(KdslError, match="non-directory filepath"):
        fit(FakeModel(), [ModelCheckpoint(str(tmp_path / "d"))], val_losses(1.0))


# -- CSVLogger ----------------------------------------------------------------------------------

def test_csv_logger_content(tmp_path):
    path = tmp_path / "log.csv"
    logs = [{"loss": 0.5, "accuracy": 0.75, "val_loss": np.float32(0.625)},
            {"loss": 0.25, "accuracy": 1.0}]
    fit(FakeModel(), [CSVLogger(str(path))], logs)
    assert path.read_bytes() == (b"epoch,accuracy,loss,val_loss\r\n"
                                 b"0,0.75,0.5,0.625\r\n"
                                 b"1,1.0,0.25,NA\r\n")


def test_csv_logger_separator_and_append(tmp_path):
    path = tmp_path / "log.tsv"
    fit(FakeModel(), [CSVLogger(str(path), separator="\t")], [{"loss": 0.5}])
    fit(FakeModel(), [CSVLogger(str(path), separator="\t", append=True)], [{"loss": 0.25}, {"loss": 0.125}])
    assert path.read_bytes().decode() == "epoch\tloss\r\n0\t0.5\r\n0\t0.25\r\n1\t0.125\r\n"
    # append=False overwrites
    fit(FakeModel(), [CSVLogger(str(path), separator="\t")], [{"loss": 2.0}])
    assert path.read_bytes().decode() == "epoch\tloss\r\n0\t2.0\r\n"


def test_csv_logger_appends_header_to_empty_file_and_lists(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("")
    fit(FakeModel(), [CSVLogger(str(path), append=True)], [{"loss": 0.5, "lr": [1, 2]}])
    assert path.read_bytes().decode() == 'epoch,loss,lr\r\n0,0.5,"""[1, 2]"""\r\n'


# -- LearningRateScheduler ----------------------------------------------------------------------

def test_learning_rate_scheduler_sets_lr_each_epoch(capsys):
    model = FakeModel(learning_rate=0.1)
    seen = []

    class Spy(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                seen.append(self.model.optimizer.learning_rate)

    sched = LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5, verbose=1)
    h = fit(model, [sched, Spy()], [{"loss": 1.0}] * 4)
    assert seen == [0.1, 0.1, 0.05, 0.025]
    assert h.history["learning_rate"] == [0.1, 0.1, 0.05, 0.025]
    assert "Epoch 3: LearningRateScheduler setting learning rate to 0.05." in capsys.readouterr().out


def test_learning_rate_scheduler_old_api_and_bad_output():
    model = FakeModel()
    h = fit(model, [LearningRateScheduler(lambda epoch: 1.0 / (epoch + 1))], [{"loss": 1.0}] * 3)
    assert h.history["learning_rate"] == [1.0, 0.5, 1.0 / 3]
    with pytest.raises(KdslError, match="should be a float. Got: 1"):
        fit(FakeModel(), [LearningRateScheduler(lambda epoch, lr: 1)], [{"loss": 1.0}])


def test_learning_rate_scheduler_with_a_schedule_object():
    from kdsl.optimizers.schedules import PiecewiseConstantDecay

    schedule = PiecewiseConstantDecay([0, 1], [1.0, 0.5, 0.1])
    h = fit(FakeModel(), [LearningRateScheduler(lambda epoch, lr: schedule(epoch))], [{"loss": 1.0}] * 3)
    assert h.history["learning_rate"] == [1.0, 0.5, 0.1]


# -- ReduceLROnPlateau --------------------------------------------------------------------------

def test_reduce_lr_on_plateau_sequence(capsys):
    # lr 1.0, factor 0.5, patience 2, cooldown 1, min_lr 0.2 (hand trace in the comments):
    # e0 best; e1 wait1; e2 wait2 -> 0.5 (cooldown 1); e3 cooldown ends, wait1; e4 wait2 -> 0.25;
    # e5 wait1; e6 wait2 -> max(0.125, 0.2) = 0.2; e7 improves; e8 wait1; e9 wait2 but lr is min_lr; e10 wait3.
    model = FakeModel(learning_rate=1.0)
    after = []

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs=None):
            after.append(self.model.optimizer.learning_rate)

    cb = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.2, verbose=1)
    h = fit(model, [cb, Spy()], val_losses(*([1.0] * 7 + [0.5] * 4)))
    assert h.history["learning_rate"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2]
    assert after == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2, 0.2]
    out = capsys.readouterr().out
    assert "Epoch 3: ReduceLROnPlateau reducing learning rate to 0.5." in out
    assert "Epoch 7: ReduceLROnPlateau reducing learning rate to 0.2." in out


def test_reduce_lr_min_delta_and_max_mode():
    # default min_delta 1e-4: 0.99995 is not an improvement over 1.0; patience 1 -> reduce at e1.
    model = FakeModel(learning_rate=1.0)
    h = fit(model, [ReduceLROnPlateau(patience=1)], val_losses(1.0, 0.99995, 0.5))
    assert h.history["learning_rate"] == [1.0, 1.0, 0.1]
    # accuracy is maximised: a drop is a plateau
    model = FakeModel(learning_rate=1.0)
    logs = [{"val_accuracy": v} for v in (0.5, 0.4, 0.6)]
    h = fit(model, [ReduceLROnPlateau(monitor="val_accuracy", patience=1, factor=0.5)], logs)
    assert h.history["learning_rate"] == [1.0, 1.0, 0.5]
    with pytest.raises(KdslError, match="does not support a factor >= 1.0. Received factor=1.5"):
        ReduceLROnPlateau(factor=1.5)


def test_reduce_lr_missing_monitor_warns():
    model = FakeModel(learning_rate=1.0)
    with pytest.warns(UserWarning, match="Learning rate reduction is conditioned on metric `val_loss`"):
        h = fit(model, [ReduceLROnPlateau(patience=0)], [{"loss": 1.0}] * 2)
    assert model.optimizer.learning_rate == 1.0 and h.history["learning_rate"] == [1.0, 1.0]


# -- TerminateOnNaN -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_terminate_on_nan(bad, capsys):
    model = FakeModel()
    h = fit(model, [TerminateOnNaN()], [{"loss": 1.0}] * 3, steps=4,
            batch_loss=lambda e, b: bad if (e, b) == (1, 2) else 0.5)
    assert model.batches_run == 4 + 3
    assert h.epoch == [0, 1]          # the epoch still ends, as in Keras
    assert "Batch 2: Invalid loss, terminating training" in capsys.readouterr().out


def test_terminate_on_nan_ignores_finite_and_missing_losses():
    model = FakeModel()
    fit(model, [TerminateOnNaN()], [{"loss": 1.0}] * 2, steps=2, batch_loss=lambda e, b: 1e30)
    assert model.batches_run == 4
    TerminateOnNaN().on_train_batch_end(0, {"accuracy": 0.5})


# -- ProgbarLogger ------------------------------------------------------------------------------

def test_progbar_logger_verbose_2(capsys, monkeypatch):
    from kdsl.runtime import progress

    clock = iter(float(t) for t in range(1000))
    monkeypatch.setattr(progress, "_now", lambda: next(clock))
    cbs = CallbackList([], add_progbar=True, model=FakeModel(), verbose=2, epochs=2, steps=2)
    cbs.on_train_begin()
    for epoch, logs in enumerate([{"loss": 0.5}, {"loss": 0.125}]):
        cbs.on_epoch_begin(epoch)
        for b in range(2):
            cbs.on_train_batch_end(b, {"loss": 9.0})
        cbs.on_epoch_end(epoch, dict(logs))
    out = capsys.readouterr().out
    # verbose=2 draws nothing per batch; the clock ticks 1s from the bar's start to its end: 1s, 0.5 s/step
    assert out == ("Epoch 1/2\n2/2 - 1s - 500ms/step - loss: 0.5000\n"
                   "Epoch 2/2\n2/2 - 1s - 500ms/step - loss: 0.1250\n")
