"""tests/_fork.py: a run forked from a parent that has imported torch and Lightning is what
``python SCRIPT`` started by the test would be, only without the imports' cost.

Each test runs tests/scripts/fork_probe.py both ways, fresh (``subprocess.run``) and forked
(``run_forked``), and compares what the two processes saw and how they ended. The parent that
preloads a light module runs in the core environment; the one with torch and Lightning, as the
Trainer tests use it, in the environment that runs the ``torch`` marker (lightning26).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._fork import lightning, run_forked
from tests._helpers import SCRIPTS

PROBE = SCRIPTS / "fork_probe.py"
LIGHT = ("fsspec",)  # a dependency of the package: in every environment
TORCH = lightning()  # torch, Lightning and its CLI, as the Lightning tests preload
PRELOADS = [
    pytest.param(LIGHT, id="light"),
    pytest.param(TORCH, id="torch-lightning", marks=pytest.mark.torch),
]
# what only a fork changes: the process, its seeds, and that the preloaded modules were there already
DIFFERENT = {"pid", "random", "torch_seed", "preloaded"}
# the runs of one parent share its hash seed: with PYTHONHASHSEED unset, fresh runs each draw one (tox sets it)
FIXED_HASH = {"PYTHONHASHSEED": "0"}
Run = tuple[subprocess.CompletedProcess[str], dict[str, Any]]


def needs(preload: tuple[str, ...]) -> None:
    for module in preload:
        pytest.importorskip(module)


def probe(
    way: str, folder: Path, preload: tuple[str, ...], how: str = "exit:0", *, env: dict[str, str] | None = None
) -> Run:
    """fork_probe.py in ``folder``, ``way`` = "fresh" or "forked"; its result and its report."""
    report = folder / "report.json"
    report.unlink(missing_ok=True)
    args = [str(PROBE), str(report), ",".join(preload), how]
    if way == "fresh":
        cmd = [sys.executable, *args]
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False)
    else:
        proc = run_forked(args, preload=preload, cwd=folder, env=env, timeout=120)
    assert report.exists(), proc.stderr
    return proc, json.loads(report.read_text())


def both(folder: Path, preload: tuple[str, ...], how: str = "exit:0", **kwargs: Any) -> Iterator[Run]:
    return (probe(way, folder, preload, how, **kwargs) for way in ("fresh", "forked"))


def same(fresh: dict[str, Any], forked: dict[str, Any]) -> dict[str, Any]:
    return {k: (fresh[k], forked[k]) for k in fresh.keys() - DIFFERENT if fresh[k] != forked[k]}


@pytest.mark.parametrize("preload", PRELOADS)
def test_a_forked_run_sees_and_prints_what_a_fresh_one_does(
    tmp_path: Path, preload: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    needs(preload)
    monkeypatch.setenv("BESTLINK_FORK_PROBE", "of an earlier run")
    probe("forked", tmp_path, preload)  # a server may start here, with this environment
    env = {k: v for k, v in os.environ.items() if k != "BESTLINK_FORK_PROBE"}
    env |= {"BESTLINK_OTHER": "this run's", **FIXED_HASH}
    (fresh, seen_fresh), (forked, seen_forked) = both(tmp_path, preload, env=env)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.returncode == 0 and "to stderr" in fresh.stderr
    # argv, cwd, sys.path[0], __main__, the environment (with what the imports set), signals, hash seed
    assert same(seen_fresh, seen_forked) == {}
    assert seen_forked["env"]["BESTLINK_OTHER"] == "this run's" and "BESTLINK_FORK_PROBE" not in seen_forked["env"]
    # the point of it: the forked run found the modules imported, the fresh one imported them itself
    assert (seen_fresh["preloaded"], seen_forked["preloaded"]) == ([], sorted(preload))


def test_python_dash_m_runs_as_a_fresh_one_does(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    args = ["-m", PROBE.stem, str(report), "", "exit:0"]
    env = {**os.environ, **FIXED_HASH}
    fresh = subprocess.run([sys.executable, *args], cwd=SCRIPTS, env=env, capture_output=True, text=True, check=False)
    seen_fresh = json.loads(report.read_text())
    forked = run_forked(args, preload=LIGHT, cwd=SCRIPTS, env=env)
    seen_forked = json.loads(report.read_text())
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert same(seen_fresh, seen_forked) == {}
    assert seen_forked["argv"][0] == str(PROBE) and seen_forked["path0"] == str(SCRIPTS)


@pytest.mark.parametrize(
    ("how", "status"),
    [("exit:0", 0), ("exit:3", 3), ("message", 1), ("raise", 1), ("interrupt", -signal.SIGINT), ("kill", -9)],
)
def test_a_forked_run_ends_as_a_fresh_one(tmp_path: Path, how: str, status: int) -> None:
    # the exit status, the message or the traceback (from the script's own frame on), the output
    (fresh, _), (forked, _) = both(tmp_path, LIGHT, how)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode == status
    if how == "raise":
        assert forked.stderr.endswith("ValueError: raised by the script\n")
        assert str(PROBE) in forked.stderr and "_fork.py" not in forked.stderr


def test_a_file_the_script_left_open_is_flushed_at_exit(tmp_path: Path) -> None:
    for way in ("fresh", "forked"):
        proc, _ = probe(way, tmp_path, LIGHT, "unclosed")
        assert proc.returncode == 0, proc.stderr
        left = tmp_path / "report.json.unclosed"
        assert left.read_text() == "written, never flushed by the script", way
        left.unlink()


@pytest.mark.parametrize("preload", PRELOADS)
def test_every_forked_run_has_its_own_seeds(tmp_path: Path, preload: tuple[str, ...]) -> None:
    needs(preload)
    _, one = probe("forked", tmp_path, preload)
    _, two = probe("forked", tmp_path, preload)
    assert one["random"] != two["random"]
    if "torch" in preload:
        assert one["torch_seed"] != two["torch_seed"]


@pytest.mark.parametrize("caller", ["sigint-ignored", "sigint-default", "sigusr1-blocked"])
def test_signals_are_those_a_child_of_the_caller_would_have(tmp_path: Path, caller: str) -> None:
    # a test run in the background (`cmd &` in a script) ignores SIGINT, and so do its children
    old = signal.getsignal(signal.SIGINT)
    if caller == "sigint-ignored":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    elif caller == "sigint-default":
        signal.signal(signal.SIGINT, signal.default_int_handler)
    else:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        (_, fresh), (_, forked) = both(tmp_path, LIGHT)
    finally:
        signal.signal(signal.SIGINT, old)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    assert (forked["signals"], forked["blocked"]) == (fresh["signals"], fresh["blocked"])
    expected = {"sigint-ignored": "ignored", "sigint-default": "default_int_handler"}
    if caller in expected:
        assert forked["signals"]["SIGINT"] == expected[caller]
    assert ("SIGUSR1" in forked["blocked"]) == (caller == "sigusr1-blocked")


def test_a_run_with_another_interpreter_setting_is_forked_from_a_parent_started_with_it(tmp_path: Path) -> None:
    hashes = {}
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}  # read once, when the interpreter starts
        (_, fresh), (_, forked) = both(tmp_path, LIGHT, env=env)
        assert forked["hash"] == fresh["hash"]
        hashes[seed] = forked["hash"]
    assert hashes["1"] != hashes["2"]


def test_a_timeout_kills_the_run_as_subprocess_run_does(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        run_forked([PROBE, report, "", "sleep"], preload=LIGHT, cwd=tmp_path, timeout=5)
    assert timed_out.value.timeout == 5
    assert timed_out.value.stderr == "to stderr\n"  # what it wrote before it was killed
    with pytest.raises(ProcessLookupError):
        os.kill(json.loads(report.read_text())["pid"], 0)  # killed and reaped before the error


def test_a_missing_cwd_is_refused_as_subprocess_run_does(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    with pytest.raises(FileNotFoundError):
        subprocess.run([sys.executable, PROBE], cwd=gone, check=False)
    with pytest.raises(FileNotFoundError):
        run_forked([PROBE], preload=LIGHT, cwd=gone)


def test_bestlink_fork_0_runs_a_fresh_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BESTLINK_FORK", "0")
    proc, seen = probe("forked", tmp_path, LIGHT)
    assert proc.returncode == 0 and seen["preloaded"] == []
