"""A Pygments lexer for ``.kd`` files, registered under the alias ``kdsl``.

kdsl's ``pyproject.toml`` declares it as a ``pygments.lexers`` entry point, so once kdsl is
installed ``pygmentize -l kdsl model.kd``, Sphinx/MkDocs code blocks marked ``kdsl`` and any
other Pygments user highlight ``.kd`` source. The vocabulary (layer classes, graph functions,
dtypes) is read from kdsl's own registries, so it cannot drift from the language.
"""
from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, include, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

__all__ = ["KdslLexer", "vocabulary"]

KEYWORDS = ("input", "output", "return", "repeat", "for", "in", "if", "else")
DECLARATIONS = ("model", "block", "train")
OPERATOR_WORDS = ("and", "or", "not")
CONSTANTS = ("true", "false", "none")


def vocabulary() -> dict[str, list[str]]:
    """Layer classes, functions (graph functions and compile-time builtins) and dtypes of the language."""
    from .frontend.elaborate import BUILTINS
    from .ir import DTYPES
    from .layers import LAYERS
    from .layers.ops import FUNCTIONS

    return {"layers": sorted(LAYERS), "functions": sorted(set(FUNCTIONS) | set(BUILTINS)),
            "dtypes": sorted(DTYPES)}


_V = vocabulary()
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class KdslLexer(RegexLexer):
    """Lexer for kdsl model files (``.kd``): Keras-flavoured models that compile to ONNX."""

    name = "kdsl"
    aliases = ["kdsl", "kd"]
    filenames = ["*.kd"]
    mimetypes = ["text/x-kdsl"]
    url = "https://pypi.org/project/kdsl-onnx/"

    tokens = {
        "common": [
            (r"[ \t\f\r]+", Whitespace),
            (r"\n", Whitespace),
            (r"\\\r?\n", Text),
            (r"#.*?$", Comment.Single),
            (r'"([^"\\\n]|\\.)*"', String.Double),
            (r"'([^'\\\n]|\\.)*'", String.Single),
            (r"(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|\d+[eE][+-]?\d+", Number.Float),
            (r"\d+", Number.Integer),
            (r"(import)(\s+)", bygroups(Keyword.Namespace, Whitespace)),
            (r"(from)(\s+)", bygroups(Keyword.Namespace, Whitespace)),
            (r"(layer)(\s+)(" + _NAME + r")", bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            (r"(" + "|".join(DECLARATIONS) + r")(\s+)(" + _NAME + r")",
             bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(OPERATOR_WORDS, suffix=r"\b"), Operator.Word),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (words(_V["dtypes"], suffix=r"\b"), Keyword.Type),
            (words(_V["layers"], suffix=r"\b"), Name.Class),
            (words(_V["functions"], suffix=r"\b"), Name.Builtin),
            (r"->", Operator),
            (r"==|!=|<=|>=|//|[<>+\-*/%@=]", Operator),
            (r"[\[\]{},:]", Punctuation),
        ],
        "root": [
            (r"\(", Punctuation, "args"),
            (r"\)", Punctuation),
            include("common"),
            (_NAME, Name),
        ],
        "args": [
            (r"\(", Punctuation, "#push"),
            (r"\)", Punctuation, "#pop"),
            (r"(" + _NAME + r")(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            include("common"),
            (_NAME, Name),
        ],
    }
