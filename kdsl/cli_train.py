"""``kdsl train`` / ``evaluate`` / ``predict``: the training runtime from the shell."""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from .errors import KdslError

__all__ = ["add_commands"]


def _add_data_args(p: argparse.ArgumentParser, what: str = "training") -> None:
    p.add_argument("--data", action="append", required=True, metavar="FILE",
                   help=f"{what} data: .npz, IDX (.idx, .gz) or CSV/TSV; repeat for several files "
                        "(e.g. an IDX images file, then its labels file)")
    p.add_argument("--rows", default=None, metavar="START:STOP", help="use only these rows, e.g. 0:8000")
    p.add_argument("--provider", default="cpu", help="onnxruntime execution provider: cpu or cuda")
    p.add_argument("--batch-size", type=int, default=None)


def add_commands(sub, add_model_args) -> None:
    p = sub.add_parser("train", help="train a model of a .kd file (its train section) on data files",
                       description="Train with the file's train section (overridable by flags); write a "
                                   "checkpoint, the trained ONNX model and the history into -o DIR.")
    add_model_args(p)
    _add_data_args(p)
    p.add_argument("--val", action="append", default=None, metavar="FILE", help="validation data file(s)")
    p.add_argument("--val-rows", default=None, metavar="START:STOP", help="rows of the validation files")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None, help="override the optimizer's learning rate")
    p.add_argument("--validation-split", type=float, default=None)
    p.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2])
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue from a checkpoint")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint (or an untrained .kd model) on data files",
                       description="Print the loss and metrics of a model on data files.")
    p.add_argument("model_path", metavar="CKPT_OR_KD", help="a checkpoint written by `kdsl train`, or a .kd file")
    _add_data_args(p, "evaluation")
    p.add_argument("--model", default=None, help="model name (for a .kd file)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict with a checkpoint on data files",
                       description="Run the model on the inputs of data files and write the outputs.")
    p.add_argument("model_path", metavar="CKPT_OR_KD")
    _add_data_args(p, "input")
    p.add_argument("--model", default=None, help="model name (for a .kd file)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output .npz (arrays by output name)")
    p.set_defaults(func=cmd_predict)


def _open_model(path: str, model_name: str | None, providers):
    import kdsl

    if path.endswith(".kd"):
        return kdsl.load(path, model=model_name)
    return kdsl.load_model(path, providers=providers)


def _data(model, paths, rows, need_targets: bool = True):
    from .runtime.data import load_data, parse_rows

    inputs = [(v.name, v.type) for v in model.graph.inputs]
    outputs = [(n, v.type) for n, v in model.graph.outputs] if need_targets else []
    x, y = load_data(paths, inputs, outputs, parse_rows(rows) if rows else None)
    if need_targets:
        missing = [n for n, _ in outputs if n not in y]
        trained = set(model._setup.losses) if getattr(model, "_setup", None) else {n for n, _ in outputs}
        missing = [n for n in missing if n in trained]
        if missing:
            raise KdslError(f"The data files give no targets for outputs {missing}.",
                            hint="add a labels file after the inputs, or name the arrays after the outputs")
    return x, y


def cmd_train(args) -> int:
    from .cli import _params
    from .frontend.api import compile_file

    providers = args.provider
    if args.resume:
        import kdsl
        model = kdsl.load_model(args.resume, providers=providers)
        cf = None
    else:
        cf = compile_file(args.file, args.root or None)
        model = cf.build(args.model, _params(args.param), args.seed)
        if model.train_config is None:
            raise KdslError(f"Model '{model.name}' has no train section; add one (see docs/language.md).")
        cfg = model.train_config
        model.compile(optimizer=cfg.optimizer, loss=cfg.loss, loss_weights=cfg.loss_weights,
                      metrics=cfg.metrics or None, providers=providers)
    if args.learning_rate is not None:
        model.optimizer.learning_rate = args.learning_rate
    x, y = _data(model, args.data, args.rows)
    val = None
    if args.val:
        vx, vy = _data(model, args.val, args.val_rows)
        val = (vx, vy)
    os.makedirs(args.output, exist_ok=True)
    ckpt = os.path.join(args.output, f"{model.name}.ckpt")
    from .callbacks import CSVLogger
    history = model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=args.verbose,
                        validation_split=args.validation_split if val is None else 0.0, validation_data=val,
                        callbacks=[CSVLogger(os.path.join(args.output, "history.csv"))])
    model.save(ckpt)
    onnx_path = model.export(os.path.join(args.output, f"{model.name}.onnx"))
    last = {k: v[-1] for k, v in (history.history or {}).items() if v}
    print(f"wrote {ckpt} and {onnx_path}")
    print("final: " + " - ".join(f"{k}: {v:.4f}" for k, v in last.items()))
    return 0


def cmd_evaluate(args) -> int:
    model = _open_model(args.model_path, args.model, args.provider)
    x, y = _data(model, args.data, args.rows)
    logs = model.evaluate(x, y, batch_size=args.batch_size, verbose=0, return_dict=True)
    if args.json:
        print(json.dumps(logs))
    else:
        print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
    return 0


def cmd_predict(args) -> int:
    from .runtime.files import atomic_write_bytes

    model = _open_model(args.model_path, args.model, args.provider)
    x, _ = _data(model, args.data, args.rows, need_targets=False)
    out = model.predict(x, batch_size=args.batch_size or 256, providers=args.provider)
    outs = out if isinstance(out, list) else [out]
    import io
    buf = io.BytesIO()
    np.savez(buf, **dict(zip(model.output_names, outs)))
    atomic_write_bytes(args.output, buf.getvalue())
    print(f"wrote {args.output} ({', '.join(f'{n}: {o.shape}' for n, o in zip(model.output_names, outs))})")
    return 0
