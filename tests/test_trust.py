"""What the core vouches for, and what it refuses to act on (issue 21): the files it keeps next to an
alias are never checkpoints; a kill at any system call never makes verify vouch for the wrong model;
locks and inputs that are not what they should be are clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests._helpers import write_ckpt

from lightning_bestlink import BestLinker, RecordError

BOOKKEEPING = {
    "record": "best.ckpt.bestlink.json",
    "lock": ".best.ckpt.bestlink.lock",
    "retention list": "best.ckpt.bestlink.retention.json",
    "temporary file": ".best.ckpt.bestlink-tmp-1-abcd",
}


@pytest.mark.parametrize("which", sorted(BOOKKEEPING))
def test_an_update_onto_a_file_kept_next_to_an_alias_is_refused_before_anything_changes(
    tmp_path: Path, which: str
) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    linker.update(1.0, write_ckpt(tmp_path / "a.ckpt", 1))
    record_before = (tmp_path / "best.ckpt.bestlink.json").read_bytes()
    name = BOOKKEEPING[which]
    if not (tmp_path / name).exists():
        (tmp_path / name).write_text("{}")
    with pytest.raises(ValueError, match=rf"path '.*{name}' is (the|a) .*, not a checkpoint"):
        linker.update(0.5, tmp_path / name)
    assert os.readlink(tmp_path / "best.ckpt") == "a.ckpt"
    assert (tmp_path / "best.ckpt.bestlink.json").read_bytes() == record_before


def test_a_link_that_leads_to_the_record_is_refused_too(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    linker.update(1.0, write_ckpt(tmp_path / "a.ckpt", 1))
    (tmp_path / "epoch=9.ckpt").symlink_to("best.ckpt.bestlink.json")
    with pytest.raises(ValueError, match=r"is the record of an alias \('best.ckpt.bestlink.json'\)"):
        linker.update(0.5, tmp_path / "epoch=9.ckpt")


def test_a_forged_state_naming_the_record_is_refused_when_loaded(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    linker.update(1.0, write_ckpt(tmp_path / "a.ckpt", 1))
    state = linker.state_dict()
    state.update(best_score=0.0, best_path=str(tmp_path / "best.ckpt.bestlink.json"))
    fresh = BestLinker(tmp_path / "best.ckpt")
    with pytest.raises(ValueError, match=r"state\['best_path'\] names the record of an alias, not a checkpoint"):
        fresh.load_state_dict(state)
    assert fresh.best_path is None


def test_a_forged_record_naming_itself_is_damaged_and_verify_says_so(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    linker.update(1.0, write_ckpt(tmp_path / "a.ckpt", 1))
    record_file = tmp_path / "best.ckpt.bestlink.json"
    record = json.loads(record_file.read_text())
    record["target"] = "best.ckpt.bestlink.json"
    record_file.write_text(json.dumps(record))
    (tmp_path / "best.ckpt").unlink()
    (tmp_path / "best.ckpt").symlink_to("best.ckpt.bestlink.json")
    with pytest.raises(RecordError, match=r"'target' names the record of an alias, not a checkpoint"):
        BestLinker.from_record(tmp_path / "best.ckpt")


def test_a_nul_byte_in_a_path_is_a_clear_error(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    with pytest.raises(ValueError, match=r"path must not contain a NUL byte, got '.*a\\x00b.ckpt'"):
        linker.update(1.0, str(tmp_path / "a\0b.ckpt"))
