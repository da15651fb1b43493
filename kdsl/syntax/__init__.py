"""Syntax: the grammar, the post-lexer, and the AST of .kd files."""
from . import ast
from .parser import grammar_path, parse, read_source

__all__ = ["ast", "parse", "read_source", "grammar_path"]
