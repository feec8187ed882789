"""The ``medrobust`` command-line conventions shared by every subcommand.

--version, -v/-q before or after the subcommand, fast --help, required flags shown as required,
and one error convention: user errors print one line on stderr and exit 2 without a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medrobust import __version__
from medrobust.cli import build_parser, main
from medrobust.commands import SUBCOMMANDS

SUBS = list(SUBCOMMANDS)
REPO = Path(__file__).resolve().parents[1]


def _minimal_argv(sub: str, path: str, out: str | None = None) -> list[str]:
    """``sub`` with every required flag filled in (numbers as 1, anything else as ``path``), ``--out`` as ``out``."""
    parser = build_parser()
    subparser = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[sub]
    argv = [sub]
    for action in subparser._actions:
        if not action.required or not action.option_strings:
            continue
        flag = action.option_strings[-1]
        value = out if flag == "--out" and out is not None else "1" if action.type in (int, float) or "int" in getattr(action.type, "__name__", "") else path
        argv += [flag, value]
    if sub == "sensitivity":  # its required flags are checked by the command (they are optional with --list-families)
        argv += ["--model", path, "--data", path, "--out", out if out is not None else path]
    return argv


def _run(*argv: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medrobust", *argv], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"medrobust {__version__}"


@pytest.mark.parametrize("argv", [["--help"], *[[s, "--help"] for s in SUBS]])
def test_help_is_fast_and_imports_no_heavy_module(argv):
    """--help must not import torch/MONAI: < 2 s on a quiet machine; the bound is generous for a busy one."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from medrobust.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'numpy', 'pandas', 'scipy', 'matplotlib') if m in sys.modules)\n"
        "print('HEAVY', heavy, 'SECONDS', time.perf_counter() - t, file=sys.stderr)\n"
    )
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    assert "HEAVY [] " in r.stderr, r.stderr
    assert "usage: medrobust" in r.stdout
    assert wall < 10, f"{argv}: {wall:.1f} s"


@pytest.mark.parametrize(
    "sub, flags",
    [("metrics", ["--model", "--data", "--out"]), ("simulate", ["--n", "--out"]), ("sensitivity", ["--model", "--data", "--out"])],
)
def test_required_flags_shown_as_required(sub, flags, capsys):
    with pytest.raises(SystemExit):
        main([sub, "--help"])
    out = capsys.readouterr().out
    section = out[out.index("required") :]
    for flag in flags:
        assert f"  {flag} " in section, f"{flag} not in the required section of `medrobust {sub} --help`"


@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("flag, attr", [("-v", "verbose"), ("-q", "quiet"), ("--verbose", "verbose"), ("--quiet", "quiet")])
@pytest.mark.parametrize("sub", SUBS)
def test_verbosity_before_or_after_the_subcommand(sub, flag, attr, position):
    base = _minimal_argv(sub, "p", "o")[1:]
    argv = [flag, sub, *base] if position == "before" else [sub, *base, flag]
    args = build_parser().parse_args(argv)
    assert getattr(args, attr) is True
    other = {"verbose": "quiet", "quiet": "verbose"}[attr]
    assert getattr(args, other) is False


def _one_line_error(r_or_err: str, sub: str) -> str:
    lines = [ln for ln in r_or_err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r_or_err
    assert lines[0].startswith(f"medrobust {sub}: error: "), lines[0]
    assert "Traceback" not in r_or_err
    return lines[0]


def _out_cases(tmp_path):
    existing_file = tmp_path / "a_file.txt"
    existing_file.write_text("x")
    return {
        "an existing file": (str(existing_file), "exists and is not a folder"),
        "under a file": (str(existing_file / "sub"), "cannot create the folder"),
        "not creatable": ("/proc/medrobust_no_such/out", "cannot create the folder"),
    }


def _argv(sub: str, out: str, tmp_path) -> list[str]:
    # path-valued flags get a real bundle, so that --out is the only thing wrong
    return _minimal_argv(sub, str(REPO / "bundles" / "lesion_classification"), out)


SUBS_WITH_OUT = [s for s in SUBS if "--out" in _minimal_argv(s, "p", "o")]


@pytest.mark.parametrize("case", ["an existing file", "under a file", "not creatable"])
@pytest.mark.parametrize("sub", SUBS_WITH_OUT)
def test_bad_out_is_one_line_exit_2(sub, case, tmp_path, capsys):
    out, message = _out_cases(tmp_path)[case]
    assert main(_argv(sub, out, tmp_path)) == 2
    line = _one_line_error(capsys.readouterr().err, sub)
    assert message in line and "--out" in line


@pytest.mark.parametrize("sub", SUBS_WITH_OUT)
def test_unwritable_out_folder(sub, tmp_path, capsys):
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        assert main(_argv(sub, str(ro / "run"), tmp_path)) == 2
        assert "not writable" in _one_line_error(capsys.readouterr().err, sub)
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize(
    "argv, sub, message",
    [
        (["metrics", "--model", "m", "--data", "d", "--out", "OUT", "--measures", "colour"], "metrics", "--measures: unknown"),
        (["metrics", "--model", "m", "--data", "d", "--out", "OUT", "--label-map", "0-1"], "metrics", "--label-map"),
        (["metrics", "--model", "m", "--data", "d", "--out", "OUT", "--measures", "purification"], "metrics", "--robust-model"),
        (["sensitivity", "--data", "d", "--out", "OUT"], "sensitivity", "--model required"),
        (["sensitivity", "--model", "m", "--data", "d", "--out", "OUT", "--severities", "low"], "sensitivity", "--severities"),
        (["sensitivity", "--model", "MISSING", "--data", "MISSING", "--out", "OUT"], "sensitivity", "MISSING"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, sub, message, tmp_path, capsys):
    argv = [str(tmp_path / a) if a in ("OUT", "MISSING") else a for a in argv]
    assert main(argv) == 2
    assert message in _one_line_error(capsys.readouterr().err, sub)


@pytest.mark.parametrize(
    "argv, sub",
    [(["metrics", "--data", "d"], "metrics"), (["simulate", "--n", "0", "--out", "o"], "simulate"),
     (["sensitivity", "--batch-size", "x"], "sensitivity")],
)  # fmt: skip
def test_argparse_errors_are_one_line_exit_2(argv, sub, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    _one_line_error(capsys.readouterr().err, sub)


def test_error_convention_in_a_real_process(tmp_path):
    """Through ``python -m medrobust``: one stderr line, exit 2, no traceback; -v adds the traceback."""
    f = tmp_path / "exists.txt"
    f.write_text("")
    r = _run("simulate", "--n", "1", "--out", str(f))
    assert r.returncode == 2
    _one_line_error(r.stderr, "simulate")
    r = _run("simulate", "--n", "1", "--out", str(f), "-v")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_no_subcommand_prints_help_exit_2(capsys):
    assert main([]) == 2
    assert "usage: medrobust" in capsys.readouterr().err
