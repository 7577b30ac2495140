"""``lightning-bestlink watch``: a line per new best while another process trains.

The training run is tests/scripts/cli_writer.py, driven line by line; ``watch`` runs as a
user runs it. No timing is asserted: the tests wait for what they expect (with a generous
timeout), never for a duration.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest
from tests._cli import SCRIPTS, Writer, cli, held, holds, log_lines, make_run, probe, watch
from tests._helpers import write_ckpt

from lightning_bestlink import BestLinker, LatestLinker

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals and symlinks")

FAST = ("--interval", "0.02")


def test_follows_a_run_across_a_restart(tmp_path: Path) -> None:
    alias = tmp_path / "best.ckpt"
    log = tmp_path / "exec.log"
    run = Writer(alias)
    assert run.update(0.9, "epoch=0.ckpt")  # the best before watch starts: not an event
    w = watch(tmp_path, "--json", "--count", "3", *FAST, "--exec", probe(log, "{target}", "{score}", "{alias}"))
    try:
        w.err.until("watch: following")

        assert run.update(0.5, "epoch=1.ckpt")
        first = json.loads(w.out.next() or "")
        assert (first["event"], first["target"], first["score"]) == ("new-best", str(tmp_path / "epoch=1.ckpt"), 0.5)
        assert (first["alias"], first["kind"], first["mode"]) == (str(alias), "symlink", "min")
        assert first["previous"] == {"target": str(tmp_path / "epoch=0.ckpt"), "score": 0.9}
        assert first["extra"] == {"monitor": "val_loss", "epoch": 1}

        assert not run.update(0.7, "epoch=2.ckpt")  # not better: nothing changes, nothing to report
        assert run.update(0.3, "epoch=3.ckpt")
        second = json.loads(w.out.next() or "")
        assert (second["target"], second["score"]) == (str(tmp_path / "epoch=3.ckpt"), 0.3)

        # training restarts; the alias was deleted meanwhile, so the new process rebuilds it and
        # rewrites the record for the same best: that is not a new best
        run.stop()
        alias.unlink()
        run = Writer(alias, "symlink", "--resume")
        assert os.readlink(alias) == "epoch=3.ckpt"
        assert not run.update(0.35, "epoch=4.ckpt")
        assert run.update(0.1, "epoch=5.ckpt")
        third = json.loads(w.out.next() or "")
        assert (third["target"], third["score"]) == (str(tmp_path / "epoch=5.ckpt"), 0.1)

        assert w.wait() == 0  # --count 3
        assert w.out.next() is None  # and nothing else on stdout
    finally:
        run.stop()
        w.stop()
    entries = log_lines(log)
    assert [(e["name"], e["content"], e["argv"][1:]) for e in entries] == [
        (name, f"{name} {score}", [score, str(alias)]) for name, score in (("epoch=1.ckpt", "0.5"),
                                                                           ("epoch=3.ckpt", "0.3"),
                                                                           ("epoch=5.ckpt", "0.1"))
    ]  # fmt: skip
    assert all(held(e["argv"][0], tmp_path) for e in entries)  # {target}: the checkpoint, held
    assert not holds(tmp_path)  # each hold was released when its command ended
    assert "probe ran for" in w.err.text()  # the command's stdout went to stderr


@pytest.mark.parametrize("link", ["symlink", "hardlink", "copy"])
def test_a_new_best_is_reported_once_the_alias_points_at_it(tmp_path: Path, link: str) -> None:
    alias = tmp_path / "best.ckpt"
    log = tmp_path / "exec.log"
    counts = tmp_path / "counts.json"
    run = Writer(alias, link, "--pause")
    env = {"BESTLINK_TEST_COUNTS": str(counts), "BESTLINK_TEST_FOLDER": str(tmp_path)}
    w = watch(alias, "--json", "--count", "1", *FAST, "--exec", probe(log, "{target}", "{alias}"), env=env, faults=True)
    try:
        w.err.until("waiting for")  # no record yet: the run has not started
        run.send("update 0.5 epoch=0.ckpt")
        assert run.out.next() == "paused\n"  # the record is written, the alias is not published yet
        looks = json.loads(counts.read_text())["record_stats"] if counts.exists() else 0
        while not counts.exists() or json.loads(counts.read_text())["record_stats"] < looks + 20:
            assert w.proc.poll() is None
            assert not w.out.pending(), "reported before the alias pointed at it"
            time.sleep(0.01)  # a pause, not a measure: the watch shares the CPU
        assert not w.out.pending()
        run.send("go")
        assert run.out.next() == "True\n"
        event = json.loads(w.out.next() or "")
        assert event["target"] == str(tmp_path / "epoch=0.ckpt")
        assert w.wait() == 0
    finally:
        run.stop()
        w.stop()
    (entry,) = log_lines(log)
    assert entry["alias_is_target"] is True
    assert "the alias does not point at it yet" in w.err.text()


@pytest.mark.parametrize("link", ["symlink", "copy"])
def test_a_fast_run_gives_only_real_bests_in_order(tmp_path: Path, link: str) -> None:
    alias = tmp_path / "best.ckpt"
    run = Writer(alias, link)
    w = watch(alias, "--json", "--interval", "0.001")
    try:
        w.err.until("waiting for")
        made = []  # (target, score) of every update that became the best, in order
        for epoch in range(120):
            score = 1.0 / (1 + epoch) if epoch % 3 else 2.0  # every third one is worse
            if run.update(score, f"epoch={epoch}.ckpt"):
                made.append((str(tmp_path / f"epoch={epoch}.ckpt"), score))
        seen = []
        while not seen or seen[-1] != made[-1]:
            event = json.loads(w.out.next() or "")
            seen.append((event["target"], event["score"]))
            with open(event["target"]) as fh:  # the checkpoint it names holds the score it reports
                assert fh.read().split()[1] == repr(event["score"])
    finally:
        run.stop()
        w.stop()
    assert len(made) == 81  # epoch 0 (the first offer), and every epoch not a multiple of 3
    index = [made.index(item) for item in seen]  # every event was a real best (coalescing may skip some)
    assert index == sorted(set(index))  # in order, none twice, never back to an older best


def test_looks_are_cheap(tmp_path: Path) -> None:
    make_run(tmp_path)
    counts = tmp_path / "counts.json"
    env = {"BESTLINK_TEST_COUNTS": str(counts), "BESTLINK_TEST_FOLDER": str(tmp_path)}
    w = watch(tmp_path, "--count", "1", "--interval", "0.005", env=env, faults=True)
    try:
        w.err.until("watch: following")
        while not counts.exists() or json.loads(counts.read_text())["record_stats"] < 50:
            assert w.proc.poll() is None, w.err.pending()
            time.sleep(0.01)  # a pause, not a measure: the watch shares the CPU
        run = Writer(tmp_path / "best.ckpt")
        assert run.update(0.1, "epoch=9.ckpt")
        run.stop()
        assert "epoch=9.ckpt" in (w.out.next() or "")
        assert w.wait() == 0
    finally:
        w.stop()
    final = json.loads(counts.read_text())
    assert final["record_stats"] >= 50
    assert final["listings"] == 1  # DIR is listed once, to find its alias; then never again
    assert final["record_opens"] <= 12  # read at start and on the change only, not once per look


def test_text_lines_and_ctrl_c(tmp_path: Path) -> None:
    make_run(tmp_path / "ckpt")
    w = watch("ckpt", *FAST, cwd=tmp_path)
    run = Writer(tmp_path / "ckpt" / "best.ckpt")
    alias = os.path.join("ckpt", "best.ckpt")
    try:
        line = w.err.until("watch: following")
        assert line == f"watch: following {alias} (best now: epoch=2.ckpt); a look every 0.02 s, Ctrl-C to stop\n"
        assert run.update(0.1, "epoch=7.ckpt")
        assert w.out.next() == f"new best  {alias} -> epoch=7.ckpt (symlink, val_loss=0.1, min, epoch 7)\n"
        w.proc.send_signal(signal.SIGINT)
        assert w.wait() == 130
        assert w.err.until("interrupted") == "watch: interrupted after 1 new best\n"
        assert w.out.next() is None
        assert "Traceback" not in w.err.text()
    finally:
        run.stop()
        w.stop()


def test_a_failing_command_is_reported_and_the_watch_goes_on(tmp_path: Path) -> None:
    make_run(tmp_path)
    log = tmp_path / "exec.log"
    run = Writer(tmp_path / "best.ckpt")
    w = watch(tmp_path, "--count", "2", *FAST, "--exec", probe(log, "{target}"), env={"PROBE_EXIT": "3"})
    try:
        w.err.until("watch: following")
        for epoch, score in ((8, 0.2), (9, 0.1)):
            assert run.update(score, f"epoch={epoch}.ckpt")
            assert f"epoch={epoch}.ckpt" in (w.out.next() or "")
            failed = w.err.until("--exec")
            assert failed.endswith(f"epoch={epoch}.ckpt exited with 3; still watching\n")
        assert w.wait() == 0
    finally:
        run.stop()
        w.stop()
    assert len(log_lines(log)) == 2


def test_exec_runs_no_shell(tmp_path: Path) -> None:
    make_run(tmp_path)
    log = tmp_path / "exec.log"
    run = Writer(tmp_path / "best.ckpt")
    w = watch(tmp_path, "--count", "1", *FAST, "--exec", probe(log, "{target}", "{score}"))
    name = "epoch=1 $(touch pwned);x.ckpt"
    try:
        w.err.until("watch: following")
        assert run.update(0.01, name)  # a name a shell would run a command from
        assert "pwned" in (w.out.next() or "")
        assert w.wait() == 0
    finally:
        run.stop()
        w.stop()
    (entry,) = log_lines(log)
    assert (entry["name"], entry["argv"][1:]) == (name, ["0.01"])  # one argument each, as recorded
    assert held(entry["argv"][0], tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_waits_for_a_run_that_has_not_started(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "exp"  # does not exist yet
    w = watch(folder, "--json", "--count", "1", *FAST)
    run: Writer | None = None
    try:
        assert "waiting for one to appear" in w.err.next()
        folder.mkdir(parents=True)
        run = Writer(folder / "best-val.ckpt")  # any name: found by its record
        assert run.update(0.4, "epoch=0.ckpt")  # the first best after watch started is an event
        assert json.loads(w.out.next() or "")["target"] == str(folder / "epoch=0.ckpt")
        assert w.wait() == 0
    finally:
        if run is not None:
            run.stop()
        w.stop()


def test_a_damaged_record_is_reported_and_the_watch_goes_on(tmp_path: Path) -> None:
    make_run(tmp_path)
    record = tmp_path / "best.ckpt.bestlink.json"
    kept = record.read_bytes()
    w = watch(tmp_path / "best.ckpt", "--count", "1", *FAST)
    try:
        w.err.until("watch: following")
        record.unlink()
        os.mkfifo(record)  # reading it would block
        assert "best.ckpt.bestlink.json is not a regular file but a FIFO" in w.err.until("FIFO")
        os.unlink(record)
        record.write_text("[" * 100_000)
        assert "best.ckpt.bestlink.json" in w.err.until("watch: ")
        record.write_bytes(kept)  # restored: the same best, not an event
        run = Writer(tmp_path / "best.ckpt")
        assert run.update(0.2, "epoch=6.ckpt")
        run.stop()
        assert "epoch=6.ckpt" in (w.out.next() or "")
        assert w.wait() == 0
    finally:
        w.stop()


def test_a_hostile_record_at_start(tmp_path: Path) -> None:
    make_run(tmp_path)
    record = tmp_path / "best.ckpt.bestlink.json"
    kept = record.read_bytes()
    record.unlink()
    os.mkfifo(record)
    w = watch(tmp_path / "best.ckpt", "--json", "--count", "1", *FAST)
    try:
        w.err.until("watch: following")
        assert "best.ckpt.bestlink.json is not a regular file but a FIFO" in w.err.next()
        record.unlink()
        record.write_bytes(kept)  # readable again: the best it names was never reported
        assert json.loads(w.out.next() or "")["target"] == str(tmp_path / "epoch=2.ckpt")
        assert w.wait() == 0
    finally:
        w.stop()


def test_usage_errors(tmp_path: Path) -> None:
    make_run(tmp_path)
    for args, message in (
        (("--interval", "0"), "--interval must be a positive number of seconds, got 0.0"),
        (("--interval", "nan"), "--interval must be a positive number of seconds"),
        (("--count", "0"), "--count must be at least 1, got 0"),
        (("--exec", "no-such-command-here {target}"), "command 'no-such-command-here' not found"),
        (("--exec", "python 'unbalanced"), "cannot be split into arguments"),
        (("--exec", ""), "--exec needs a command"),
    ):
        result = cli("watch", tmp_path, *args, timeout=60)
        assert (result.returncode, result.stdout) == (2, ""), args
        assert message in result.stderr, (args, result.stderr)
    from lightning_bestlink import BestLinker

    BestLinker(tmp_path / "best-acc.ckpt", mode="max").update(0.5, tmp_path / "epoch=0.ckpt")
    several = cli("watch", tmp_path, "--count", "1", timeout=60)
    assert several.returncode == 1 and "holds 2 aliases" in several.stderr


# --- the checkpoint a command is given stays readable until it exits -----------------------------


@pytest.mark.parametrize("link", ["symlink", "hardlink", "copy"])
def test_exec_reads_the_checkpoint_even_if_training_deletes_it_as_the_command_starts(tmp_path: Path, link: str) -> None:
    alias = tmp_path / "best.ckpt"
    log = tmp_path / "exec.log"
    run = Writer(alias, link)
    assert run.update(0.9, "epoch=0.ckpt")
    w = watch(tmp_path, "--count", "1", *FAST, "--exec", probe(log, "{target}", "{alias}"), env={"PROBE_DELETE": "1"})
    try:
        w.err.until("watch: following")
        assert run.update(0.5, "epoch=1.ckpt")
        assert "epoch=1.ckpt" in (w.out.next() or "")
        assert w.wait() == 0
    finally:
        run.stop()
        w.stop()
    (entry,) = log_lines(log)
    assert entry["deleted"] == str(tmp_path / "epoch=1.ckpt")  # gone before the command read a byte of it
    assert not (tmp_path / "epoch=1.ckpt").exists()
    assert (entry["name"], entry["content"]) == ("epoch=1.ckpt", "epoch=1.ckpt 0.5")  # its own name, its bytes
    assert held(entry["argv"][0], tmp_path)
    assert not holds(tmp_path)  # released once the command exited: nothing left behind


def test_exec_holds_a_directory_checkpoint_as_a_tree(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")  # this process trains
    write_ckpt(tmp_path / "step=100", 1, kind="dir")
    assert linker.update(0.9, tmp_path / "step=100")
    log = tmp_path / "exec.log"
    command = shlex.join([sys.executable, str(SCRIPTS / "cli_exec_tree.py"), str(log), "{target}"])
    w = watch(tmp_path, "--count", "1", *FAST, "--exec", command)
    try:
        w.err.until("watch: following")
        write_ckpt(tmp_path / "step=200", 2, kind="dir")
        assert linker.update(0.5, tmp_path / "step=200")
        assert "step=200" in (w.out.next() or "")
        assert w.wait() == 0
    finally:
        w.stop()
    seen = json.loads(log.read_text())
    assert seen["deleted"] == str(tmp_path / "step=200") and not (tmp_path / "step=200").exists()
    assert (seen["name"], seen["fill"]) == ("step=200", 2)  # every shard, complete, under its own name
    assert not holds(tmp_path)


def test_exec_skips_a_directory_the_alias_no_longer_names_once_held(tmp_path: Path) -> None:
    """A directory is held file by file: training deleting it meanwhile (after moving the alias on)
    would hand the command part of it. Held and no longer named, it is let go; the newer best runs."""
    linker = BestLinker(tmp_path / "best.ckpt")  # this process trains
    for step, fill in ((100, 1), (200, 2), (300, 3)):
        write_ckpt(tmp_path / f"step={step}", fill, kind="dir")
    assert linker.update(0.9, tmp_path / "step=100")
    log = tmp_path / "exec.log"
    command = shlex.join([sys.executable, str(SCRIPTS / "cli_exec_tree.py"), str(log), "{target}"])
    env = {"BESTLINK_TEST_MOVE_ON_STORAGE_HOLD": f"{tmp_path / 'best.ckpt'}|{tmp_path / 'step=300'}|0.1"}
    w = watch(tmp_path, "--count", "2", *FAST, "--exec", command, env=env, faults=True)
    try:
        w.err.until("watch: following")
        assert linker.update(0.5, tmp_path / "step=200")  # held, then moved on from and deleted
        assert "step=200" in (w.out.next() or "") and "step=300" in (w.out.next() or "")
        assert w.wait() == 0
    finally:
        w.stop()
    assert any("--exec not run for step=200: the alias moved on while it was held" in line for line in w.err.pending())
    seen = json.loads(log.read_text())
    assert (seen["name"], seen["fill"]) == ("step=300", 3)  # the newer best, complete
    assert not holds(tmp_path)


def test_a_killed_watch_leaves_a_hold_the_next_one_removes(tmp_path: Path) -> None:
    make_run(tmp_path)
    started = tmp_path / "started"
    w = watch(tmp_path, *FAST, "--exec", sleeper(started))
    run = Writer(tmp_path / "best.ckpt")
    try:
        w.err.until("watch: following")
        assert run.update(0.1, "epoch=7.ckpt")
        assert "epoch=7.ckpt" in (w.out.next() or "")
        while not started.exists():
            assert w.proc.poll() is None, w.err.pending()
            time.sleep(0.01)  # a pause, not a measure
        (stale,) = holds(tmp_path)
        w.proc.kill()  # no time to release anything: the hold stays, named after a process that ended
        w.wait()
        stop_sleepers(started)  # the command it ran (it holds watch's stderr open)
        w.stop()
        assert holds(tmp_path) == [stale]

        w = watch(tmp_path, "--count", "1", *FAST, "--exec", "true {target}")
        w.err.until("watch: following")
        assert run.update(0.05, "epoch=8.ckpt")
        assert "epoch=8.ckpt" in (w.out.next() or "")
        assert w.wait() == 0
    finally:
        stop_sleepers(started)
        run.stop()
        w.stop()
    assert not holds(tmp_path)  # the stale hold went with the next new best's, and that one too


@pytest.mark.parametrize("polite", [signal.SIGTERM, signal.SIGHUP], ids=["kill", "terminal closed"])
def test_a_terminated_watch_releases_its_hold(tmp_path: Path, polite: signal.Signals) -> None:
    make_run(tmp_path)
    started = tmp_path / "started"
    w = watch(tmp_path, *FAST, "--exec", sleeper(started))
    run = Writer(tmp_path / "best.ckpt")
    try:
        w.err.until("watch: following")
        assert run.update(0.1, "epoch=7.ckpt")
        while not started.exists():
            assert w.proc.poll() is None, w.err.pending()
            time.sleep(0.01)  # a pause, not a measure
        assert len(holds(tmp_path)) == 1
        w.proc.send_signal(polite)
        assert w.wait() == 128 + polite
        assert not pids_running(started)  # its command was stopped with it
    finally:
        stop_sleepers(started)
        run.stop()
        w.stop()
    assert not holds(tmp_path)


def sleeper(started: Path) -> str:
    """An --exec CMD that creates ``started``, then sleeps (a long evaluation)."""
    code = "import sys, time; open(sys.argv[1], 'w').close(); time.sleep(600)"
    return shlex.join([sys.executable, "-c", code, str(started), "{target}"])


def stop_sleepers(started: Path) -> None:
    for pid in pids_running(started):
        os.kill(pid, signal.SIGKILL)


def pids_running(marker: Path) -> list[int]:
    """The processes whose command line names ``marker`` (the commands a killed watch left running)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if os.fsencode(marker) in fh.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_watch_dir_follows_the_best_alias_next_to_a_latest_one(tmp_path: Path) -> None:
    best, last = BestLinker(tmp_path / "best.pt", mode="max"), LatestLinker(tmp_path / "last.pt")
    for epoch, score in enumerate([0.5, 0.9]):
        (tmp_path / f"epoch={epoch}.pt").write_bytes(b"w")
        best.update(score, tmp_path / f"epoch={epoch}.pt")
        last.update(epoch, tmp_path / f"epoch={epoch}.pt")
    w = watch(tmp_path, "--json", "--count", "1", *FAST)
    try:
        assert f"following {tmp_path / 'best.pt'}" in w.err.until("watch: following")
        for epoch, score in ((2, 0.7), (3, 0.95)):  # 2 moves only last.pt: not an event
            (tmp_path / f"epoch={epoch}.pt").write_bytes(b"w")
            best.update(score, tmp_path / f"epoch={epoch}.pt")
            last.update(epoch, tmp_path / f"epoch={epoch}.pt")
        event = json.loads(w.out.next() or "")
        assert (event["alias"], event["target"]) == (str(tmp_path / "best.pt"), str(tmp_path / "epoch=3.pt"))
        assert w.wait() == 0
    finally:
        w.stop()
