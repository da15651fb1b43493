"""AST -> IR: evaluate a model's body at compile time, calling layers on symbolic tensors.

Elaboration is an interpreter over compile-time values: numbers, strings,
booleans, lists, tensors (IR values), layer objects, and references to blocks,
models and functions. ``repeat``/``for``/``if`` run here, so the IR that comes
out is a flat graph; every step is counted and bounded.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from .. import limits
from ..errors import KdslError, Span, did_you_mean
from ..ir import BATCH, DTYPES, Graph, TensorType, Value
from ..layers import LAYERS, Layer
from ..layers.args import ArgError
from ..layers.ops import FUNCTIONS, binary_op
from ..syntax import ast as A
from .modules import LoadedModule

__all__ = ["Elaborator", "Symbol", "Function", "PARAM_TYPES"]

PARAM_TYPES = ("int", "float", "str", "bool", "list", "tensor")


@dataclass(frozen=True)
class Symbol:
    """A bare name that is not bound: stands for a string where Keras takes one (``padding=same``)."""
    name: str
    span: Span


@dataclass(frozen=True)
class Function:
    name: str
    fn: Any


def _builtin_range(*args, span=None):
    if not 1 <= len(args) <= 3 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise KdslError(f"range() takes one to three ints. Received: {list(args)!r}", span)
    r = range(*args)
    if len(r) > limits.MAX_REPEAT:
        raise KdslError(f"range() of {len(r):,} items exceeds the limit of {limits.MAX_REPEAT:,}.", span)
    return list(r)


def _builtin_len(x, span=None):
    if isinstance(x, (list, str)):
        return len(x)
    raise KdslError(f"len() takes a list or a string. Received: {_kind(x)}", span)


def _builtin_minmax(fn):
    def f(*args, span=None):
        vals = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
        if not vals or not all(_is_num(v) for v in vals):
            raise KdslError(f"{fn.__name__}() takes numbers. Received: {list(args)!r}", span)
        return fn(vals)
    return f


def _builtin_int(x, span=None):
    if _is_num(x):
        return int(x)
    raise KdslError(f"int() takes a number. Received: {_kind(x)}", span)


def _builtin_float(x, span=None):
    if _is_num(x):
        return float(x)
    raise KdslError(f"float() takes a number. Received: {_kind(x)}", span)


BUILTINS: dict[str, Any] = {"range": _builtin_range, "len": _builtin_len, "min": _builtin_minmax(min),
                            "max": _builtin_minmax(max), "int": _builtin_int, "float": _builtin_float}


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _kind(v) -> str:
    if isinstance(v, Value):
        return f"a tensor {v.type}"
    if isinstance(v, Layer):
        return f"a layer ({type(v).__name__})"
    if isinstance(v, type) and issubclass(v, Layer):
        return f"the layer class {v.__name__}"
    if isinstance(v, A.BlockDef):
        return f"the block '{v.name}'"
    if isinstance(v, A.ModelDef):
        return f"the model '{v.name}'"
    if isinstance(v, ModelInstance):
        return f"the model instance '{v.name}'"
    if isinstance(v, Function):
        return f"the function '{v.name}'"
    if isinstance(v, Symbol):
        return f"the undefined name '{v.name}'"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, list):
        return "a list"
    return f"{type(v).__name__} {v!r}"


@dataclass(eq=False)
class ModelInstance:
    """``layer enc = encoder(k=v)``: one set of weights shared by every call of ``enc``."""
    mdef: A.ModelDef
    kwargs: dict
    span: Span
    name: str | None = None
    graph: Graph | None = None


class _Return(Exception):
    def __init__(self, values, span):
        self.values, self.span = values, span


@dataclass
class Frame:
    """One model or block being elaborated."""
    kind: str                              # "model" | "block"
    name: str
    module: LoadedModule
    vars: dict[str, Any] = field(default_factory=dict)
    bound_inputs: list[Value] | None = None   # when a model is called inside another
    inputs: list[Value] = field(default_factory=list)
    outputs: list[tuple[str, Value, Span]] = field(default_factory=list)


class Elaborator:
    """Builds IR graphs from the models of loaded modules."""

    def __init__(self, modules: dict[Any, LoadedModule]):
        self.modules = modules               # id(A.Module) -> LoadedModule
        self.steps = 0
        self.depth = 0
        self.scope: tuple[str, ...] = ()
        self._scope_counts: dict[tuple, dict[str, int]] = {}

    def module_of(self, d) -> LoadedModule:
        return self.modules[id(d.module)]

    # -- entry -------------------------------------------------------------------------------
    def build(self, mdef: A.ModelDef, params: dict[str, Any] | None = None,
              param_span: Span | None = None) -> Graph:
        """Elaborate ``mdef`` as a root model; ``params`` override its parameter defaults."""
        params = dict(params or {})
        known = {p.name for p in mdef.params}
        for k in params:
            if k not in known:
                raise KdslError(f"Model '{mdef.name}' has no parameter '{k}'. Its parameters: "
                                f"{sorted(known) or 'none'}.", param_span or mdef.span, did_you_mean(k, known))
        frame = Frame("model", mdef.name, self.module_of(mdef))
        self._bind_params(frame, mdef.params, [], {k: (v, param_span or mdef.span) for k, v in params.items()},
                          mdef.span, f"model '{mdef.name}'")
        self._run_body(frame, mdef.body)
        if not frame.inputs:
            raise KdslError(f"Model '{mdef.name}' declares no input.", mdef.span,
                            "declare one, e.g. `input x: float32[784]`")
        if not frame.outputs:
            raise KdslError(f"Model '{mdef.name}' has no output.", mdef.span,
                            "mark a result with `output NAME = ...`")
        return Graph.trace(mdef.name, frame.inputs, [(n, v) for n, v, _ in frame.outputs])

    # -- parameters ------------------------------------------------------------------------------
    def _bind_params(self, frame: Frame, params: list[A.Param], args: list[tuple[Any, Span]],
                     kwargs: dict[str, tuple[Any, Span]], call_span: Span, what: str) -> None:
        if len(args) > len(params):
            raise KdslError(f"{what} takes {len(params)} arguments. Received: {len(args)} positional "
                            "arguments.", call_span)
        names = [p.name for p in params]
        for k, (_, sp) in kwargs.items():
            if k not in names:
                raise KdslError(f"{what} has no parameter '{k}'. Its parameters: {names}.", sp,
                                did_you_mean(k, names))
        for i, p in enumerate(params):
            if p.type is not None and p.type not in PARAM_TYPES:
                raise KdslError(f"Unknown parameter type '{p.type}'. Expected one of {list(PARAM_TYPES)}.",
                                p.span, did_you_mean(p.type, PARAM_TYPES))
            if i < len(args):
                if p.name in kwargs:
                    raise KdslError(f"{what} got two values for parameter '{p.name}'.", kwargs[p.name][1])
                value, sp = args[i]
            elif p.name in kwargs:
                value, sp = kwargs[p.name]
            elif p.default is not None:
                value, sp = self.eval(p.default, frame), p.default.span
            else:
                raise KdslError(f"{what} is missing a value for parameter '{p.name}'.", call_span)
            frame.vars[p.name] = self._check_param(p, value, sp, what)

    def _check_param(self, p: A.Param, value, span: Span, what: str):
        t = p.type or "tensor"
        if isinstance(value, Symbol) and t == "str":
            value = value.name
        ok = {
            "tensor": lambda v: isinstance(v, Value) or (isinstance(v, list) and v and all(
                isinstance(x, Value) for x in v)),
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "float": _is_num,
            "str": lambda v: isinstance(v, str),
            "bool": lambda v: isinstance(v, bool),
            "list": lambda v: isinstance(v, list),
        }[t](value)
        if not ok:
            raise KdslError(f"Parameter '{p.name}' of {what} expects {'a tensor' if t == 'tensor' else t}. "
                            f"Received: {_kind(value)}", span)
        return float(value) if t == "float" else value

    # -- statements ---------------------------------------------------------------------------------
    def _run_body(self, frame: Frame, body: list) -> None:
        for stmt in body:
            self._exec(frame, stmt)

    def _step(self, span: Span) -> None:
        self.steps += 1
        if self.steps > limits.MAX_UNROLLED_STATEMENTS:
            raise KdslError(f"Unrolling this model runs more than {limits.MAX_UNROLLED_STATEMENTS:,} "
                            "statements.", span, "reduce repeat counts or loop lengths")

    def _exec(self, frame: Frame, s) -> None:
        self._step(s.span)
        if isinstance(s, A.Assign):
            value = self.eval(s.value, frame)
            targets = s.targets
            if len(targets) == 1:
                values = [value]
            else:
                if not isinstance(value, list) or len(value) != len(targets):
                    n = len(value) if isinstance(value, list) else 1
                    raise KdslError(f"Cannot unpack {n} value(s) into {len(targets)} names.", s.span)
                values = value
            for t, v in zip(targets, values):
                if isinstance(v, Symbol):
                    self._undefined(v, frame)
                frame.vars[t] = v
                if s.is_output:
                    self._add_output(frame, t, v, s.span)
        elif isinstance(s, A.OutputNames):
            for name, sp in s.names:
                if name not in frame.vars:
                    raise KdslError(f"Undefined value '{name}'.", sp, did_you_mean(name, frame.vars))
                self._add_output(frame, name, frame.vars[name], sp)
        elif isinstance(s, A.InputDecl):
            self._input(frame, s)
        elif isinstance(s, A.LayerDecl):
            value = self.eval(s.value, frame)
            if isinstance(value, A.ModelDef):
                value = ModelInstance(value, {}, s.span)
            if isinstance(value, ModelInstance):
                if value.name is None:
                    value.name = "/".join(self.scope + (s.name,))
                frame.vars[s.name] = value
                return
            if not isinstance(value, Layer):
                hint = f"to bind a value, write `{s.name} = ...`" if isinstance(value, Value) else None
                raise KdslError(f"`layer {s.name} = ...` needs a layer such as Dense(64). Received: "
                                f"{_kind(value)}", s.value.span, hint)
            if value.name is None:
                value.name = "/".join(self.scope + (s.name,))
            frame.vars[s.name] = value
        elif isinstance(s, A.Return):
            if frame.kind != "block":
                raise KdslError("`return` is only allowed in a block; a model marks results with `output`.",
                                s.span)
            vals = [self.eval(v, frame) for v in s.values]
            raise _Return(vals[0] if len(vals) == 1 else vals, s.span)
        elif isinstance(s, A.Repeat):
            n = self.eval(s.count, frame)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise KdslError(f"`repeat` needs a non-negative int known at compile time. Received: "
                                f"{_kind(n)}", s.count.span)
            if n > limits.MAX_REPEAT:
                raise KdslError(f"`repeat {n}` exceeds the limit of {limits.MAX_REPEAT:,} repetitions.",
                                s.count.span)
            for _ in range(n):
                self._run_body(frame, s.body)
        elif isinstance(s, A.For):
            items = self.eval(s.iterable, frame)
            if not isinstance(items, list):
                raise KdslError(f"`for` iterates over a list known at compile time, e.g. [16, 32] or "
                                f"range(3). Received: {_kind(items)}", s.iterable.span)
            for item in items:
                frame.vars[s.var] = item
                self._run_body(frame, s.body)
        elif isinstance(s, A.If):
            if self._cond(s.cond, frame):
                self._run_body(frame, s.body)
            else:
                self._run_body(frame, s.orelse)
        elif isinstance(s, A.ExprStmt):
            v = self.eval(s.value, frame)
            if isinstance(v, Symbol):
                self._undefined(v, frame)
            raise KdslError("This expression's result is not used; bind it with `name = ...` or mark it "
                            "`output name = ...`.", s.span)
        else:  # pragma: no cover - the parser makes nothing else
            raise KdslError(f"Unsupported statement {type(s).__name__}.", s.span)

    def _add_output(self, frame: Frame, name: str, v, span: Span) -> None:
        if frame.kind != "model":
            raise KdslError("`output` is only allowed in a model; a block returns values with `return`.", span)
        if not isinstance(v, Value):
            raise KdslError(f"Output '{name}' must be a tensor. Received: {_kind(v)}", span)
        if any(n == name for n, _, _ in frame.outputs):
            raise KdslError(f"Output '{name}' is declared twice.", span)
        if any(i.name == name for i in frame.inputs):
            raise KdslError(f"Output '{name}' has the name of an input; outputs need their own names.", span)
        frame.outputs.append((name, v, span))

    def _input(self, frame: Frame, s: A.InputDecl) -> None:
        if frame.kind != "model":
            raise KdslError("`input` is only allowed in a model; a block takes tensors as parameters.", s.span)
        if s.dtype not in DTYPES:
            raise KdslError(f"Unknown dtype '{s.dtype}'. Expected one of {list(DTYPES)}.", s.dtype_span or s.span,
                            did_you_mean(s.dtype, DTYPES))
        if s.name in frame.vars or any(i.name == s.name for i in frame.inputs):
            raise KdslError(f"Input '{s.name}' is already defined.", s.span)
        dims: list = [BATCH]
        for d, sp in s.dims:
            if isinstance(d, str):
                bound = frame.vars.get(d)
                if isinstance(bound, int) and not isinstance(bound, bool):
                    d = bound
                elif bound is not None:
                    raise KdslError(f"A dimension must be an int or a symbolic name. Received: {_kind(bound)}", sp)
                elif d == BATCH:
                    raise KdslError("'batch' is the implicit batch axis; do not list it in the shape.", sp)
            if isinstance(d, int) and not 0 < d <= limits.MAX_DIM:
                raise KdslError(f"Dimension {d} is out of range; expected 1 to {limits.MAX_DIM}.", sp)
            dims.append(d)
        t = TensorType(s.dtype, tuple(dims))
        if frame.bound_inputs is not None:
            i = len(frame.inputs)
            if i >= len(frame.bound_inputs):
                raise KdslError(f"Model '{frame.name}' declares more inputs than it was called with "
                                f"({len(frame.bound_inputs)}).", s.span)
            v = frame.bound_inputs[i]
            ok = v.type.rank == t.rank and v.type.dtype == t.dtype and all(
                isinstance(w, str) or g == w for g, w in zip(v.type.shape[1:], t.shape[1:]))
            if not ok:
                raise KdslError(f"Model '{frame.name}' input '{s.name}' expects {t}. Received: {v.type}", s.span)
        else:
            v = Value(t, None, 0, name=s.name, span=s.span)
        frame.inputs.append(v)
        frame.vars[s.name] = v

    def _cond(self, e, frame: Frame) -> bool:
        v = self.eval(e, frame)
        if isinstance(v, Value):
            raise KdslError("Conditions are evaluated at compile time; a condition on a tensor is not allowed.",
                            e.span, "use compile-time parameters (model/block parameters) in conditions")
        if not isinstance(v, bool):
            raise KdslError(f"A condition must be true or false. Received: {_kind(v)}", e.span)
        return v

    # -- expressions ----------------------------------------------------------------------------------
    def eval(self, e, frame: Frame):
        m = getattr(self, "_e_" + type(e).__name__)
        return m(e, frame)

    def _e_Literal(self, e, frame):
        return e.value

    def _e_ListExpr(self, e, frame):
        return [self._no_symbol(self.eval(x, frame), x, frame, allow_symbol=True) for x in e.items]

    def _e_DictExpr(self, e, frame):
        return {k: self.eval(v, frame) for k, v, _ in e.items}

    def _e_Name(self, e, frame):
        if e.id in frame.vars:
            return frame.vars[e.id]
        if e.id in frame.module.namespace:
            return frame.module.namespace[e.id]
        if e.id in LAYERS:
            return LAYERS[e.id]
        if e.id in FUNCTIONS:
            return Function(e.id, FUNCTIONS[e.id])
        if e.id in BUILTINS:
            return Function(e.id, BUILTINS[e.id])
        return Symbol(e.id, e.span)

    def _names_in_scope(self, frame: Frame) -> list[str]:
        return list(frame.vars) + list(frame.module.namespace) + list(LAYERS) + list(FUNCTIONS) + list(BUILTINS)

    def _undefined(self, sym: Symbol, frame: Frame):
        raise KdslError(f"Undefined value '{sym.name}'.", sym.span,
                        did_you_mean(sym.name, self._names_in_scope(frame)))

    def _no_symbol(self, v, e, frame, allow_symbol=False):
        if isinstance(v, Symbol) and not allow_symbol:
            self._undefined(v, frame)
        return v

    def _e_Conditional(self, e, frame):
        return self.eval(e.body if self._cond(e.cond, frame) else e.orelse, frame)

    def _e_Not(self, e, frame):
        return not self._cond(e.operand, frame)

    def _e_BoolOp(self, e, frame):
        left = self._cond(e.left, frame)
        if e.op == "and":
            return left and self._cond(e.right, frame)
        return left or self._cond(e.right, frame)

    def _e_Compare(self, e, frame):
        a, b = self.eval(e.left, frame), self.eval(e.right, frame)
        for v, x in ((a, e.left), (b, e.right)):
            if isinstance(v, Value):
                raise KdslError("Comparisons are evaluated at compile time; a tensor cannot be compared.",
                                x.span)
            if isinstance(v, Symbol):
                self._undefined(v, frame)
        if e.op in ("==", "!="):
            eq = (a is b) if isinstance(a, bool) or isinstance(b, bool) else a == b
            return eq if e.op == "==" else not eq
        if not ((_is_num(a) and _is_num(b)) or (isinstance(a, str) and isinstance(b, str))):
            raise KdslError(f"Cannot compare {_kind(a)} and {_kind(b)} with '{e.op}'.", e.span)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[e.op]

    def _e_Unary(self, e, frame):
        v = self._no_symbol(self.eval(e.operand, frame), e.operand, frame)
        if e.op == "+" and (_is_num(v) or isinstance(v, Value)):
            return v
        if _is_num(v):
            return -v
        if isinstance(v, Value):
            return binary_op("mul", v, -1, span=e.span)
        raise KdslError(f"Unary '{e.op}' needs a number or a tensor. Received: {_kind(v)}", e.span)

    def _e_BinOp(self, e, frame):
        a = self._no_symbol(self.eval(e.left, frame), e.left, frame)
        b = self._no_symbol(self.eval(e.right, frame), e.right, frame)
        op = e.op
        if isinstance(a, Value) or isinstance(b, Value):
            names = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul"}
            if op not in names:
                raise KdslError(f"Operator '{op}' is not defined for tensors; tensors support + - * / @.",
                                e.span)
            return binary_op(names[op], a, b, span=e.span)
        if op == "+" and isinstance(a, list) and isinstance(b, list):
            return a + b
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        if not (_is_num(a) and _is_num(b)):
            raise KdslError(f"Operator '{op}' needs numbers or tensors. Received: {_kind(a)} {op} {_kind(b)}",
                            e.span)
        try:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                r = a * b
                if isinstance(r, int) and abs(r) > 2 ** 62:
                    raise OverflowError
                return r
            if op == "/":
                return a / b
            if op == "//":
                return a // b
            if op == "%":
                return a % b
        except ZeroDivisionError:
            raise KdslError("Division by zero.", e.span) from None
        except OverflowError:
            raise KdslError("Number too large.", e.span) from None
        raise KdslError(f"Operator '{op}' needs two tensors.", e.span)

    def _e_Pipeline(self, e, frame):
        value = self._no_symbol(self.eval(e.stages[0], frame), e.stages[0], frame)
        if not (isinstance(value, Value) or (isinstance(value, list) and value and all(
                isinstance(v, Value) for v in value))):
            raise KdslError(f"A pipeline starts with a tensor (or a list of tensors). Received: {_kind(value)}",
                            e.stages[0].span)
        for stage in e.stages[1:]:
            value = self._apply_stage(value, stage, frame)
        return value

    def _apply_stage(self, value, stage, frame):
        if isinstance(stage, A.Call):
            callee = self.eval(stage.func, frame)
            if isinstance(callee, (A.BlockDef, A.ModelDef, Function)):
                return self._call(callee, stage, frame, prepend=(value, stage.span))
            result = self._call(callee, stage, frame)
        else:
            result = self.eval(stage, frame)
        if isinstance(result, type) and issubclass(result, Layer):
            result = self._construct(result, [], [], stage.span, frame)
        if isinstance(result, Layer):
            return result(value, span=stage.span)
        if isinstance(result, (A.BlockDef, A.ModelDef, Function)):
            return self._invoke(result, [(value, stage.span)], {}, stage.span, frame)
        if isinstance(result, ModelInstance):
            return self._call_instance(result, [(value, stage.span)], stage.span, frame)
        if isinstance(result, Symbol):
            self._undefined(result, frame)
        raise KdslError(f"A pipeline stage must be a layer, a block, a model or a function. Received: "
                        f"{_kind(result)}", stage.span)

    def _e_Call(self, e, frame):
        return self._call(self.eval(e.func, frame), e, frame)

    def _call(self, callee, e: A.Call, frame, prepend=None):
        args = [(self.eval(a, frame), a.span) for a in e.args]
        kwargs = {k.name: (self.eval(k.value, frame), k.span) for k in e.kwargs}
        if prepend is not None:
            args.insert(0, prepend)
        if isinstance(callee, type) and issubclass(callee, Layer):
            return self._construct(callee, args, e.kwargs, e.span, frame, kwargs)
        if isinstance(callee, Layer):
            if len(args) != 1:
                raise KdslError(f"Layer '{callee.display_name()}' is called on one tensor (or one list of "
                                f"tensors). Received: {len(args)} arguments.", e.span)
            v, sp = args[0]
            if isinstance(v, Symbol):
                self._undefined(v, frame)
            call_args = {}
            for k, (cv, csp) in kwargs.items():
                if isinstance(cv, (Value, Layer)):
                    raise KdslError(f"Call argument '{k}' must be known at compile time. Received: {_kind(cv)}",
                                    csp)
                call_args[k] = cv.name if isinstance(cv, Symbol) else cv
            return callee(v, span=e.span, **call_args)
        if isinstance(callee, A.ModelDef) and not args:
            return ModelInstance(callee, kwargs, e.span)
        if isinstance(callee, (A.BlockDef, A.ModelDef, Function)):
            return self._invoke(callee, args, kwargs, e.span, frame)
        if isinstance(callee, ModelInstance):
            if kwargs:
                raise KdslError(f"Model instance '{callee.name}' is already configured; call it on tensors "
                                "only.", e.span)
            return self._call_instance(callee, args, e.span, frame)
        if isinstance(callee, Symbol):
            raise KdslError(f"Unknown layer or function '{callee.name}'.", callee.span,
                            did_you_mean(callee.name, self._names_in_scope(frame)))
        raise KdslError(f"{_kind(callee)[0].upper() + _kind(callee)[1:]} cannot be called.", e.span)

    # -- layers ------------------------------------------------------------------------------------------
    def _construct(self, cls: type[Layer], args, kwarg_nodes, span: Span, frame, kwargs=None) -> Layer:
        kwargs = kwargs or {}
        params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        names = [p.name for p in params]
        if len(args) > len(params):
            raise KdslError(f"{cls.__name__} takes at most {len(params)} positional arguments. "
                            f"Received: {len(args)}.", args[len(params)][1])
        bound: dict[str, tuple[Any, Span]] = {}
        for p, a in zip(params, args):
            bound[p.name] = a
        for k, (v, sp) in kwargs.items():
            if k not in names:
                raise KdslError(f"{cls.__name__} has no argument '{k}'.", sp,
                                did_you_mean(k, names) or f"its arguments are: {', '.join(names)}")
            if k in bound:
                raise KdslError(f"{cls.__name__} got two values for argument '{k}'.", sp)
            bound[k] = (v, sp)
        for p in params:
            if p.default is inspect.Parameter.empty and p.name not in bound:
                raise KdslError(f"{cls.__name__} is missing its required argument '{p.name}'.", span,
                                f"e.g. {cls.__name__}({p.name}=...)")
        values = {}
        by_name = {p.name: p for p in params}
        for k, (v, sp) in bound.items():
            values[k] = self._convert_arg(cls, by_name[k], v, sp, frame)
        try:
            layer = cls(**values)
        except ArgError as err:
            sp = bound[err.arg][1] if err.arg in bound else span
            raise err.with_span(sp)
        except KdslError as err:
            raise err.with_span(span)
        except (TypeError, ValueError) as err:
            raise KdslError(f"Invalid arguments for {cls.__name__}: {err}", span) from None
        layer.scope = self.scope
        if layer.name is not None and self.scope and "name" in values and "/" not in layer.name:
            layer.name = "/".join(self.scope + (layer.name,))
        return layer

    def _convert_arg(self, cls, p: inspect.Parameter, v, span: Span, frame):
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        allowed = {t.strip() for t in str(ann).replace("Optional[", "").replace("]", "").split("|")}
        if isinstance(v, (Symbol, Function)):
            if "str" in allowed or not ann or "Any" in allowed:
                return v.name
            if isinstance(v, Symbol):
                self._undefined(v, frame)
        if isinstance(v, list):
            v = [x.name if isinstance(x, (Symbol, Function)) else x for x in v]
        if isinstance(v, Layer) and "Layer" in str(ann):     # a layer argument: Bidirectional(LSTM(64))
            if v.built:
                raise KdslError(f"Argument '{p.name}' of {cls.__name__} needs a fresh layer; this one was "
                                "already called on a tensor.", span)
            return v
        if isinstance(v, (Value, Layer)) or (isinstance(v, list) and any(isinstance(x, Value) for x in v)):
            raise KdslError(f"Argument '{p.name}' of {cls.__name__} must be known at compile time. "
                            f"Received: {_kind(v)}", span,
                            f"apply the layer to the tensor instead: x -> {cls.__name__}(...)")
        if isinstance(v, (A.BlockDef, A.ModelDef)) or (isinstance(v, type) and issubclass(v, Layer)):
            raise KdslError(f"Argument '{p.name}' of {cls.__name__} expects a value. Received: {_kind(v)}", span)
        simple = {"int", "float", "str", "bool", "None", "list", "tuple"}
        if allowed and allowed <= simple:
            ok = (v is None and "None" in allowed) or (isinstance(v, bool) and "bool" in allowed) or (
                not isinstance(v, bool) and (
                    (isinstance(v, int) and ("int" in allowed or "float" in allowed)) or
                    (isinstance(v, float) and "float" in allowed) or
                    (isinstance(v, str) and "str" in allowed) or
                    (isinstance(v, list) and ("list" in allowed or "tuple" in allowed))))
            if not ok:
                want = " or ".join(sorted(a for a in allowed if a != "None")) or "none"
                raise KdslError(f"Argument '{p.name}' of {cls.__name__} expects {want}. "
                                f"Received: {p.name}={_kind(v)}", span)
        return v

    # -- blocks, models, functions --------------------------------------------------------------------
    def _invoke(self, callee, args, kwargs, span: Span, frame):
        for v, sp in list(args) + list(kwargs.values()):
            if isinstance(v, Symbol) and not isinstance(callee, Function):
                self._undefined(v, frame)
        if isinstance(callee, Function):
            return self._call_function(callee, args, kwargs, span, frame)
        self.depth += 1
        if self.depth > limits.MAX_CALL_DEPTH:
            raise KdslError(f"Calls nest deeper than {limits.MAX_CALL_DEPTH} levels.", span,
                            f"is '{callee.name}' recursive without a stopping condition?")
        old_scope = self.scope
        counts = self._scope_counts.setdefault(self.scope, {})
        n = counts.get(callee.name, 0)
        counts[callee.name] = n + 1
        self.scope = self.scope + (callee.name if n == 0 else f"{callee.name}_{n}",)
        try:
            if isinstance(callee, A.BlockDef):
                return self._call_block(callee, args, kwargs, span)
            return self._call_model(callee, args, kwargs, span)
        finally:
            self.scope = old_scope
            self.depth -= 1

    def _call_instance(self, inst: ModelInstance, args, span: Span, frame):
        from .inline import inline_graph

        tensors = []
        for v, sp in args:
            if isinstance(v, list) and len(args) == 1:
                tensors.extend(v)
            elif isinstance(v, Value):
                tensors.append(v)
            else:
                raise KdslError(f"Model instance '{inst.name}' is called on tensors. Received: {_kind(v)}", sp)
        if inst.graph is None:   # elaborate once, on fresh inputs shaped like the first call's
            fresh = [Value(t.type, None, 0, name=f"in{i}", span=span) for i, t in enumerate(tensors)]
            old_scope, self.scope = self.scope, tuple(inst.name.split("/"))
            self.depth += 1
            try:
                if self.depth > limits.MAX_CALL_DEPTH:
                    raise KdslError(f"Calls nest deeper than {limits.MAX_CALL_DEPTH} levels.", span)
                sub = Frame("model", inst.mdef.name, self.module_of(inst.mdef), bound_inputs=fresh)
                self._bind_params(sub, inst.mdef.params, [], inst.kwargs, inst.span, f"model '{inst.mdef.name}'")
                self._run_body(sub, inst.mdef.body)
            finally:
                self.scope = old_scope
                self.depth -= 1
            if len(sub.inputs) != len(tensors):
                raise KdslError(f"Model '{inst.mdef.name}' takes {len(sub.inputs)} inputs. "
                                f"Received: {len(tensors)}.", span)
            inst.graph = Graph.trace(inst.mdef.name, fresh, [(n, v) for n, v, _ in sub.outputs])
        return inline_graph(inst.graph, tensors, span)

    def _call_block(self, b: A.BlockDef, args, kwargs, span):
        frame = Frame("block", b.name, self.module_of(b))
        self._bind_params(frame, b.params, args, kwargs, span, f"block '{b.name}'")
        try:
            self._run_body(frame, b.body)
        except _Return as r:
            return r.values
        raise KdslError(f"Block '{b.name}' ended without `return`.", b.span)

    def _call_model(self, m: A.ModelDef, args, kwargs, span):
        tensors = []
        for v, sp in args:
            if not isinstance(v, Value):
                raise KdslError(f"Model '{m.name}' is called on tensors; compile-time parameters go by name. "
                                f"Received: {_kind(v)}", sp)
            tensors.append(v)
        frame = Frame("model", m.name, self.module_of(m), bound_inputs=tensors)
        self._bind_params(frame, m.params, [], kwargs, span, f"model '{m.name}'")
        self._run_body(frame, m.body)
        if len(frame.inputs) != len(tensors):
            raise KdslError(f"Model '{m.name}' takes {len(frame.inputs)} inputs. Received: {len(tensors)}.", span)
        outs = [v for _, v, _ in frame.outputs]
        if not outs:
            raise KdslError(f"Model '{m.name}' has no output.", m.span)
        return outs[0] if len(outs) == 1 else outs

    def _call_function(self, f: Function, args, kwargs, span, frame):
        try:
            sig = inspect.signature(f.fn)
            params = [p for p in sig.parameters.values() if p.name != "span"]
            names = [p.name for p in params]
            for k, (_, sp) in kwargs.items():
                if k not in names:
                    raise KdslError(f"{f.name}() has no argument '{k}'.", sp,
                                    did_you_mean(k, names) or f"its arguments are: {', '.join(names)}")
            bound = sig.bind(*[v for v, _ in args], **{k: v for k, (v, _) in kwargs.items()})
        except TypeError as err:
            raise KdslError(f"Wrong arguments for {f.name}(): {err}.", span) from None
        for k, v in bound.arguments.items():
            if isinstance(v, Symbol):
                self._undefined(v, frame)
        try:
            return f.fn(*bound.args, **bound.kwargs, span=span)
        except ArgError as err:
            sp = kwargs[err.arg][1] if err.arg in kwargs else span
            raise err.with_span(sp)
        except KdslError as err:
            raise err.with_span(span)

    # -- train sections ------------------------------------------------------------------------------------
    def eval_train_value(self, e, frame: Frame):
        """Evaluate a train-section value: names are names, calls are :class:`Spec` objects."""
        from ..train.specs import Spec

        if isinstance(e, A.Name):
            return e.id
        if isinstance(e, A.Call):
            if not isinstance(e.func, A.Name):
                raise KdslError("Expected a name such as Adam(...) here.", e.func.span)
            return Spec(e.func.id, [self.eval_train_value(a, frame) for a in e.args],
                        {k.name: self.eval_train_value(k.value, frame) for k in e.kwargs}, e.span)
        if isinstance(e, A.ListExpr):
            return [self.eval_train_value(x, frame) for x in e.items]
        if isinstance(e, A.DictExpr):
            return {k: self.eval_train_value(v, frame) for k, v, _ in e.items}
        v = self.eval(e, frame)
        if isinstance(v, (Value, Layer)):
            raise KdslError(f"A train section holds settings, not tensors. Received: {_kind(v)}", e.span)
        return v
