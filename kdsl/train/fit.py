"""Keras's training API on kdsl models: compile, fit, evaluate, save.

``Model`` inherits :class:`TrainingMixin`. A model loaded from a ``.kd`` file with a
``train`` section is compiled from it on first use, and the section's ``batch_size``,
``epochs``, ``validation_split`` ... are ``fit``'s defaults; explicit arguments win.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import KdslError

__all__ = ["TrainingMixin"]

_FIT_DEFAULTS = {"batch_size": 32, "epochs": 1, "validation_split": 0.0, "shuffle": True, "verbose": "auto",
                 "steps_per_epoch": None, "initial_epoch": 0}


def _per_output(value, names: list[str], what: str) -> dict:
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise KdslError(f"`{what}` names outputs {unknown} the model does not have; its outputs: {names}.")
        return dict(value)
    if isinstance(value, (list, tuple)) and what != "metrics":
        if len(value) != len(names):
            raise KdslError(f"`{what}` as a list needs one entry per output {names}. Received: {len(value)}.")
        return dict(zip(names, value))
    return {n: value for n in names}


class TrainingMixin:
    """compile / fit / evaluate / save for :class:`kdsl.Model`."""

    optimizer = None
    stop_training = False
    history = None

    # -- compile ---------------------------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, loss_weights: Any = None,
                metrics: Any = None, providers=None, opset: int = 17, engine: str = "portable",
                cuda_graph: bool | None = None) -> None:
        """Configure training, as ``keras.Model.compile``.

        Args:
            optimizer: name ("adam") or ``kdsl.optimizers`` instance.
            loss: name, ``kdsl.losses`` instance, or a dict/list per output.
            loss_weights: dict/list of per-output weights of the total loss.
            metrics: list of names/instances (every output), or a dict per output.
            providers: onnxruntime execution providers ("cpu", "cuda", or full names).
            opset: ONNX opset of the training graphs.
            engine: ``"portable"`` (kdsl's own ONNX training graphs, default) or
                ``"ort-training"`` (onnxruntime-training's artifacts and training API; it supports
                fewer layers and refuses the others, naming them).
            cuda_graph: with the CUDA provider, capture the training step once as a CUDA graph
                and replay it (onnxruntime's ``enable_cuda_graph``): one launch per step instead
                of one per node. ``None`` (default): where onnxruntime allows it, else plain
                runs; ``True``: required (an error names what stops it); ``False``: never. The
                last, smaller batch of an epoch runs uncaptured.
        """
        from ..lower.training import TrainSetup
        from .losses import get_loss
        from .metrics import get_metric
        from .optimizers import get_optimizer

        if loss is None:
            raise KdslError("compile() needs a `loss`, e.g. loss=\"categorical_crossentropy\".")
        names = self.output_names
        types = {n: v.type for n, v in self.graph.outputs}
        losses = {n: get_loss(l) for n, l in _per_output(loss, names, "loss").items() if l is not None}
        lw = {}
        if loss_weights is not None:
            lw = {n: float(w) for n, w in _per_output(loss_weights, names, "loss_weights").items()}
        mets = {}
        if metrics:
            per = metrics if isinstance(metrics, dict) else {n: metrics for n in names}
            for n, ms in _per_output(per, names, "metrics").items():
                ms = ms if isinstance(ms, (list, tuple)) else [ms]
                mets[n] = [get_metric(m, losses.get(n), types[n]) for m in ms if m is not None]
        self.optimizer = get_optimizer(optimizer)
        self._setup = TrainSetup(losses, lw, mets, self.optimizer)
        if engine not in ("portable", "ort-training"):
            raise KdslError(f'Unknown training engine. Received: engine={engine!r}; expected "portable" or '
                            '"ort-training".')
        if cuda_graph and engine != "portable":
            raise KdslError(f'cuda_graph=True needs engine="portable". Received: engine={engine!r}.')
        if engine == "ort-training":
            from ..runtime.ort_training import check_supported, require_ort_training

            require_ort_training()
            check_supported(self, self._setup)
        self._engine = engine
        self._providers = providers
        self._cuda_graph = cuda_graph
        self._opset = opset
        self._trainer = None
        self._compile_record = {"optimizer": optimizer, "loss": loss, "loss_weights": loss_weights,
                                "metrics": metrics, "engine": engine}

    def _ensure_compiled(self) -> None:
        if getattr(self, "_setup", None) is not None:
            return
        cfg = getattr(self, "train_config", None)
        if cfg is None:
            raise KdslError(f"Model '{self.name}' is not compiled: call model.compile(optimizer=..., loss=...) "
                            "first, or give the .kd file a `train` section.")
        self.compile(optimizer=cfg.optimizer, loss=cfg.loss, loss_weights=cfg.loss_weights,
                     metrics=cfg.metrics or None)

    def _get_trainer(self):
        from ..runtime.trainer import Trainer

        self._ensure_compiled()
        if getattr(self, "_trainer", None) is None:
            if getattr(self, "_engine", "portable") == "ort-training":
                from ..runtime.ort_training import OrtTrainingEngine

                self._trainer = OrtTrainingEngine(self, self._setup, self._providers, self._opset)
            else:
                self._trainer = Trainer(self, self._setup, self._providers, self._opset,
                                        cuda_graph=getattr(self, "_cuda_graph", None))
            pending = getattr(self, "_pending_slots", None)
            if pending:
                self._trainer.reset_state(pending)
                self._pending_slots = None
        return self._trainer

    def _fit_default(self, key: str, value):
        if value is not None:
            return value
        cfg = getattr(self, "train_config", None)
        if cfg is not None and key in cfg.fit:
            return cfg.fit[key]
        return _FIT_DEFAULTS[key]

    # -- fit ---------------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size: int | None = None, epochs: int | None = None, verbose="auto",
            callbacks=None, validation_split: float | None = None, validation_data=None,
            shuffle: bool | None = None, class_weight: dict | None = None, sample_weight=None,
            initial_epoch: int = 0, steps_per_epoch: int | None = None, validation_batch_size: int | None = None,
            validation_freq: int = 1):
        """Train, as ``keras.Model.fit``; returns a ``History``. The last partial batch is trained."""
        from ..callbacks import CallbackList
        from ..runtime.trainer import EpochAggregator, steps_for

        batch_size = int(self._fit_default("batch_size", batch_size))
        trainer = self._get_trainer()
        epochs = int(self._fit_default("epochs", epochs))
        validation_split = float(self._fit_default("validation_split", validation_split))
        shuffle = bool(self._fit_default("shuffle", shuffle))
        steps_per_epoch = self._fit_default("steps_per_epoch", steps_per_epoch)
        if verbose == "auto":
            cfg_v = getattr(getattr(self, "train_config", None), "fit", {}).get("verbose")
            verbose = 1 if cfg_v is None else cfg_v
        if batch_size < 1 or epochs < 0:
            raise KdslError(f"`batch_size` must be positive and `epochs` non-negative. Received: "
                            f"batch_size={batch_size}, epochs={epochs}")
        if class_weight is None and getattr(self, "train_config", None) is not None:
            class_weight = self.train_config.class_weight
        data = trainer.prepare(x, y, sample_weight, class_weight)
        val = None
        if validation_data is not None:
            vx, vy, *rest = tuple(validation_data) + (None,)
            val = trainer.prepare(vx, vy, rest[0] if rest else None)
        elif validation_split:
            if not 0.0 < validation_split < 1.0:
                raise KdslError(f"`validation_split` must be in [0, 1). Received: {validation_split}")
            split = int(data.n * (1.0 - validation_split))
            val = data.take(slice(split, data.n))
            data = data.take(slice(0, split))
        if data.n == 0:
            raise KdslError("No training samples (after validation_split).")
        steps = steps_for(data.n, batch_size)
        if steps_per_epoch:
            steps = min(int(steps_per_epoch), steps)
        cbs = CallbackList(callbacks, add_history=True, add_progbar=bool(verbose), model=self,
                           verbose=verbose, epochs=epochs, steps=steps)
        self.stop_training = False
        opt = self.optimizer
        agg = EpochAggregator(trainer.program)
        seed = self._train_seed()
        cbs.on_train_begin()
        batch_logs = cbs.wants_batch_logs()
        logs: dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            agg.reset()
            cbs.on_epoch_begin(epoch)
            order = None
            if shuffle:
                order = np.random.default_rng([seed, self._epochs_trained()]).permutation(data.n)
            for b in range(steps):
                lo, hi = b * batch_size, min((b + 1) * batch_size, data.n)
                cbs.on_train_batch_begin(b)
                res = trainer.train_batch(data, lo, hi, order, opt.learning_rate, opt.iterations + 1)
                opt.iterations += 1
                agg.add(res, hi - lo)
                logs = agg.logs() if batch_logs else {}
                cbs.on_train_batch_end(b, logs)
                if self.stop_training:
                    break
            self._epochs_done = self._epochs_trained() + 1
            trainer.sync_to_model()
            logs = agg.logs()
            if val is not None and (epoch + 1) % max(1, validation_freq) == 0:
                logs.update(self._evaluate_data(val, validation_batch_size or batch_size, prefix="val_"))
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        if opt.use_ema and epochs > initial_epoch:   # (the ort-training engine refuses use_ema)
            trainer.finalize_ema()          # Keras: optimizer.finalize_variable_values, before on_train_end
        trainer.sync_to_model()
        cbs.on_train_end(logs)
        return self.history

    def _epochs_trained(self) -> int:
        return getattr(self, "_epochs_done", 0)

    def _train_seed(self) -> int:
        from ..utils import get_random_seed

        cfg = getattr(self, "train_config", None)
        if cfg is not None and "seed" in cfg.fit:
            return int(cfg.fit["seed"])
        return int(self._seed) if getattr(self, "_seed", None) is not None else get_random_seed()

    # -- evaluate ----------------------------------------------------------------------------------
    def _evaluate_data(self, data, batch_size: int, prefix: str = "", callbacks=None) -> dict[str, float]:
        from ..runtime.trainer import EpochAggregator

        trainer = self._get_trainer()
        agg = EpochAggregator(trainer.program, prefix)
        for b in range(math.ceil(data.n / batch_size)):
            lo, hi = b * batch_size, min((b + 1) * batch_size, data.n)
            if callbacks is not None:
                callbacks.on_test_batch_begin(b)
            agg.add(trainer.eval_batch(data, lo, hi), hi - lo)
            if callbacks is not None:
                callbacks.on_test_batch_end(b, agg.logs())
        return agg.logs()

    def evaluate(self, x=None, y=None, batch_size: int | None = None, verbose="auto", sample_weight=None,
                 callbacks=None, return_dict: bool = False):
        """Loss and metrics in inference mode, as ``keras.Model.evaluate``."""
        from ..callbacks import CallbackList

        trainer = self._get_trainer()
        batch_size = int(batch_size or self._fit_default("batch_size", None))
        data = trainer.prepare(x, y, sample_weight)
        verbose = 1 if verbose == "auto" else verbose
        steps = math.ceil(data.n / batch_size)
        cbs = CallbackList(callbacks, add_progbar=bool(verbose), model=self, verbose=verbose, epochs=1, steps=steps)
        cbs.on_test_begin()
        logs = self._evaluate_data(data, batch_size, callbacks=cbs)
        cbs.on_test_end(logs)
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    # -- checkpoints ---------------------------------------------------------------------------------
    def save(self, path: str) -> str:
        """Write a full checkpoint (architecture, weights, compile setup, optimizer state) atomically."""
        from ..runtime.checkpoint import save_checkpoint

        return save_checkpoint(self, path)

    def save_weights(self, path: str) -> str:
        """Write the weights (Keras layout, by name) to an ``.npz`` file atomically."""
        from ..runtime.checkpoint import save_weights

        return save_weights(self, path)

    def load_weights(self, path: str) -> None:
        """Load weights written by :meth:`save_weights` (or a checkpoint), matched by name."""
        from ..runtime.checkpoint import load_weights

        load_weights(self, path)
