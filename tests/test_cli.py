"""The kdsl command line: outputs, exit codes 0/1/2, and error rendering."""
import os
import subprocess
import sys

import onnx
import pytest

from kdsl.cli import main

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
MLP = os.path.join(EXAMPLES, "mnist_mlp.kd")


def test_compile_to_directory_and_file(tmp_path, capsys):
    assert main(["compile", MLP, "-o", str(tmp_path)]) == 0
    assert (tmp_path / "mnist_mlp.onnx").is_file()
    assert main(["compile", MLP, "-o", str(tmp_path / "x.onnx"), "--opset", "21",
                 "--param", "hidden=32", "--param", "num_classes=3"]) == 0
    m = onnx.load(str(tmp_path / "x.onnx"))
    assert m.opset_import[0].version == 21
    dims = {i.name: tuple(i.dims) for i in m.graph.initializer}
    assert dims["dense/kernel"] == (784, 32) and dims["dense_1/kernel"] == (32, 3)
    assert "wrote" in capsys.readouterr().out


def test_check_ok_and_error_exit_codes(tmp_path, capsys):
    assert main(["check", MLP]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.kd"
    bad.write_text("model m {\n    input x: float32[4]\n    output y = x -> Dense(3, activaton=relu)\n}\n")
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}:3:30: error: Dense has no argument 'activaton'.")
    assert "hint: did you mean 'activation'?" in err
    assert "Traceback" not in err and "\x1b[" not in err   # plain when not a terminal


def test_summary(capsys):
    assert main(["summary", MLP]) == 0
    out = capsys.readouterr().out
    assert 'Model: "mnist_mlp"' in out and "dense (Dense)" in out and "(None, 128)" in out
    assert "Total params: 101,770" in out


def test_user_errors_exit_1(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "missing.kd")]) == 1
    assert "Cannot read" in capsys.readouterr().err
    assert main(["compile", MLP, "--opset", "9", "-o", str(tmp_path)]) == 1
    assert "Unsupported ONNX opset" in capsys.readouterr().err
    assert main(["compile", MLP, "--param", "nope=3"]) == 1
    assert "has no parameter 'nope'" in capsys.readouterr().err
    assert main(["compile", MLP, "--bogus"]) == 1
    assert main(["frobnicate"]) == 1


def test_help_for_each_command(capsys):
    for cmd in ("compile", "check", "summary"):
        assert main([cmd, "--help"]) == 0
        assert "usage: kdsl " + cmd in capsys.readouterr().out


def test_internal_errors_exit_2(monkeypatch, capsys):
    import kdsl.cli as cli

    def boom(args):
        raise RuntimeError("bug")
    monkeypatch.setattr(cli, "cmd_check", boom)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    for action in parser._subparsers._group_actions[0].choices.values():
        if action.prog.endswith("check"):
            action.set_defaults(func=boom)
    assert main(["check", MLP]) == 2
    assert "internal error" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "kdsl", "check", MLP], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
