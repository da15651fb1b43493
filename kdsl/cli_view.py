"""``kdsl graph`` (data-flow diagrams) and ``kdsl fmt`` (the formatter): commands of kdsl's CLI."""
from __future__ import annotations

import os
import sys

from .errors import KdslError

__all__ = ["add_commands"]

EXIT_OK, EXIT_USER = 0, 1


def add_commands(sub, add_model_args) -> None:
    p = sub.add_parser(
        "graph", help="draw a model's data-flow diagram (.svg, .png, .dot, .html)",
        description="Draw the data-flow diagram of a model: one box per layer call, edges labelled "
                    "with tensor shapes, block calls as clusters. The format follows the output's "
                    "extension: .html (interactive, self-contained), .dot (Graphviz source), .svg and "
                    ".png (rendered with Graphviz's dot, which must be installed).")
    add_model_args(p)
    p.add_argument("-o", "--output", default=None,
                   help="output file: .svg, .png, .dot or .html (default: <model>.html)")
    p.add_argument("--expand-blocks", action="store_true",
                   help="draw the layers inside each block call (default: one box per block call)")
    p.add_argument("--no-shapes", action="store_true", help="leave tensor shapes off the edges")
    p.add_argument("--no-params", action="store_true", help="leave parameter and FLOP counts out")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser(
        "fmt", help="format .kd files in the canonical style",
        description="Rewrite .kd files in kdsl's canonical style (comments kept; idempotent). "
                    "Directories are searched for *.kd files; '-' formats standard input to "
                    "standard output. With --check nothing is written: the files that would change "
                    "are listed and the exit status is 1 if there are any.")
    p.add_argument("files", nargs="+", metavar="FILE", help=".kd files or directories ('-' for stdin)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; list the files that would change and exit 1 if any would")
    p.set_defaults(func=cmd_fmt)


def cmd_graph(args) -> int:
    from .cli import _load
    from .viz import FORMATS, DotNotFound, plot_model

    _, model = _load(args)
    out = args.output or f"{model.name}.html"
    ext = os.path.splitext(out)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise KdslError(f"kdsl graph writes {', '.join('.' + f for f in FORMATS)} files. Received: -o {out}")
    kw = dict(show_shapes=not args.no_shapes, show_params=not args.no_params, expand_blocks=args.expand_blocks)
    try:
        plot_model(model, out, **kw)
    except DotNotFound as e:
        dot_path = os.path.splitext(out)[0] + ".dot"
        plot_model(model, dot_path, **kw)
        print(f"wrote {dot_path} instead of {out}", file=sys.stderr)
        e.hint = (f"install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz) "
                  f"and run `dot -T{ext} {dot_path} -o {out}`, or use -o {os.path.splitext(out)[0]}.html "
                  "(interactive, no Graphviz needed)")
        raise e
    n = len(model.layers)
    print(f"wrote {out}  ({n} layer{'s' if n != 1 else ''}, {model.count_params():,} parameters)")
    return EXIT_OK


def cmd_fmt(args) -> int:
    from .fmt import format_file, format_source, kd_files

    if args.files == ["-"]:
        text = sys.stdin.read()
        new = format_source(text, "<stdin>")
        if args.check:
            if new != text:
                print("<stdin>")
                return EXIT_USER
            return EXIT_OK
        sys.stdout.write(new)
        return EXIT_OK
    files = kd_files(args.files)
    if not files:
        raise KdslError(f"No .kd files found in {', '.join(args.files)}.")
    changed = []
    for f in files:
        r = format_file(f, write=not args.check)
        if r.changed:
            changed.append(f)
            print(f if args.check else f"reformatted {f}")
    if args.check:
        if changed:
            print(f"{len(changed)} file{'s' if len(changed) != 1 else ''} would be reformatted; "
                  "run `kdsl fmt` on them.", file=sys.stderr)
            return EXIT_USER
        return EXIT_OK
    if not changed:
        print(f"{len(files)} file{'s' if len(files) != 1 else ''} already formatted")
    return EXIT_OK
