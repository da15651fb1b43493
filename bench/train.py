"""Training-throughput benchmark: kdsl ``fit()`` on onnxruntime against a plain PyTorch training
loop and Keras 3 on JAX, for the MNIST MLP and CNN of ``examples/`` (batch 128) and the LSTM text
model ``examples/text_lstm.kd`` (200 token ids, vocabulary 20,000, embedding 128, LSTM 64, batch 64).

Run: ``python bench/train.py`` (``--models mlp,cnn,lstm``, ``--epochs``, ``--samples``,
``--provider cpu|cuda``, ``--profile`` for onnxruntime's per-op profile of the kdsl training
step, ``--same-process`` to run the baselines in this process instead of one child each). Prints samples/s of each framework, kdsl's ratio against the fastest baseline, and the
share of kdsl's step time spent outside onnxruntime's ``run`` (binding, copying, Python). See
bench/README.md.

Every framework gets the same data, the same architecture and initial weights (copied from the
kdsl model), Adam(lr=1e-3, epsilon=1e-7), the loss on probabilities as Keras computes it, the
last partial batch trained, a shuffled order each epoch, one untimed warm-up epoch and
``--epochs`` timed ones. Data: the bundled MNIST images for the MLP and CNN; for the LSTM the
bundled review sentences (kdsl.datasets.sentiment) as ids of a 20,000-token TextVectorization
padded to 200 steps (no masking in any framework: every sequence runs all 200 steps).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "examples")
MODELS = {"mlp": os.path.join(EXAMPLES, "mnist_mlp.kd"), "cnn": os.path.join(EXAMPLES, "mnist_cnn.kd"),
          "lstm": os.path.join(EXAMPLES, "text_lstm.kd")}
#: per model: (batch size, samples per epoch) unless --batch-size / --samples say otherwise
DEFAULTS = {"mlp": (128, 10000), "cnn": (128, 10000), "lstm": (64, 2560)}
EPS = 1e-7          # keras.config.epsilon(), used by the loss clamp and by Adam
TORCH_VERSION = "2.13.0"


# -- machine and data -------------------------------------------------------------------------------
def physical_cores() -> int:
    """Physical cores (what onnxruntime's default intra-op pool uses), from /proc/cpuinfo."""
    try:
        cores, phys, core = set(), None, None
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k == "physical id":
                    phys = v
                elif k == "core id":
                    core = v
                elif not k and core is not None:
                    cores.add((phys, core))
                    phys = core = None
        if core is not None:
            cores.add((phys, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def load_text_data(samples: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``samples`` review sentences as int64 ids [N, 200] (vocabulary 20,000) and float32 labels."""
    from kdsl.datasets import sentiment
    from kdsl.layers.text import TextVectorization

    (xa, ya), (xb, yb) = sentiment.load_data()
    texts, labels = np.concatenate([xa, xb]), np.concatenate([ya, yb])
    vec = TextVectorization(max_tokens=20000, output_sequence_length=200)
    vec.adapt(texts)
    ids = vec.host_apply(texts)
    src = (f"the {len(texts):,} bundled review sentences (kdsl.datasets.sentiment) as token ids "
           f"(vocabulary {vec.vocabulary_size():,}, padded to 200)")
    if samples > len(ids):
        reps = -(-samples // len(ids))
        ids, labels = np.concatenate([ids] * reps), np.concatenate([labels] * reps)
        src += f", tiled to {samples}"
    return (np.ascontiguousarray(ids[:samples].astype(np.int64)),
            np.ascontiguousarray(labels[:samples].astype(np.float32)), src)


def load_data(samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``samples`` MNIST images as float32 [N, 28, 28, 1] in 0..255 and int64 labels, and a note.

    Real images: all 10,000 bundled ones (kdsl.datasets.mnist: its train and test splits
    together), else /work/shared/data/mnist's t10k files; tiled when more are asked for.
    Random data of MNIST's shape when neither is there.
    """
    x = y = None
    src = ""
    try:
        from kdsl.datasets import mnist

        (xa, ya), (xb, yb) = mnist.load_data()
        x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])
        src = "real MNIST (kdsl.datasets.mnist, the 10,000 bundled images)"
    except Exception:   # noqa: BLE001 - fall through to the next source
        pass
    if x is None:
        try:
            from kdsl.runtime.data import read_idx

            d = "/work/shared/data/mnist"
            x = read_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"))
            y = read_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))
            src = f"real MNIST ({d}, t10k files)"
        except Exception:   # noqa: BLE001
            pass
    if x is None:
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (max(samples, 1), 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, max(samples, 1), dtype=np.uint8)
        src = "random data of MNIST's shape (no MNIST files found)"
    if samples > len(x):
        reps = -(-samples // len(x))
        x, y = np.concatenate([x] * reps), np.concatenate([y] * reps)
        src += f", tiled to {samples}"
    x = np.ascontiguousarray(x[:samples].reshape(-1, 28, 28, 1).astype(np.float32))
    y = np.ascontiguousarray(y[:samples].astype(np.int64))
    return x, y, src


class Runner:
    """One framework on one model: ``setup`` (build, compile, one warm-up epoch) then timed
    ``epoch`` calls, interleaved across frameworks so that a busy machine slows all alike."""

    name = "?"

    def __init__(self):
        self.note = ""              # why it was skipped, or versions/device
        self.available = False
        self.walls: list[float] = []
        self.in_run: list[float] = []
        self.loss: float | None = None     # mean training loss of the last timed epoch
        self.extra: dict = {}

    def samples_per_s(self, n: int) -> float | None:
        return n / statistics.median(self.walls) if self.walls else None


class _EpochTimer:
    """Per-epoch wall time and time inside onnxruntime's run, as a kdsl/Keras callback."""

    def __init__(self, trainer=None):
        super().__init__()             # the framework's Callback (mixed in after this class)
        self.trainer = trainer
        self.walls: list[float] = []
        self.in_run: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()
        self._r = self.trainer.time_in_run if self.trainer is not None else 0.0

    def on_epoch_end(self, epoch, logs=None):
        self.walls.append(time.perf_counter() - self._t)
        if self.trainer is not None:
            self.in_run.append(self.trainer.time_in_run - self._r)


# -- kdsl ---------------------------------------------------------------------------------------------
def load_kdsl(model_key: str, provider: str, cuda_graph: bool | None = None):
    import kdsl

    model = kdsl.load(MODELS[model_key])
    cfg = model.train_config
    model.compile(optimizer=cfg.optimizer, loss=cfg.loss, loss_weights=cfg.loss_weights,
                  metrics=cfg.metrics or None, providers=provider, cuda_graph=cuda_graph)
    return model


class KdslRunner(Runner):
    name = "kdsl"

    def __init__(self, model, x, y, args):
        super().__init__()
        from kdsl.callbacks import Callback

        class Timer(_EpochTimer, Callback):
            pass

        self.model, self.x, self.y, self.args = model, x, y, args
        self.fit = dict(batch_size=args.batch_size, verbose=0, validation_split=0.0, shuffle=True)
        self.timer_cls = Timer
        self.epochs_done = 0

    def setup(self):
        from kdsl.errors import KdslError

        t = time.perf_counter()
        try:
            self.model.fit(self.x, self.y, epochs=1, **self.fit)     # builds graphs and sessions; warm-up
        except KdslError as err:
            self.note = f"FAILED: {str(err).strip()}"
            return
        self.epochs_done = 1
        self.extra["warmup_s"] = time.perf_counter() - t
        trainer = self.model._trainer
        self.extra["intra_op"] = trainer.train_sess.get_session_options().intra_op_num_threads
        self.extra["nodes"] = len(trainer.program.train.graph.node)
        self.note = f"onnxruntime {trainer.providers[0]}"
        if trainer.device == "cuda":
            self.note += (", step captured as a CUDA graph" if trainer.captured
                          else f"; no CUDA graph: {trainer.static_note or '--cuda-graph off'}")
        self.available = True

    def epoch(self):
        timer = self.timer_cls(self.model._trainer)
        hist = self.model.fit(self.x, self.y, initial_epoch=self.epochs_done, epochs=self.epochs_done + 1,
                              callbacks=[timer], **self.fit)
        self.epochs_done += 1
        self.walls += timer.walls
        self.in_run += timer.in_run
        if hist is not None and hist.history.get("loss"):
            self.loss = float(hist.history["loss"][-1])

    def overhead_share(self) -> float | None:
        if not self.walls:
            return None
        return statistics.median(max(0.0, 1.0 - i / w) for i, w in zip(self.in_run, self.walls))


# -- PyTorch -------------------------------------------------------------------------------------------
def torch_module(model_key: str, init: list[np.ndarray], torch):
    """The same architecture in PyTorch, weights copied from kdsl's initial (Keras-layout) weights."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            if model_key == "mlp":
                self.fc1, self.drop, self.fc2 = nn.Linear(784, 128), nn.Dropout(0.2), nn.Linear(128, 10)
            elif model_key == "lstm":
                self.emb, self.lstm = nn.Embedding(20000, 128), nn.LSTM(128, 64, batch_first=True)
                self.fc = nn.Linear(64, 1)
            else:
                self.c1, self.c2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
                self.drop, self.fc = nn.Dropout(0.5), nn.Linear(1600, 10)

        def forward(self, x):                  # x: [B, 28, 28, 1] in 0..255, as the .kd input
            if model_key == "lstm":            # x: [B, 200] token ids
                _, (h, _) = self.lstm(self.emb(x))
                return self.fc(h[-1])          # logit; sigmoid in the loss below
            x = x * (1.0 / 255)                # Rescaling(1 / 255)
            if model_key == "mlp":
                x = torch.relu(self.fc1(x.flatten(1)))
                return self.fc2(self.drop(x))
            x = x.permute(0, 3, 1, 2)          # channels-last input -> NCHW (kdsl does the same)
            x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
            return self.fc(self.drop(x.flatten(1)))   # logits; softmax in the loss below

    net = Net()
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    with torch.no_grad():
        if model_key == "mlp":
            k1, b1, k2, b2 = init
            net.fc1.weight.copy_(t(k1.T)); net.fc1.bias.copy_(t(b1))   # noqa: E702
            net.fc2.weight.copy_(t(k2.T)); net.fc2.bias.copy_(t(b2))   # noqa: E702
        elif model_key == "lstm":
            # Keras's LSTM kernels [in, 4u] have the gates in torch's order (i, f, c~, o)
            emb, kern, rec, bias, k, b = init
            net.emb.weight.copy_(t(emb))
            net.lstm.weight_ih_l0.copy_(t(kern.T)); net.lstm.weight_hh_l0.copy_(t(rec.T))   # noqa: E702
            net.lstm.bias_ih_l0.copy_(t(bias)); net.lstm.bias_hh_l0.zero_()   # noqa: E702
            net.fc.weight.copy_(t(k.T)); net.fc.bias.copy_(t(b))   # noqa: E702
        else:
            c1, cb1, c2, cb2, k, b = init
            net.c1.weight.copy_(t(c1.transpose(3, 2, 0, 1))); net.c1.bias.copy_(t(cb1))   # noqa: E702
            net.c2.weight.copy_(t(c2.transpose(3, 2, 0, 1))); net.c2.bias.copy_(t(cb2))   # noqa: E702
            # Keras flattens (h, w, c); this net flattens (c, h, w): permute the kernel's rows
            k = k.reshape(5, 5, 64, 10).transpose(2, 0, 1, 3).reshape(1600, 10)
            net.fc.weight.copy_(t(k.T)); net.fc.bias.copy_(t(b))   # noqa: E702
    return net


class BaselineRunner(Runner):
    """A framework rebuilding model ``model_key`` from kdsl's initial weights ``init``."""

    def __init__(self, model_key: str, init, x, y, args):
        super().__init__()
        self.key, self.init, self.x, self.y, self.args = model_key, init, x, y, args


class TorchRunner(BaselineRunner):
    name = "torch"

    def setup(self):
        try:
            import torch
        except ImportError:
            self.note = f"skipped: PyTorch is not installed (pip install torch=={TORCH_VERSION}, the CPU wheel)"
            return
        if torch.__version__.split("+")[0] != TORCH_VERSION:
            self.note = f"torch {torch.__version__} (the baseline is specified as {TORCH_VERSION})"
        else:
            self.note = f"torch {torch.__version__}"
        if self.args.provider == "cuda" and not torch.cuda.is_available():
            self.note = "skipped: --provider cuda but torch.cuda.is_available() is False (a CPU-only torch build?)"
            return
        self.torch = torch
        self.dev = torch.device("cuda" if self.args.provider == "cuda" else "cpu")
        self.note += f" on {self.dev}"
        torch.manual_seed(self.args.seed)
        self.net = torch_module(self.key, self.init, torch).to(self.dev)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=EPS)
        self.xt, self.yt = torch.from_numpy(self.x), torch.from_numpy(self.y)
        self.extra["threads"] = torch.get_num_threads()
        self._epoch()                                    # warm-up
        self.available = True

    def _sync(self):
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize()

    def _epoch(self) -> float:
        torch, net, opt, dev = self.torch, self.net, self.opt, self.dev
        n, bs = len(self.x), self.args.batch_size
        nll = self.args.torch_loss == "nll"
        net.train()
        perm = torch.randperm(n)
        total = torch.zeros((), device=dev)
        for lo in range(0, n, bs):
            idx = perm[lo:lo + bs]
            xb = self.xt[idx].to(dev, non_blocking=True)
            yb = self.yt[idx].to(dev, non_blocking=True)
            logits = net(xb)
            if self.key == "lstm":   # Keras's binary cross-entropy on the clamped probabilities
                p = torch.sigmoid(logits[:, 0]).clamp(EPS, 1.0 - EPS)
                loss = -(yb * torch.log(p) + (1 - yb) * torch.log(1 - p)).mean()
            elif nll:       # NLL on log-softmax (the numerically exact form)
                loss = torch.nn.functional.cross_entropy(logits, yb)
            else:           # Keras's form: log of the clamped softmax probabilities
                p = torch.softmax(logits, dim=-1)
                p = p / p.sum(dim=-1, keepdim=True)
                loss = torch.nn.functional.nll_loss(torch.log(p.clamp(EPS, 1.0 - EPS)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        return float(total) / n

    def epoch(self):
        self._sync()
        t = time.perf_counter()
        self.loss = self._epoch()
        self._sync()
        self.walls.append(time.perf_counter() - t)


# -- Keras 3 on JAX ---------------------------------------------------------------------------------
class KerasRunner(BaselineRunner):
    name = "keras-jax"

    def setup(self):
        os.environ.setdefault("KERAS_BACKEND", "jax")
        try:
            import jax
            import keras
        except ImportError as err:
            self.note = f"skipped: Keras 3 on JAX is not installed ({err.name} missing; pip install jax keras)"
            return
        except Exception as err:   # noqa: BLE001 - a broken install is a skip with its reason, not a crash
            self.note = f"skipped: importing Keras on JAX failed: {type(err).__name__}: {err}"
            return
        if keras.backend.backend() != "jax":
            self.note = f"skipped: Keras runs on {keras.backend.backend()} (KERAS_BACKEND is set); this baseline is JAX"
            return
        platform = jax.default_backend()
        if self.args.provider == "cuda" and platform != "gpu":
            self.note = f"skipped: --provider cuda but JAX runs on {platform} (install jax[cuda12])"
            return
        L = keras.layers
        keras.utils.set_random_seed(self.args.seed)
        if self.key == "lstm":
            layers = [keras.Input((200,), dtype="int64"), L.Embedding(20000, 128), L.LSTM(64),
                      L.Dense(1, activation="sigmoid")]
        else:
            body = [L.Flatten(), L.Dense(128, activation="relu"), L.Dropout(0.2), L.Dense(10, activation="softmax")] \
                if self.key == "mlp" else \
                [L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2), L.Conv2D(64, 3, activation="relu"),
                 L.MaxPooling2D(2), L.Flatten(), L.Dropout(0.5), L.Dense(10, activation="softmax")]
            layers = [keras.Input((28, 28, 1)), L.Rescaling(1 / 255)] + body
        self.net = keras.Sequential(layers)
        self.net.set_weights(self.init)
        self.net.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=EPS),
                         loss="binary_crossentropy" if self.key == "lstm" else "sparse_categorical_crossentropy",
                         metrics=["accuracy"])
        self.fit = dict(batch_size=self.args.batch_size, verbose=0, shuffle=True)

        class Timer(_EpochTimer, keras.callbacks.Callback):
            pass

        self.timer_cls = Timer
        self.net.fit(self.x, self.y, epochs=1, **self.fit)    # traces and compiles the step; warm-up
        self.epochs_done = 1
        self.note = f"keras {keras.__version__}, jax {jax.__version__} on {platform}"
        self.available = True

    def epoch(self):
        timer = self.timer_cls()
        hist = self.net.fit(self.x, self.y, initial_epoch=self.epochs_done, epochs=self.epochs_done + 1,
                            callbacks=[timer], **self.fit)
        self.epochs_done += 1
        self.walls += timer.walls
        self.loss = float(hist.history["loss"][-1])


# -- baselines in their own processes -----------------------------------------------------------------
_REPLY = "@@bench-worker@@ "     # prefix of the worker's protocol lines on its stdout


class IsolatedRunner(Runner):
    """A baseline run by ``bench/train.py --worker`` in a child process, epoch by epoch on request:
    JAX's and PyTorch's thread pools then cannot slow down the other frameworks' epochs (with JAX
    loaded in the same process, kdsl's and PyTorch's MLP epochs ran up to 2x slower). Data and
    initial weights go through a temporary ``.npz`` (loaded with ``allow_pickle=False``), commands
    and replies are lines of JSON."""

    def __init__(self, cls, model_key: str, init, x, y, args):
        super().__init__()
        self.name, self.cls = cls.name, cls.__name__
        self.key, self.init, self.x, self.y, self.args = model_key, init, x, y, args
        self.proc = None

    def _ask(self, command: str) -> dict:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except OSError:
            raise RuntimeError(f"the {self.name} worker stopped (exit status {self.proc.wait()})") from None
        for line in self.proc.stdout:
            if line.startswith(_REPLY):
                return json.loads(line[len(_REPLY):])
        raise RuntimeError(f"the {self.name} worker stopped (exit status {self.proc.wait()})")

    def setup(self):
        import subprocess

        self._dir = tempfile.TemporaryDirectory(prefix="kdsl-bench-")
        data = os.path.join(self._dir.name, "data.npz")
        np.savez(data, x=self.x, y=self.y, **{f"w{i}": w for i, w in enumerate(self.init)})
        cfg = json.dumps({k: v for k, v in vars(self.args).items() if isinstance(v, (int, float, str, bool, type(None)))})
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", self.cls, self.key, data, cfg],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            r = self._ask("setup")
        except RuntimeError as err:
            self.note = f"skipped: {err}"
            return
        self.available, self.note, self.extra = r["available"], r["note"], r["extra"]
        self.note += (" (in its own process)" if self.available else "")

    def epoch(self):
        try:
            r = self._ask("epoch")
        except RuntimeError as err:     # the worker died: report it, keep the other frameworks' figures
            self.available, self.walls = False, []
            self.note = f"skipped: {err}"
            return
        self.walls.append(r["wall"])
        self.loss = r["loss"]

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait()
            self._dir.cleanup()
            self.proc = None


def worker(cls_name: str, key: str, data_path: str, cfg: str) -> int:
    """The child side of :class:`IsolatedRunner`: ``setup`` / ``epoch`` on stdin, replies on stdout."""
    with np.load(data_path, allow_pickle=False) as d:
        x, y = d["x"], d["y"]
        init = [d[f"w{i}"] for i in range(len(d.files) - 2)]
    runner = {"TorchRunner": TorchRunner, "KerasRunner": KerasRunner}[cls_name](
        key, init, x, y, argparse.Namespace(**json.loads(cfg)))

    def reply(**kw):
        sys.stdout.write(_REPLY + json.dumps(kw) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        if line.strip() == "setup":
            runner.setup()
            reply(available=runner.available, note=runner.note,
                  extra={k: v for k, v in runner.extra.items() if isinstance(v, (int, float, str))})
        elif line.strip() == "epoch":
            runner.epoch()
            reply(wall=runner.walls[-1], loss=runner.loss)
    return 0


# -- onnxruntime profile of the kdsl step -----------------------------------------------------------
def _phase(node_name: str) -> str:
    for prefix, phase in (("grad/", "backward"), ("optimizer/", "optimizer"), ("loss/", "loss"),
                          ("metric/", "metrics")):
        if node_name.startswith(prefix):
            return phase
    return "forward"


def profile_kdsl(model, x, y, args, top: int) -> dict:
    """Run one epoch of ``fit`` on a profiling copy of the training session; per-op totals per step."""
    import onnxruntime as ort

    trainer = model._trainer
    d = tempfile.mkdtemp(prefix="kdsl_prof_")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(d, "train")
    sess = ort.InferenceSession(trainer.program.train.SerializeToString(), opts, providers=trainer.providers)
    saved = {k: getattr(trainer, k) for k in ("train_sess", "_bindings") if hasattr(trainer, k)}
    trainer.train_sess = sess
    if "_bindings" in saved:         # the Trainer's IOBindings belong to its own session
        trainer._bindings = None
    try:
        model.fit(x, y, epochs=1, batch_size=args.batch_size, verbose=0, validation_split=0.0)
    finally:
        for k, v in saved.items():
            setattr(trainer, k, v)
        path = sess.end_profiling()
    with open(path, encoding="utf-8") as f:
        events = json.load(f)
    for p in glob.glob(os.path.join(d, "*")):
        os.remove(p)
    os.rmdir(d)
    runs = [e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    nsteps = max(1, len(runs))
    by_op: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    by_node: dict[str, list] = collections.defaultdict(lambda: [0.0, "", ""])
    by_phase: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        a = e.get("args", {})
        op, node = a.get("op_name", "?"), e["name"][: -len("_kernel_time")]
        by_op[op][0] += e["dur"]
        by_op[op][1] += 1
        nd = by_node[node]
        nd[0] += e["dur"]
        nd[1] = op
        shapes = a.get("output_type_shape") or []
        if not nd[2] and shapes:          # the first step's (full batch) output shape
            nd[2] = "x".join(str(v) for v in next(iter(shapes[0].values()), []))
        by_phase[_phase(node)] += e["dur"]
    kernel_us = sum(v[0] for v in by_op.values())
    run_us = statistics.median(runs) if runs else float("nan")
    return {"steps": nsteps, "run_ms": run_us / 1e3, "kernel_ms": kernel_us / nsteps / 1e3,
            "by_op": sorted(((op, v[0] / nsteps / 1e3, v[1] / nsteps) for op, v in by_op.items()),
                            key=lambda t: -t[1])[:top],
            "by_node": sorted(((nd, v[0] / nsteps / 1e3, v[1], v[2]) for nd, v in by_node.items()),
                              key=lambda t: -t[1])[:top],
            "by_phase": {k: v / nsteps / 1e3 for k, v in sorted(by_phase.items(), key=lambda t: -t[1])}}


def print_profile(key: str, prof: dict) -> None:
    k = prof["kernel_ms"]
    print(f"\nonnxruntime profile of the kdsl training step, {key} ({prof['steps']} steps): "
          f"run {prof['run_ms']:.2f} ms/step (median), kernels {k:.2f} ms/step")
    print("  by phase: " + ", ".join(f"{ph} {ms:.2f} ms ({ms / k:.0%})" for ph, ms in prof["by_phase"].items()))
    print(f"  {'op type':<22} {'ms/step':>8} {'share':>6} {'nodes':>6}")
    for op, ms, calls in prof["by_op"]:
        print(f"  {op:<22} {ms:>8.3f} {ms / k:>6.1%} {calls:>6.0f}")
    print(f"  {'top nodes':<58} {'op':<14} {'ms/step':>8} {'share':>6}  output")
    for node, ms, op, shape in prof["by_node"]:
        print(f"  {node[:58]:<58} {op:<14} {ms:>8.3f} {ms / k:>6.1%}  {shape}")


# -- main -----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(*argv[1:5])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch (default 3)")
    ap.add_argument("--samples", type=int, default=None,
                    help="training samples per epoch (default: 10000 for mlp and cnn, 2560 for lstm)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 128 for mlp and cnn, 64 for lstm")
    ap.add_argument("--provider", choices=["cpu", "cuda"], default="cpu",
                    help="onnxruntime execution provider for kdsl; PyTorch and JAX use the same device")
    ap.add_argument("--cuda-graph", choices=["auto", "off"], default="auto",
                    help="with --provider cuda: capture kdsl's training step as a CUDA graph where "
                         "onnxruntime allows it (auto, the default) or never (off)")
    ap.add_argument("--models", default="mlp,cnn,lstm", help="comma-separated subset of: mlp, cnn, lstm")
    ap.add_argument("--torch-loss", choices=["keras", "nll"], default="keras",
                    help="PyTorch loss form: 'keras' = log of the clamped softmax probabilities, as kdsl "
                         "and Keras compute it (default); 'nll' = NLL on log-softmax (F.cross_entropy)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    ap.add_argument("--no-keras", action="store_true", help="skip the Keras-on-JAX baseline")
    ap.add_argument("--same-process", action="store_true",
                    help="run the baselines in this process (default: each in a child process of its own)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one epoch of the kdsl step with onnxruntime (per-op times)")
    ap.add_argument("--top", type=int, default=12, help="rows in the profile tables (default 12)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    bad = [k for k in keys if k not in MODELS]
    if bad or not keys:
        ap.error(f"--models: unknown {bad}; choose from {sorted(MODELS)}")
    if args.epochs < 1 or (args.samples or 1) < 1 or (args.batch_size or 1) < 1:
        ap.error("--epochs, --samples and --batch-size must be positive")

    import onnxruntime as ort

    if args.provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"--provider cuda: this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider; "
              f"available: {ort.get_available_providers()}. Install onnxruntime-gpu (in place of "
              "onnxruntime) on a machine with an NVIDIA GPU and CUDA, or run with --provider cpu.",
              file=sys.stderr)
        return 2

    import kdsl

    print(f"kdsl {kdsl.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}, "
          f"python {sys.version.split()[0]}; {os.cpu_count()} logical / {physical_cores()} physical cores")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = "  (busy: timings will be low and noisy)" if load > 0.5 * (os.cpu_count() or 1) else ""
    print(f"load average at start: {load:.2f}{busy}")
    print(f"1 warm-up + {args.epochs} timed epochs per framework, provider {args.provider}")

    rows, notes, profiles = [], [], {}
    for key in keys:
        margs = argparse.Namespace(**vars(args))
        margs.batch_size = args.batch_size or DEFAULTS[key][0]
        margs.samples = args.samples or DEFAULTS[key][1]
        x, y, src = load_text_data(margs.samples) if key == "lstm" else load_data(margs.samples, args.seed)
        print(f"{key}: {src}; {len(x)} samples, batch {margs.batch_size}")
        model = load_kdsl(key, args.provider, None if args.cuda_graph == "auto" else False)
        init = [np.array(w) for w in model.get_weights()]
        baselines = [TorchRunner, KerasRunner]
        runners = [KdslRunner(model, x, y, margs)] + [
            cls(key, init, x, y, margs) if args.same_process else IsolatedRunner(cls, key, init, x, y, margs)
            for cls in baselines]
        for r, skip in zip(runners, (False, args.no_torch, args.no_keras)):
            if skip:
                r.note = f"skipped: --no-{r.name.split('-')[0]}"
            else:
                r.setup()
        for _ in range(args.epochs):                   # interleaved: one epoch of each per round
            for r in runners:
                if r.available:
                    r.epoch()
        for r in runners:
            if hasattr(r, "close"):
                r.close()
        if args.profile and runners[0].available:
            profiles[key] = profile_kdsl(model, x, y, margs, args.top)
        rows.append((key, runners, len(x), margs.batch_size))

    def fmt(v, spec):
        width = re.match(r"\d*", spec).group()
        return format("-", f">{width}") if v is None else format(v, spec)

    print()
    head = (f"{'model':<6} | {'kdsl samples/s':>14} | {'torch samples/s':>15} | {'keras-jax samples/s':>19} | "
            f"{'vs torch':>8} | {'ratio vs best':>13} | {'runtime overhead share':>22}")
    print(head)
    print("-" * len(head))
    for key, (k, t, kj), n, _ in rows:
        ks, ts, js = k.samples_per_s(n), t.samples_per_s(n), kj.samples_per_s(n)
        best = max([v for v in (ts, js) if v], default=None)
        ratio = ks / best if best and ks else None
        vs_torch = ks / ts if ts and ks else None
        print(f"{key:<6} | {fmt(ks, '14,.0f')} | {fmt(ts, '15,.0f')} | {fmt(js, '19,.0f')} | "
              f"{fmt(vs_torch, '8.2f')} | {fmt(ratio, '13.2f')} | {fmt(k.overhead_share(), '22.1%')}")
    print()
    for key, (k, t, kj), n, bs in rows:
        if not k.available:
            print(f"{key}: kdsl {k.note}")
            continue
        step_ms = statistics.median(k.walls) / -(-n // bs) * 1e3
        print(f"{key}: kdsl {k.extra['nodes']} nodes in the step graph, {step_ms:.2f} ms/step, "
              f"graph build + warm-up epoch {k.extra['warmup_s']:.1f} s; last-epoch loss "
              + ", ".join(f"{r.name} {fmt(r.loss, '.4f')}" for r in (k, t, kj)))
        print(f"{key}: epoch times (s): " + "; ".join(
            f"{r.name} " + " ".join(f"{v:.2f}" for v in r.walls) for r in (k, t, kj) if r.walls))
    k0 = next((r[1][0] for r in rows if r[1][0].available), rows[0][1][0])
    t0, kj0 = rows[0][1][1], rows[0][1][2]
    intra = k0.extra.get("intra_op")
    notes.append(f"threads: onnxruntime intra_op_num_threads={intra}"
                 + (f" (the default: one per physical core = {physical_cores()})" if intra == 0 else "")
                 + (f"; torch.get_num_threads()={t0.extra['threads']}" if "threads" in t0.extra else "")
                 + ("; JAX/XLA uses its own default pool" if kj0.walls else ""))
    notes.append("torch loss: " + ("log of the softmax probabilities renormalised and clamped to [1e-7, 1-1e-7], "
                                   "then NLL (Keras's form, as kdsl)" if args.torch_loss == "keras" else
                                   "NLL on log-softmax (F.cross_entropy on the logits)")
                 + "; lstm: binary cross-entropy of the clamped sigmoid probabilities (Keras's form)"
                 + "; the torch loop computes no accuracy (kdsl and Keras do)")
    notes.append("epochs of the frameworks are interleaved (one of each per round"
                 + ("" if args.same_process else "; PyTorch and Keras each in a child process of its own")
                 + "); samples/s from the "
                 "median timed epoch; runtime overhead share = 1 - (time inside "
                 "onnxruntime's run) / (epoch wall time), median over the timed epochs")
    for r in (k0, t0, kj0):
        if r.note:
            notes.append(f"{r.name}: {r.note}")
    for line in notes:
        print("note: " + line)
    for key, prof in profiles.items():
        print_profile(key, prof)
    return 0 if all(r[1][0].available for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
