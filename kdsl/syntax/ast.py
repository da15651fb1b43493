"""The AST of a ``.kd`` file: plain dataclasses, each carrying its source span."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import Span

__all__ = [
    "Expr", "Name", "Literal", "ListExpr", "DictExpr", "Call", "Kwarg", "Pipeline", "BinOp", "Unary",
    "Compare", "BoolOp", "Not", "Conditional", "Stmt", "InputDecl", "Assign", "OutputNames", "LayerDecl",
    "Return", "Repeat", "For", "If", "ExprStmt", "Param", "ModelDef", "BlockDef", "TrainDef", "Import",
    "Module",
]


# -- expressions ------------------------------------------------------------------------
@dataclass
class Name:
    id: str
    span: Span


@dataclass
class Literal:
    value: Any           # int, float, str, bool or None
    span: Span


@dataclass
class ListExpr:
    items: list["Expr"]
    span: Span


@dataclass
class DictExpr:
    items: list[tuple[str, "Expr", Span]]
    span: Span


@dataclass
class Kwarg:
    name: str
    value: "Expr"
    span: Span


@dataclass
class Call:
    func: "Expr"
    args: list["Expr"]
    kwargs: list[Kwarg]
    span: Span


@dataclass
class Pipeline:
    """``stages[0] -> stages[1] -> ...``: each later stage is applied to the result so far."""
    stages: list["Expr"]
    span: Span


@dataclass
class BinOp:
    op: str              # + - * / // % @
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass
class Unary:
    op: str              # + -
    operand: "Expr"
    span: Span


@dataclass
class Compare:
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass
class BoolOp:
    op: str              # and / or
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass
class Not:
    operand: "Expr"
    span: Span


@dataclass
class Conditional:
    """``body if cond else orelse`` (compile-time)."""
    body: "Expr"
    cond: "Expr"
    orelse: "Expr"
    span: Span


Expr = Union[Name, Literal, ListExpr, DictExpr, Call, Pipeline, BinOp, Unary, Compare, BoolOp, Not,
             Conditional]


# -- statements -------------------------------------------------------------------------
@dataclass
class InputDecl:
    name: str
    dtype: str
    dims: list[tuple[Union[int, str], Span]]
    span: Span
    dtype_span: Span | None = None


@dataclass
class Assign:
    targets: list[str]
    value: Expr
    span: Span
    is_output: bool = False


@dataclass
class OutputNames:
    names: list[tuple[str, Span]]
    span: Span


@dataclass
class LayerDecl:
    name: str
    value: Expr
    span: Span


@dataclass
class Return:
    values: list[Expr]
    span: Span


@dataclass
class Repeat:
    count: Expr
    body: list["Stmt"]
    span: Span


@dataclass
class For:
    var: str
    iterable: Expr
    body: list["Stmt"]
    span: Span


@dataclass
class If:
    cond: Expr
    body: list["Stmt"]
    orelse: list["Stmt"]
    span: Span


@dataclass
class ExprStmt:
    value: Expr
    span: Span


Stmt = Union[InputDecl, Assign, OutputNames, LayerDecl, Return, Repeat, For, If, ExprStmt]


# -- top level --------------------------------------------------------------------------
@dataclass
class Param:
    name: str
    type: str | None     # None: a tensor parameter (blocks)
    default: Expr | None
    span: Span


@dataclass
class ModelDef:
    name: str
    params: list[Param]
    body: list[Stmt]
    span: Span
    module: Any = field(default=None, repr=False)   # the Module it belongs to


@dataclass
class BlockDef:
    name: str
    params: list[Param]
    body: list[Stmt]
    span: Span
    module: Any = field(default=None, repr=False)


@dataclass
class TrainDef:
    model: str
    entries: list[Assign]
    span: Span
    model_span: Span | None = None


@dataclass
class Import:
    path: str
    names: list[tuple[str, Span]] | None   # None: import everything
    span: Span


@dataclass
class Module:
    path: str
    text: str
    models: list[ModelDef]
    blocks: list[BlockDef]
    trains: list[TrainDef]
    imports: list[Import]
