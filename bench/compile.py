"""Compile-time benchmark: parse / elaborate+check / lower times for ResNet-20, ResNet-56 and a
500-layer MLP. Run: ``python bench/compile.py`` (prints a table; medians of --repeat runs)."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from kdsl.frontend.api import compile_text  # noqa: E402
from kdsl.syntax import parse  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESNET = open(os.path.join(HERE, "..", "examples", "blocks", "resnet.kd"), encoding="utf-8").read()

MLP500 = """
model mlp500(depth: int = 500) {
    input x: float32[256]
    h = x
    repeat depth { h = h -> Dense(64, activation=relu) }
    output y = h -> Dense(10, activation=softmax)
}
"""

CASES = [("resnet20", RESNET, "cifar_resnet", {"n": 3}),
         ("resnet56", RESNET, "cifar_resnet", {"n": 9}),
         ("mlp500", MLP500, "mlp500", {})]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    parse(MLP500)  # build the parser once, as a long-lived process would
    print(f"{'model':<10} {'layers':>7} {'nodes':>7} {'parse ms':>9} {'check ms':>9} {'lower ms':>9} "
          f"{'total ms':>9}")
    for name, src, model, params in CASES:
        rows = []
        for _ in range(args.repeat):
            _, tp = timed(lambda: parse(src, name + ".kd"))
            cf = compile_text(src, name + ".kd")
            m, tc = timed(lambda: cf.build(model, params))
            _, tl = timed(lambda: m.to_onnx())
            rows.append((tp, tc, tl))
        tp, tc, tl = (statistics.median(r[i] for r in rows) * 1e3 for i in range(3))
        print(f"{name:<10} {len(m.layers):>7} {len(m.graph.nodes):>7} {tp:>9.1f} {tc:>9.1f} {tl:>9.1f} "
              f"{tp + tc + tl:>9.1f}")
    print("check = elaborate blocks/loops, infer and check every shape, name layers, initialise weights")


if __name__ == "__main__":
    main()
