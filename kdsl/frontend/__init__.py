"""Front ends: .kd source (AST -> IR) and helpers shared with the builder API."""
