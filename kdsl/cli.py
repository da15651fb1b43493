"""The ``kdsl`` command line: compile, check and summarise ``.kd`` files.

Exit codes: 0 ok, 1 user error (bad file, bad flag), 2 internal error (a bug in kdsl).
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Sequence

from . import __version__
from .errors import KdslError, _stream_wants_color

__all__ = ["main"]

EXIT_OK, EXIT_USER, EXIT_INTERNAL = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a bad flag is a user error: exit 1, not argparse's 2
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USER)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the .kd file")
    p.add_argument("--model", help="which model to use when the file defines several")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set a compile-time parameter of the model (repeatable)")
    p.add_argument("--root", action="append", default=[], metavar="DIR",
                   help="a directory imports may read from (default: the file's directory; repeatable)")
    p.add_argument("--seed", type=int, default=None, help="weight-initialisation seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kdsl", description="Compile Keras-flavoured .kd model files to ONNX.")
    parser.add_argument("--version", action="version", version=f"kdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("compile", help="compile a model to ONNX",
                       description="Compile a model of a .kd file to an ONNX inference model.")
    _add_model_args(p)
    p.add_argument("-o", "--output", default=None,
                   help="output .onnx file, or a directory to write <model>.onnx into (default: .)")
    p.add_argument("--opset", type=int, default=None,
                   help="target ONNX opset (17-21; default 17, or 20 for a TextVectorization model "
                        "without --no-preprocessing)")
    p.add_argument("--no-preprocessing", action="store_true",
                   help="leave the host-side preprocessing (TextVectorization) out of the inference model: "
                        "it then takes int64 token ids [batch, output_sequence_length] instead of raw "
                        "strings, under the same input name, and works at opset 17-19 too")
    p.add_argument("--no-training-graphs", action="store_true",
                   help="do not write the training graphs for a model with a train section")
    p.add_argument("--training-device", choices=["cpu", "cuda"], default="cpu",
                   help="build the training graphs for onnxruntime on this device (cuda: ops its CUDA "
                        "provider has, ONNX's LSTM op for unmasked LSTMs)")
    p.add_argument("--ort-training-artifacts", nargs="?", const="", default=None, metavar="DIR",
                   help="also write onnxruntime-training's artifacts (training/eval/optimizer models, checkpoint) "
                        "into DIR (default <output dir>/<model>.ort-training); needs a train section and "
                        "onnxruntime-training")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("check", help="check a .kd file (syntax, names, shapes) without writing anything",
                       description="Parse and shape-check every model of a .kd file. Exit 0 when clean, "
                                   "1 with the error otherwise.")
    p.add_argument("file", help="the .kd file")
    p.add_argument("--root", action="append", default=[], metavar="DIR",
                   help="a directory imports may read from (repeatable)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("summary", help="print a Keras-style summary of a model",
                       description="Print the layers, output shapes, parameter counts and FLOPs per "
                                   "sample of a model.")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON (for machines)")
    p.set_defaults(func=cmd_summary)

    # command families that live in their own modules: each defines add_commands(sub)
    for mod in ("kdsl.cli_train", "kdsl.cli_view"):
        try:
            module = __import__(mod, fromlist=["add_commands"])
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        module.add_commands(sub, _add_model_args)
    return parser


def _params(items: list[str]) -> dict:
    from .frontend.api import parse_param_value

    out = {}
    for item in items:
        if "=" not in item:
            raise KdslError(f"--param expects NAME=VALUE. Received: {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_param_value(v)
    return out


def _load(args):
    from .frontend.api import compile_file

    cf = compile_file(args.file, args.root or None)
    return cf, cf.build(args.model, _params(args.param), args.seed)


def cmd_compile(args) -> int:
    from .lower import DEFAULT_OPSET
    from .lower.export import default_opset

    _, model = _load(args)
    out = args.output or "."
    if out.endswith(".onnx"):
        path = out
    else:
        path = os.path.join(out, f"{model.name}.onnx")
    include = not args.no_preprocessing
    model.export(path, opset=args.opset, include_preprocessing=include)   # None: raised to what the layers need
    used = args.opset or default_opset(model.graph, skip_host_preprocessing=not include)
    print(f"wrote {path}  ({model.count_params():,} parameters, opset {used}"
          f"{'' if include else ', int token-id inputs'})")
    opset = args.opset or DEFAULT_OPSET
    if model.train_config is not None and not args.no_training_graphs:
        from .train.export import export_training_graphs

        written = export_training_graphs(model, os.path.dirname(path) or ".", opset, device=args.training_device)
        print("wrote " + ", ".join(written) + "  (portable training graphs, see docs/training_graph.md)")
    if args.ort_training_artifacts is not None:
        from .runtime.ort_training import generate_ort_artifacts

        model._ensure_compiled()
        out_dir = args.ort_training_artifacts or os.path.join(os.path.dirname(path) or ".",
                                                              f"{model.name}.ort-training")
        written = generate_ort_artifacts(model, model._setup, out_dir, opset)
        print("wrote " + ", ".join(written) + "  (onnxruntime-training artifacts)")
    return EXIT_OK


def cmd_check(args) -> int:
    from .frontend.api import compile_file

    cf = compile_file(args.file, args.root or None)
    built = cf.check()
    skipped = [m for m in cf.model_names if m not in built]
    msg = f"{args.file}: ok ({len(cf.model_names)} model{'s' if len(cf.model_names) != 1 else ''}"
    if skipped:
        msg += f"; not built, parameters without defaults: {', '.join(skipped)}"
    print(msg + ")")
    return EXIT_OK


def cmd_summary(args) -> int:
    _, model = _load(args)
    if getattr(args, "json", False):
        import json

        from .summary import summary_json

        print(json.dumps(summary_json(model), indent=2))
    else:
        model.summary()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return args.func(args)
    except KdslError as e:
        print(e.render(color=_stream_wants_color(sys.stderr)), file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_USER
    except BrokenPipeError:
        return EXIT_OK
    except Exception:  # a bug in kdsl: say so, keep the traceback for the report
        traceback.print_exc()
        print(f"kdsl {__version__}: internal error; please report it with the file that caused it.",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
