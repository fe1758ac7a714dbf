"""Usage errors on every registered command: the real console script prints one line on stderr, the
problem and the usage, and exits 2, never a traceback. Commands and their parameters are read from the
Typer app, so a new command or option is covered without editing this file."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
import typer
import typer.main

from p4q_export import cli
from p4q_export.errors import CheckFailed, UserError

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("p4q-export")
# the installed console script when there is one: that is what users run
EXE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "p4q_export.cli"]

GROUP = typer.main.get_command(cli.app)
COMMANDS = dict(GROUP.commands)


def _is_argument(param) -> bool:
    return param.param_type_name == "argument"


def _is_number(cmd, param) -> bool:
    """An int or float option, from click's param type or (typer >= 0.2x has none) the annotation."""
    if getattr(getattr(param, "type", None), "name", None) in ("integer", "float"):
        return True
    ann = typing.get_type_hints(inspect.unwrap(cmd.callback)).get(param.name)
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        ann = args[0] if len(args) == 1 else None
    return ann in (int, float)


def _dummy(cmd, param) -> list[str]:
    """A well-formed value for a required param, so only the error under test is left."""
    value = "1" if _is_number(cmd, param) else "x"
    return [value] if _is_argument(param) else [param.opts[0], value]


def _error_hint(param) -> str:
    # the signature differs between click (ctx) and typer's vendored copy (no ctx)
    try:
        return param.get_error_hint()
    except TypeError:
        return param.get_error_hint(GROUP.make_context("p4q-export", [], resilient_parsing=True))


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, P4Q_NO_PROGRESS="1", NO_COLOR="1")
    return subprocess.run([*EXE, *args], capture_output=True, text=True, check=False, cwd=REPO, env=env, timeout=120)


def _assert_usage_error(proc: subprocess.CompletedProcess, usage: str, *problem: str) -> None:
    err = proc.stderr
    assert "Traceback" not in err, err
    assert proc.returncode == 2, (proc.returncode, err)
    assert proc.stdout == "", proc.stdout
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err  # one line, as every bad input
    assert f"(usage: {usage}" in lines[0] and "--help)" in lines[0], err
    for text in problem:
        assert text in lines[0], err


def _missing_cases() -> list:
    cases = []
    for name, cmd in COMMANDS.items():
        required = [p for p in cmd.params if p.required]
        for i, param in enumerate(required):
            # positionals cannot be skipped: for a missing one give those before it, none after
            given = [p for p in (required[:i] if _is_argument(param) else required) if _is_argument(p)]
            given += [p for p in required if not _is_argument(p) and p is not param]
            args = [a for p in given for a in _dummy(cmd, p)]
            cases.append(pytest.param(name, param, args, id=f"{name}-{param.name}"))
    return cases


def _wrong_type_cases() -> list:
    cases = []
    for name, cmd in COMMANDS.items():
        option = next((p for p in cmd.params if not _is_argument(p) and not getattr(p, "is_flag", False)
                       and not getattr(p, "count", False) and _is_number(cmd, p)), None)
        if option is not None:
            required = [a for p in cmd.params if p.required for a in _dummy(cmd, p)]
            cases.append(pytest.param(name, option, required, id=f"{name}-{option.name}"))
    return cases


def test_commands_found():
    assert {"eval", "train", "export"} <= set(COMMANDS)
    assert _wrong_type_cases() and _missing_cases()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_unknown_option(name):
    required = [a for p in COMMANDS[name].params if p.required for a in _dummy(COMMANDS[name], p)]
    proc = _run(name, "--no-such-option", *required)
    _assert_usage_error(proc, f"p4q-export {name} ", "No such option", "--no-such-option")


@pytest.mark.parametrize(("name", "param", "args"), _missing_cases())
def test_missing_required(name, param, args):
    proc = _run(name, *args)
    kind = "argument" if _is_argument(param) else "option"
    _assert_usage_error(proc, f"p4q-export {name} ", f"Missing {kind}", _error_hint(param))


@pytest.mark.parametrize(("name", "option", "required"), _wrong_type_cases())
def test_wrong_type(name, option, required):
    proc = _run(name, option.opts[0], "abc", *required)
    _assert_usage_error(proc, f"p4q-export {name} ", "Invalid value", option.opts[0])


def test_unknown_command():
    proc = _run("nosuchcommand")
    _assert_usage_error(proc, "p4q-export ", "No such command", "nosuchcommand")


@pytest.mark.parametrize("args", [["--help"], ["eval", "--help"]], ids=["root", "eval"])
def test_help_exits_0(args):
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "Traceback" not in proc.stderr


# main()'s mapping of library errors, in-process on a stand-in app (no subprocess, no torch)
_fake = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@_fake.command("user")
def _user() -> None:
    raise UserError("bad input here")


@_fake.command("check")
def _check() -> None:
    raise CheckFailed("cosine 0.5 < 0.99")


@_fake.command("bug")
def _bug() -> None:
    raise RuntimeError("a real bug")


def _main(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(cli, "app", _fake)
    monkeypatch.setattr(sys, "argv", ["p4q-export", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return exc.value.code


def test_user_error_is_one_line_exit_2(monkeypatch, capsys):
    assert _main(monkeypatch, "user") == 2
    assert capsys.readouterr().err == "error: bad input here\n"


def test_check_failed_exits_1(monkeypatch, capsys):
    assert _main(monkeypatch, "check") == 1
    assert capsys.readouterr().err == "check failed: cosine 0.5 < 0.99\n"


def test_real_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(cli, "app", _fake)
    monkeypatch.setattr(sys, "argv", ["p4q-export", "bug"])
    with pytest.raises(RuntimeError, match="a real bug"):
        cli.main()


def test_importing_the_cli_loads_neither_torch_nor_numpy():
    """`--help` and usage errors stay fast: the heavy libraries load inside the commands."""
    code = "import sys, p4q_export.cli; print(sorted({'torch', 'numpy', 'onnx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
