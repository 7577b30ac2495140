"""The JSON record next to the alias."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests._helpers import write_ckpt

from lightning_bestlink import AliasConflictError, BestLinker, RecordError, _record, read_record


def make(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "alias": "best.ckpt",
        "target": "epoch=1.ckpt",
        "link": "symlink",
        "mode": "min",
        "score": 0.25,
        "unix_time": 1_700_000_000.5,
        "alias_id": None,
        "previous_alias_id": None,
        "target_id": None,
        "writer": {"host": "node1", "pid": 42, "id": "ab12"},
        "extra": {"monitor": "val_loss", "epoch": 1, "step": 10},
    }
    fields.update(overrides)
    return _record.make(**fields)


def test_schema() -> None:
    record = make()
    assert set(record) == {
        "format",
        "alias",
        "target",
        "link",
        "mode",
        "score",
        "time",
        "unix_time",
        "alias_id",
        "previous_alias_id",
        "target_id",
        "writer",
        "extra",
    }
    assert record["format"] == "lightning-bestlink/1"
    assert record["time"] == "2023-11-14T22:13:20.500000+00:00"


@pytest.mark.parametrize("score", [0.25, -3.0, math.inf, -math.inf])
def test_roundtrip(score: float) -> None:
    record = make(score=score, alias_id=[12, 34], extra={"best": [math.inf, 1]})
    text = _record.encode(record)
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))  # strict JSON
    back = _record.decode(text, "/x/best.ckpt.bestlink.json")
    assert back["score"] == score
    assert back["alias_id"] == [12, 34]
    assert back["extra"] == {"best": ["inf", 1]}  # extra infinities stay strings


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"format": "other/1"}', '{"score": 1}'])
def test_decode_refuses_foreign_files(text: str) -> None:
    with pytest.raises(AliasConflictError, match=r"'/x/r.json' exists but is not a lightning-bestlink record"):
        _record.decode(text, "/x/r.json")


RECORD_TEXT = '{"format": "lightning-bestlink/1", "target": "epoch=1.ckpt", "mode": "min", "score": 0.5%s}'


@pytest.mark.parametrize(
    ("tail", "named"),
    [
        (', "target": "epoch=2.ckpt", "score": 0.01', "'score', 'target'"),  # the last would win silently
        (', "extra": {"epoch": 1, "epoch": 2}', "'epoch'"),  # nested objects are checked too
        (', "mode": "min"', "'mode'"),  # even a repeat of the same value: the file was not written by us
    ],
)
def test_decode_refuses_repeated_keys(tail: str, named: str) -> None:
    with pytest.raises(RecordError) as caught:
        _record.decode(RECORD_TEXT % tail, "/x/best.ckpt.bestlink.json")
    message = str(caught.value)
    assert message.startswith("'/x/best.ckpt.bestlink.json' is not a readable lightning-bestlink record")
    assert f"repeats the key(s) {named} in one object" in message
    assert "nothing was changed" in message and "keep one value of each key" in message


def test_decode_names_a_few_repeated_keys_of_many() -> None:
    repeated = "".join(f', "k{i:02d}": 1, "k{i:02d}": 2' for i in range(40))
    with pytest.raises(RecordError, match=r"the key\(s\) 'k00', 'k01', 'k02', 'k03', 'k04' and 35 more in one"):
        _record.decode(RECORD_TEXT % repeated, "/x/r.json")


def test_a_record_with_repeated_keys_is_not_read_or_acted_on(tmp_path: Path) -> None:
    paths = [write_ckpt(tmp_path / f"epoch={i}.ckpt", i) for i in range(2)]
    linker = BestLinker(tmp_path / "best.ckpt", mode="min", link="symlink")
    linker.update(0.5, paths[0])
    record = Path(linker.record_path)
    text = record.read_text().rstrip()[:-1] + ', "target": "epoch=1.ckpt", "score": 0.01}\n'
    record.write_text(text)

    with pytest.raises(RecordError, match=r"best.ckpt.bestlink.json' .* repeats the key\(s\) 'score', 'target'"):
        read_record(tmp_path / "best.ckpt")
    with pytest.raises(RecordError, match="repeats the key"):
        BestLinker(tmp_path / "best.ckpt", mode="min", link="symlink").update(0.4, paths[1])
    assert record.read_text() == text  # nothing was changed
    assert os.readlink(tmp_path / "best.ckpt") == "epoch=0.ckpt"


def test_record_path() -> None:
    assert _record.record_path("/ckpt/best.ckpt") == "/ckpt/best.ckpt.bestlink.json"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ([1], "extra must be a dict with str keys"),
        ([2**20000], "extra must be a dict with str keys, got a list that cannot be shown"),
        ({1: "a"}, "extra must be a dict with str keys"),
        ({"a": {1, 2}}, "extra must hold JSON values"),
        ({"a": b"x"}, "extra must hold JSON values"),
        ({"a": {(1, 2): 3}}, "extra must hold JSON values"),  # a key the record's JSON cannot hold
        ({"a": [2**20000]}, r"got a dict that cannot be shown: Exceeds the limit \(4300 digits\)"),  # no repr
    ],
)
def test_check_extra(extra: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        _record.check_extra(extra)


class Score(float):
    """A subclass of float, as numpy's float64 is: JSON writes it as a number."""


def test_check_extra_accepts_json() -> None:
    extra = {"monitor": "val/loss", "epoch": 3, "nested": {"a": [1, 2.5, None, True, Score(0.5)]}, "inf": math.inf}
    assert _record.check_extra(extra) == extra
    assert _record.check_extra(None) == {}


NESTED_KEYS = [
    ({"per_class": {1: 0.9, "1": 0.8}}, "int 1", "extra['per_class']"),  # both are written as "1"
    ({"a": [{"b": {True: 1, "true": 2}}]}, "bool True", "extra['a'][0]['b']"),  # at any depth
    ({"a": ({"b": 1.5}, {"c": {None: 1, "null": 2}})}, "NoneType None", "extra['a'][1]['c']"),
    ({"a": {1.0: 1, "1.0": 2}}, "float 1.0", "extra['a']"),
    ({"a": {0: 0.9, 1: 0.8}}, "int 0", "extra['a']"),  # no collision yet: the rule is str keys at every depth
]


@pytest.mark.parametrize(("extra", "key", "where"), NESTED_KEYS)
def test_check_extra_refuses_keys_that_are_not_str_at_any_depth(extra: Any, key: str, where: str) -> None:
    """JSON writes every key as a string, so 1 and "1" would become one repeated key, a record that
    decode() then refuses: refused up front instead, naming the key, where it is and the fix."""
    with pytest.raises(TypeError) as caught:
        _record.check_extra(extra)
    message = str(caught.value)
    assert message.startswith(f"extra must have str keys at every depth, got the key {key} in {where}: ")
    assert "nothing was written. Convert the keys with str() first" in message


def test_an_extra_with_colliding_keys_writes_nothing(tmp_path: Path) -> None:
    paths = [write_ckpt(tmp_path / f"epoch={i}.ckpt", i) for i in range(2)]
    linker = BestLinker(tmp_path / "best.ckpt", mode="min", link="symlink")
    linker.update(0.5, paths[0], extra={"per_class": {"1": 0.8}})
    text = Path(linker.record_path).read_text()

    with pytest.raises(TypeError, match=r"got the key int 1 in extra\['per_class'\]"):
        linker.update(0.4, paths[1], extra={"per_class": {1: 0.9, "1": 0.8}})
    assert Path(linker.record_path).read_text() == text  # nothing was written
    assert os.readlink(tmp_path / "best.ckpt") == "epoch=0.ckpt" and linker.best_score == 0.5
    # the record stays one that a new process reads and moves on
    assert BestLinker(tmp_path / "best.ckpt", mode="min", link="symlink").update(0.4, paths[1])


@given(
    st.dictionaries(
        st.text(), st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none(), st.just(2**4000))
    )
)
def test_a_flat_extra_is_measured_by_a_bound_never_below_its_size(extra: dict[str, Any]) -> None:
    """check_extra does not encode an extra of plain scalars: it bounds its size instead."""
    assert len(_record._json(extra)) <= _record._flat_size_bound(extra)


@pytest.mark.parametrize("char", ["x", "\U0001f600"])  # 1 and 12 bytes of JSON
def test_an_extra_too_large_for_a_record_is_refused(char: str) -> None:
    extra = {"a": char * (_record.EXTRA_LIMIT // (len(_record._json(char)) - 2) + 1)}  # without the quotes
    with pytest.raises(ValueError, match=r"extra must encode to at most 262144 bytes of JSON, got \d+; keep it small"):
        _record.check_extra(extra)


def test_record_follows_each_update(tmp_path: Path) -> None:
    paths = [write_ckpt(tmp_path / f"epoch={i}.ckpt", i) for i in range(3)]
    linker = BestLinker(tmp_path / "best.ckpt", mode="max", link="copy")
    assert read_record(tmp_path / "best.ckpt") is None
    for i, path in enumerate(paths):
        linker.update(i / 10, path, extra={"monitor": "acc", "epoch": i, "step": 10 * i})
        on_disk = json.loads(Path(linker.record_path).read_text())
        assert on_disk["target"] == f"epoch={i}.ckpt"  # relative to the alias's folder
        assert on_disk["score"] == i / 10 and on_disk["mode"] == "max" and on_disk["link"] == "copy"
        assert on_disk["alias"] == "best.ckpt"
        assert on_disk["extra"] == {"monitor": "acc", "epoch": i, "step": 10 * i}
        assert on_disk["alias_id"] is not None  # the copy's identity: ownership on a rerun
        meta = read_record(str(tmp_path / "best.ckpt"))
        assert meta is not None and meta["target"] == str(path)


def test_from_metadata(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a.ckpt", 1)
    BestLinker(tmp_path / "best.ckpt", mode="max", link="copy").update(0.9, a)
    linker = BestLinker.from_record(tmp_path / "best.ckpt")
    assert (linker.mode, linker.link, linker.best_score, linker.best_path) == ("max", "copy", 0.9, str(a))
    assert linker.verify().ok
    with pytest.raises(FileNotFoundError, match="no lightning-bestlink record"):
        BestLinker.from_record(tmp_path / "other.ckpt")
