"""Keras 3 training callbacks: hooks called by ``fit``/``evaluate``/``predict``.

The callbacks only rely on this contract from the model the loop trains:

* ``model.stop_training`` -- a bool the loop checks after every batch and epoch;
* ``model.optimizer.learning_rate`` -- a float, readable and assignable;
* ``model.get_weights()`` / ``model.set_weights(list)``;
* ``model.save(path)`` (a full checkpoint) and ``model.save_weights(path)``.

``params`` (set by :class:`CallbackList`) is Keras's dict ``{"verbose", "epochs", "steps"}``.
Epoch and batch indices passed to hooks are 0-based, as in Keras.
"""
from __future__ import annotations

import csv
import math
import os
import re
import sys
import warnings
from collections.abc import Iterable
from typing import Any, Callable

import numpy as np

from .errors import KdslError

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "EarlyStopping", "ModelCheckpoint",
           "CSVLogger", "LearningRateScheduler", "ReduceLROnPlateau", "TerminateOnNaN"]

def _print(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


# Metric names Keras maximises (metrics whose ``_direction`` is "up").
_MAX_SUFFIXES = ("acc", "accuracy", "auc", "precision", "recall", "f1_score", "fbeta_score", "r2_score",
                 "iou")


def resolve_mode(monitor: str, mode: str, who: str) -> str:
    """``"min"`` or ``"max"`` for ``monitor``: explicit modes win; ``"auto"`` looks at the name.

    Accuracy/AUC/precision/recall-like names (``val_accuracy``, ``auc_1``) are maximised, everything
    else (losses, errors) minimised. An unknown mode warns and falls back to ``"auto"`` like Keras.
    """
    if mode not in ("auto", "min", "max"):
        warnings.warn(f"{who} mode '{mode}' is unknown, fallback to auto mode.", stacklevel=3)
        mode = "auto"
    if mode != "auto":
        return mode
    name = re.sub(r"_\d+$", "", monitor.removeprefix("val_"))
    return "max" if name.endswith(_MAX_SUFFIXES) else "min"


def _scalar(value) -> float | None:
    """A float from a log value (Python/NumPy number or 0-d array), or ``None`` if not a scalar."""
    try:
        arr = np.asarray(value)
    except Exception:  # pragma: no cover - exotic objects
        return None
    if arr.ndim != 0 or arr.dtype.kind not in "biuf":
        return None
    return float(arr)


class Callback:
    """Base class for callbacks: override the hooks you need.

    Attributes:
        model: the model being trained (set by ``set_model``).
        params: the training parameters ``{"verbose", "epochs", "steps"}`` (set by ``set_params``).
    """

    def __init__(self) -> None:
        self.params: dict[str, Any] | None = None
        self.model: Any = None

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def set_model(self, model: Any) -> None:
        self.model = model

    # Training-batch hooks default to the backwards-compatible `on_batch_*` names, as in Keras.
    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Alias of ``on_train_batch_begin`` kept for Keras 2 callbacks."""

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Alias of ``on_train_batch_end`` kept for Keras 2 callbacks."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the start of an epoch (``fit`` only)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the end of an epoch; ``logs`` has the epoch's metrics, ``val_*`` included."""

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_predict_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_train_begin(self, logs: dict | None = None) -> None:
        pass

    def on_train_end(self, logs: dict | None = None) -> None:
        pass

    def on_test_begin(self, logs: dict | None = None) -> None:
        pass

    def on_test_end(self, logs: dict | None = None) -> None:
        pass

    def on_predict_begin(self, logs: dict | None = None) -> None:
        pass

    def on_predict_end(self, logs: dict | None = None) -> None:
        pass


_HOOKS = ("on_batch_begin", "on_batch_end", "on_epoch_begin", "on_epoch_end",
          "on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin", "on_test_batch_end",
          "on_predict_batch_begin", "on_predict_batch_end", "on_train_begin", "on_train_end",
          "on_test_begin", "on_test_end", "on_predict_begin", "on_predict_end")


class CallbackList(Callback):
    """Dispatches every hook to a list of callbacks, in order (the fit loop's view of callbacks).

    Args:
        callbacks: a list of :class:`Callback` (nested lists are flattened).
        add_history: append a :class:`History` unless one is present; ``model.history`` is set to it.
        add_progbar: append a :class:`ProgbarLogger` unless one is present.
        model: the model, passed to every callback's ``set_model``.
        **params: ``verbose``, ``epochs``, ``steps``, passed to every callback's ``set_params``.

    The same ``logs`` dict is passed to each callback in turn, so keys a callback adds
    (``learning_rate``) are seen by the ones after it (the History is appended last).
    """

    def __init__(self, callbacks: Iterable[Callback] | None = None, add_history: bool = False,
                 add_progbar: bool = False, model: Any = None, **params: Any) -> None:
        super().__init__()
        self.callbacks: list[Callback] = _flatten(callbacks) if callbacks else []
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise KdslError("Callbacks must be instances of kdsl.callbacks.Callback. "
                                f"Received: {cb!r:.60}")
        self._history = next((c for c in self.callbacks if isinstance(c, History)), None)
        self._progbar = next((c for c in self.callbacks if isinstance(c, ProgbarLogger)), None)
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        if self._progbar is None and add_progbar:
            self._progbar = ProgbarLogger()
            self.callbacks.append(self._progbar)
        self.set_model(model)
        self.set_params(params)

    @property
    def history(self) -> "History | None":
        return self._history

    def append(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params
        if params:
            for cb in self.callbacks:
                cb.set_params(params)

    def set_model(self, model: Any) -> None:
        if model is None:
            return
        super().set_model(model)
        if self._history is not None:
            model.history = self._history
        for cb in self.callbacks:
            cb.set_model(model)

    def wants_batch_logs(self) -> bool:
        """Whether a callback looks at the logs of training batches (overrides
        ``on_train_batch_end`` or ``on_batch_end``); if none does, the fit loop skips computing them."""
        return any(type(cb).on_train_batch_end is not Callback.on_train_batch_end
                   or type(cb).on_batch_end is not Callback.on_batch_end for cb in self.callbacks)

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)


def _dispatcher(hook: str, with_index: bool):
    if with_index:
        def method(self, index, logs=None):
            for cb in self.callbacks:
                getattr(cb, hook)(index, logs)
    else:
        def method(self, logs=None):
            for cb in self.callbacks:
                getattr(cb, hook)(logs)
    method.__name__ = hook
    method.__doc__ = f"Call ``{hook}`` on every callback."
    return method


for _hook in _HOOKS:
    setattr(CallbackList, _hook, _dispatcher(_hook, "batch" in _hook or "epoch" in _hook))
del _hook


def _flatten(items) -> list:
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


class History(Callback):
    """Records every epoch's logs; ``fit`` returns it.

    ``history.history`` maps each log key to its per-epoch list of values and
    ``history.epoch`` lists the epoch indices seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)
        if self.model is not None:
            self.model.history = self


class ProgbarLogger(Callback):
    """Prints the Keras progress bar (``Epoch 1/5`` then a bar per epoch) from ``params``.

    ``params["verbose"]``: 0 silent, 1 a live bar, 2 one line per epoch ("auto" means 1).
    The loop's batch logs are displayed as given (Keras loops report running means).
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.progbar = None
        self.target = None
        self.verbose = 1
        self.epochs = 1
        self._called_in_fit = False

    def set_params(self, params):
        super().set_params(params)
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else verbose
        self.epochs = params.get("epochs", 1)
        self.target = params.get("steps")

    def on_train_begin(self, logs=None):
        self._called_in_fit = True          # validation inside fit is silent

    def on_test_begin(self, logs=None):
        if not self._called_in_fit:
            self._reset()

    def on_predict_begin(self, logs=None):
        self._reset()

    def on_epoch_begin(self, epoch, logs=None):
        self._reset()
        if self.verbose and self.epochs > 1:
            _print(f"Epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch, logs=None):
        self._update(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        if not self._called_in_fit:
            self._update(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._update(batch, None)

    def on_epoch_end(self, epoch, logs=None):
        self._finalize(logs)

    def on_test_end(self, logs=None):
        if not self._called_in_fit:
            self._finalize(logs)

    def on_predict_end(self, logs=None):
        self._finalize(logs)

    def _reset(self):
        from .runtime.progress import Progbar

        self.seen = 0
        # stateless_metrics=(): every log is shown as given, none is averaged again.
        self.progbar = Progbar(target=self.target, verbose=self.verbose, unit_name="step",
                               stateless_metrics=())

    def _update(self, batch, logs):
        if self.progbar is None:
            self._reset()
        self.seen = batch + 1
        if self.verbose == 1:
            self.progbar.update(self.seen, list((logs or {}).items()), finalize=False)

    def _finalize(self, logs):
        if self.progbar is None:
            self._reset()
        if self.target is None:
            self.target = self.seen
            self.progbar.target = self.target
        self.progbar.update(self.progbar.target, list((logs or {}).items()), finalize=True)


class EarlyStopping(Callback):
    """Stop training when a monitored metric has stopped improving.

    At the end of every epoch the monitored value is compared with the best so far;
    after ``patience`` epochs without an improvement larger than ``min_delta``,
    ``model.stop_training`` is set.

    Args:
        monitor: quantity to monitor. Defaults to ``"val_loss"``.
        min_delta: minimum change that counts as an improvement. Defaults to ``0``.
        patience: epochs without improvement after which training stops. Defaults to ``0``.
        verbose: 1 prints a message when the callback acts. Defaults to ``0``.
        mode: ``"auto"``, ``"min"`` or ``"max"``; ``"auto"`` maximises accuracy/AUC-like names
            and minimises the rest.
        baseline: the wait counter only restarts on epochs that also beat this value.
        restore_best_weights: at the end of training, restore the weights of the best epoch
            (of the monitored epochs, even if none beat ``baseline``).
        start_from_epoch: epochs to train before monitoring starts (warm-up).

    Example:

    >>> callback = kdsl.callbacks.EarlyStopping(monitor="loss", patience=3)
    >>> # stops when the loss has not improved for three consecutive epochs
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.mode = resolve_mode(monitor, mode, "EarlyStopping")
        # Signed like Keras: subtracted from the current value before comparing.
        self.min_delta = abs(min_delta) * (-1 if self.mode == "min" else 1)
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights = None
        self.best = math.inf if self.mode == "min" else -math.inf

    def monitor_op(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _is_improvement(self, value: float, reference: float) -> bool:
        return self.monitor_op(value - self.min_delta, reference)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights = None
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # The first monitored epoch's weights are the best until something beats them.
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # Only restart the wait if we beat both the baseline and the previous best.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            _print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_monitor_value(self, logs) -> float | None:
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                          f"Available metrics are: {','.join(list(logs.keys()))}", stacklevel=2)
            return None
        return _scalar(value)


class ModelCheckpoint(Callback):
    """Save the model (or its weights) at some frequency during training.

    ``filepath`` may contain ``str.format`` fields filled from ``epoch`` (1-based), ``batch``
    (1-based, with an integer ``save_freq``) and the epoch's logs, e.g.
    ``"ckpt/model-{epoch:02d}-{val_loss:.2f}.kdckpt"``.

    Args:
        filepath: where to save (a pattern, see above).
        monitor: metric used by ``save_best_only``. Defaults to ``"val_loss"``.
        verbose: 1 prints a message on every save. Defaults to ``0``.
        save_best_only: save only when ``monitor`` improves on the best value so far. If the
            metric is missing, warns and saves anyway (Keras 3).
        save_weights_only: call ``model.save_weights(path)`` instead of ``model.save(path)``.
        mode: ``"auto"``, ``"min"`` or ``"max"`` for ``monitor``.
        save_freq: ``"epoch"``, or an int: save every that many batches.
        initial_value_threshold: the initial "best" value for ``save_best_only``.
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str | int = "epoch", initial_value_threshold: float | None = None) -> None:
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.mode = resolve_mode(monitor, mode, "ModelCheckpoint")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)
                                     or save_freq < 1):
            raise KdslError(f"Unrecognized save_freq: {save_freq!r}. Expected save_freq are 'epoch' or "
                            "positive integer values")
        self.save_freq = save_freq
        self.initial_value_threshold = initial_value_threshold
        self.best = initial_value_threshold if initial_value_threshold is not None else (
            math.inf if self.mode == "min" else -math.inf)
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = 0
        self._current_epoch = 0

    def monitor_op(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save_model(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save_model(epoch, None, logs)

    def _should_save_on_batch(self, batch: int) -> bool:
        if self.save_freq == "epoch":
            return False
        if batch <= self._last_batch_seen:      # a new epoch
            add = batch + 1
        else:
            add = batch - self._last_batch_seen
        self._batches_seen_since_last_saving += add
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _should_save(self, epoch: int, logs: dict, filepath: str) -> bool:
        if not self.save_best_only:
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: saving model to {filepath}")
            return True
        raw = logs.get(self.monitor)
        if raw is None:
            warnings.warn(f"Can save best model only with {self.monitor} available.", stacklevel=3)
            return True
        current = _scalar(raw)
        if current is None:
            warnings.warn(f"Can save best model only when `monitor` is a scalar value. Received: {raw}. "
                          "Falling back to `save_best_only=False`.", stacklevel=3)
            return True
        if self.monitor_op(current, self.best):
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {current:.5f}, "
                       f"saving model to {filepath}")
            self.best = current
            return True
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
        return False

    def _save_model(self, epoch: int, batch: int | None, logs) -> None:
        logs = logs or {}
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save(epoch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise KdslError("Please specify a non-directory filepath for ModelCheckpoint. "
                            f"Filepath used is an existing directory: {filepath}")
        dirname = os.path.dirname(filepath)
        if dirname:
            os.makedirs(dirname, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(filepath)
        else:
            self.model.save(filepath)

    def _get_file_path(self, epoch: int, batch: int | None, logs: dict) -> str:
        fields = dict(logs)
        fields["epoch"] = epoch + 1
        if batch is not None and "batch" not in logs:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except (KeyError, IndexError, ValueError) as e:
            raise KdslError(f'Failed to format this callback filepath: "{self.filepath}". Reason: {e!r}',
                            hint=f"available fields: {sorted(fields)}") from None


class CSVLogger(Callback):
    """Stream epoch results to a CSV file: a header ``epoch,<sorted log keys>`` then one row per epoch.

    Args:
        filename: the CSV file.
        separator: the field separator. Defaults to ``","``.
        append: append to an existing file (its header is kept) instead of overwriting it.
    """

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.sep = separator
        self.filename = os.fspath(filename)
        self.append = append
        self.writer = None
        self.keys: list[str] | None = None
        self.append_header = True
        self.csv_file = None

    def on_train_begin(self, logs=None):
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename, encoding="utf-8", newline="") as f:
                    self.append_header = not bool(len(f.readline()))
            mode = "a"
        else:
            mode = "w"
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        directory = os.path.dirname(self.filename)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self.csv_file = open(self.filename, mode, encoding="utf-8", newline="")
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.csv_file is None or self.csv_file.closed:
            self.on_train_begin()

        if self.keys is None:
            self.keys = sorted(logs.keys())
            expected = getattr(self.model, "metrics_names", None) or []
            self.keys += [m for m in expected if m.startswith("val_") and m not in self.keys]

        if self.writer is None:
            class Dialect(csv.excel):
                delimiter = self.sep

            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys, dialect=Dialect)
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((k, _csv_value(logs.get(k, "NA"))) for k in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.writer = None


def _csv_value(v):
    if isinstance(v, str) or (isinstance(v, np.ndarray) and v.ndim == 0):
        return v
    if isinstance(v, Iterable):
        return f'"[{", ".join(map(str, v))}]"'
    return v


def _get_lr(model) -> float:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "learning_rate"):
        raise KdslError('Optimizer must have a "learning_rate" attribute.')
    return float(np.asarray(optimizer.learning_rate))


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch from ``schedule(epoch, lr) -> new_lr``.

    ``schedule`` may also take only ``epoch`` (Keras 2 style). The learning rate is added to
    the epoch's logs as ``learning_rate``.

    Args:
        schedule: a function of the 0-based epoch index and the current learning rate.
        verbose: 1 prints the new learning rate every epoch.

    Example:

    >>> def scheduler(epoch, lr):
    ...     return lr if epoch < 10 else lr * math.exp(-0.1)
    >>> callback = kdsl.callbacks.LearningRateScheduler(scheduler)
    """

    def __init__(self, schedule: Callable, verbose: int = 0) -> None:
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = _get_lr(self.model)
        try:
            lr = self.schedule(epoch, lr)
        except TypeError:       # old API: schedule(epoch)
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, np.float32, np.float64)):
            raise KdslError(f"The output of the `schedule` function should be a float. Got: {lr!r}")
        self.model.optimizer.learning_rate = float(lr)
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _get_lr(self.model)


class ReduceLROnPlateau(Callback):
    """Reduce the learning rate when a metric has stopped improving.

    After ``patience`` epochs without an improvement larger than ``min_delta``, the
    learning rate becomes ``max(lr * factor, min_lr)``; then ``cooldown`` epochs pass before
    waiting starts again. The learning rate is added to the epoch's logs as ``learning_rate``.

    Args:
        monitor: quantity to monitor. Defaults to ``"val_loss"``.
        factor: ``new_lr = lr * factor`` (must be < 1). Defaults to ``0.1``.
        patience: epochs without improvement before reducing. Defaults to ``10``.
        verbose: 1 prints a message on every reduction.
        mode: ``"auto"``, ``"min"`` or ``"max"``.
        min_delta: threshold for measuring an improvement. Defaults to ``1e-4``.
        cooldown: epochs to wait after a reduction before resuming normal operation.
        min_lr: lower bound on the learning rate.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__()
        if factor >= 1.0:
            raise KdslError(f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={factor}")
        self.monitor = monitor
        self.factor = factor
        self.patience = patience
        self.verbose = verbose
        self.min_delta = min_delta
        self.cooldown = cooldown
        self.min_lr = min_lr
        self.mode = resolve_mode(monitor, mode, "Learning rate reduction")
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.wait = 0

    def monitor_op(self, a: float, b: float) -> bool:
        return a < b - self.min_delta if self.mode == "min" else a > b + self.min_delta

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = _get_lr(self.model)
        raw = logs.get(self.monitor)
        if raw is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(list(logs.keys()))}.", stacklevel=2)
            return
        current = _scalar(raw)
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self.monitor_op(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = _get_lr(self.model)
                if old_lr > np.float32(self.min_lr):
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    self.model.optimizer.learning_rate = new_lr
                    if self.verbose > 0:
                        _print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class TerminateOnNaN(Callback):
    """Stop training (``model.stop_training = True``) when a batch's loss is NaN or infinite."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = _scalar(loss)
        if value is not None and (math.isnan(value) or math.isinf(value)):
            _print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True
