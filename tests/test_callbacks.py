"""ModelCheckpointWithLinkBest on the Trainer, for both Lightning packages.

Each test runs once on ``lightning.pytorch`` and once on ``pytorch_lightning``
(whichever are installed): the adapter is one mixin on two base classes.
"""

# ruff: noqa: F811  (the pkg and cls fixtures come from tests/_lit.py; pytest passes them by name)
from __future__ import annotations

import json
import os
import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from tests._lit import _available, cls, make_module, pkg, trainer  # noqa: E402,F401

pytestmark = pytest.mark.lightning


def _flag(pkg: Any, minor: int) -> bool:
    from tests._compat import flag

    return flag(pkg.__name__, minor)


def resolve(path: str | Path) -> str:
    return os.path.realpath(path)


def alias_ok(ckpt: Any) -> None:
    """The alias exists, resolves to an existing file, and that file is best_model_path."""
    alias = ckpt.best_link_path
    assert os.path.exists(alias), f"{alias} missing"
    if os.path.islink(alias):
        assert resolve(alias) == resolve(ckpt.best_model_path)
    else:
        assert os.path.samefile(alias, ckpt.best_model_path) or (
            Path(alias).read_bytes() == Path(ckpt.best_model_path).read_bytes()
        )


def files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir() if not p.name.startswith(".")}


# --- construction ----------------------------------------------------------------


def test_is_a_model_checkpoint_and_seed_compatible(pkg: Any, cls: Any, tmp_path: Path) -> None:
    ckpt = cls(True, dirpath=tmp_path, monitor="val_loss")
    assert isinstance(ckpt, pkg.callbacks.ModelCheckpoint)
    assert cls.CHECKPOINT_NAME_BEST == "best"
    assert ckpt.save_best is True
    assert cls(dirpath=tmp_path).save_best is None
    pickle.dumps(ckpt)


def test_lazy_top_level_name() -> None:
    pytest.importorskip("lightning")
    import lightning_bestlink
    from lightning_bestlink.callbacks import ModelCheckpointWithLinkBest

    assert lightning_bestlink.ModelCheckpointWithLinkBest is ModelCheckpointWithLinkBest


def test_the_top_level_name_without_lightning_is_an_attribute_error() -> None:
    if _available("lightning"):
        pytest.skip("lightning is installed")
    import lightning_bestlink

    # getattr with a default and hasattr must work (jsonargparse looks names up this way)
    assert getattr(lightning_bestlink, "ModelCheckpointWithLinkBest", None) is None
    with pytest.raises(AttributeError, match=r"lightning_bestlink\.pytorch_lightning\.ModelCheckpointWithLinkBest"):
        _ = lightning_bestlink.ModelCheckpointWithLinkBest


@pytest.mark.parametrize("bad", ["yes", 1.5, "link", "Symlink"])
def test_bad_save_best_is_refused(cls: Any, bad: Any) -> None:
    with pytest.raises(ValueError, match=r"save_best must be .* got"):
        cls(save_best=bad)


def test_signature_lists_save_best_every_model_checkpoint_parameter_and_best_name(pkg: Any, cls: Any) -> None:
    import inspect
    import typing

    stock = list(inspect.signature(pkg.callbacks.ModelCheckpoint).parameters.values())
    ours = list(inspect.signature(cls).parameters.values())
    mine = ["best_name", "sweep_best", "log_best", "on_move"]
    assert [p.name for p in ours] == ["save_best", *(p.name for p in stock), *mine]
    assert [(p.default, p.kind) for p in ours[1 : -len(mine)]] == [(p.default, p.kind) for p in stock]
    assert ours[0].default is None and ours[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD  # seed: first
    defaults = {p.name: p.default for p in ours[-len(mine) :]}
    assert defaults == {"best_name": "best", "sweep_best": None, "log_best": True, "on_move": None}
    assert {p.kind for p in ours[-len(mine) :]} == {inspect.Parameter.KEYWORD_ONLY}
    choices = {a for arg in typing.get_args(ours[0].annotation) for a in (typing.get_args(arg) or (arg,))}
    assert choices == {bool, type(None), "auto", "symlink", "hardlink", "copy"}


def test_the_protocol_describes_every_installed_model_checkpoint(pkg: Any, tmp_path: Path) -> None:
    from lightning_bestlink._trainer import ModelCheckpointLike

    assert isinstance(pkg.callbacks.ModelCheckpoint(dirpath=tmp_path), ModelCheckpointLike)
    assert not isinstance(object(), ModelCheckpointLike)


def test_positional_save_best_and_arguments_as_in_the_seed(cls: Any, tmp_path: Path) -> None:
    ckpt = cls("copy", str(tmp_path), "{epoch}", "val_loss")
    assert (ckpt.save_best, ckpt.dirpath, ckpt.filename, ckpt.monitor) == ("copy", str(tmp_path), "{epoch}", "val_loss")


def test_best_name_names_the_alias(pkg: Any, cls: Any, tmp_path: Path) -> None:
    ckpt = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", best_name="best-val_loss")
    assert ckpt.best_name == ckpt.CHECKPOINT_NAME_BEST == "best-val_loss"
    assert ckpt.best_link_path == str(tmp_path / "best-val_loss.ckpt")
    assert cls.CHECKPOINT_NAME_BEST == "best", "the class attribute is untouched"

    class Renamed(cls):  # type: ignore[misc,valid-type]
        CHECKPOINT_NAME_BEST = "top"

    assert Renamed(save_best=True, dirpath=tmp_path).best_link_path == str(tmp_path / "top.ckpt")
    old_style = cls(save_best=True, dirpath=tmp_path)
    old_style.CHECKPOINT_NAME_BEST = "best-acc"
    assert old_style.best_name == "best-acc"
    assert old_style.best_link_path == str(tmp_path / "best-acc.ckpt")


@pytest.mark.parametrize("bad", ["", "a/b", "{epoch}", 3])
def test_bad_best_name_is_refused_at_once(cls: Any, bad: Any) -> None:
    with pytest.raises(ValueError, match=r"best_name must be a plain file name .* got"):
        cls(save_best=True, best_name=bad)


@pytest.mark.parametrize("name", ["last", "last-best", "lastly"])
def test_a_best_name_that_looks_like_last_is_refused_at_construction(cls: Any, name: str) -> None:
    with pytest.raises(ValueError, match=rf"best_name='{name}' looks like a 'last' checkpoint name"):
        cls(save_best=True, best_name=name)


def test_a_best_name_with_the_extension_names_the_same_file(cls: Any, tmp_path: Path) -> None:
    # best_name="best.ckpt" means the file best.ckpt, never best.ckpt.ckpt
    ckpt = cls(save_best=True, dirpath=tmp_path, best_name="best-loss.ckpt")
    assert ckpt.best_name == "best-loss"
    assert ckpt.best_link_path == str(tmp_path / "best-loss.ckpt")
    assert cls(save_best=True, dirpath=tmp_path, best_name="best.ckpt").best_link_path == str(tmp_path / "best.ckpt")


@pytest.mark.parametrize(
    "options",
    [{"best_name": "best-loss"}, {"sweep_best": "sweep/best.ckpt"}, {"on_move": print}],
    ids=["best_name", "sweep_best", "on_move"],
)
@pytest.mark.parametrize("save_best", [None, False])
def test_alias_options_without_save_best_are_refused(cls: Any, save_best: Any, options: dict[str, Any]) -> None:
    (name,) = options
    said = rf"{name}=.* configure the best alias, which save_best={save_best!r} turns off"
    with pytest.raises(ValueError, match=said):
        cls(save_best=save_best, monitor="val_loss", **options)


def test_save_top_k_0_with_save_best_is_refused(cls: Any) -> None:
    with pytest.raises(ValueError, match=r"save_best=True with save_top_k=0 can never make a best alias"):
        cls(save_best=True, monitor="val_loss", save_top_k=0, save_last=True)
    assert cls(monitor="val_loss", save_top_k=0, save_last=True).save_best is None  # the stock behaviour


def test_a_stock_callback_with_the_same_settings_is_refused_as_two_stock_ones_are(
    pkg: Any, cls: Any, tmp_path: Path
) -> None:
    # the price of sharing the stock key; Lightning's own check, at Trainer init
    with pytest.raises(RuntimeError, match="state_key"):
        trainer(pkg, tmp_path, [pkg.callbacks.ModelCheckpoint(monitor="val_loss"), cls(True, monitor="val_loss")])
    trainer(pkg, tmp_path, [pkg.callbacks.ModelCheckpoint(monitor="val_acc"), cls(True, monitor="val_loss")])


# --- every ModelCheckpoint feature, with and without save_best ---------------------

LOSSES = [3.0, 1.0, 2.0, 0.5, 4.0]


def _configs(pkg_name: str) -> list[Any]:
    return [
        pytest.param({"save_top_k": 1}, id="top1"),
        pytest.param({"save_top_k": 2}, id="top2"),
        pytest.param({"save_top_k": -1}, id="all"),
        pytest.param({"save_top_k": 1, "save_last": True}, id="last-true"),
        pytest.param({"save_top_k": 2, "save_last": "link"}, id="last-link"),
        pytest.param({"save_top_k": 1, "enable_version_counter": False}, id="no-version-counter"),
        pytest.param({"save_top_k": 2, "every_n_epochs": 2}, id="every-2-epochs"),
        pytest.param({"save_top_k": 2, "save_on_train_epoch_end": True}, id="train-epoch-end"),
        pytest.param({"save_top_k": 1, "save_weights_only": True}, id="weights-only"),
        pytest.param({"save_top_k": 1, "mode": "max"}, id="mode-max"),
        pytest.param({"monitor": None, "save_top_k": 1}, id="monitor-none"),
        pytest.param({"monitor": None, "save_top_k": -1}, id="monitor-none-all"),
        pytest.param({"save_top_k": 2, "every_n_train_steps": 3, "filename": "{step}"}, id="every-3-steps"),
        pytest.param({"save_top_k": 2, "filename": "fixed"}, id="version-counter"),
    ]


def _needs(pkg: Any, options: dict[str, Any]) -> None:
    if options.get("save_last") == "link" and not _flag(pkg, 2):
        pytest.skip("save_last='link' exists from Lightning 2.2")
    if "enable_version_counter" in options and not _flag(pkg, 1):
        pytest.skip("enable_version_counter exists from Lightning 2.1")


@pytest.mark.parametrize("options", _configs(""))
def test_same_files_and_state_as_stock_model_checkpoint(
    pkg: Any, cls: Any, tmp_path: Path, options: dict[str, Any]
) -> None:
    _needs(pkg, options)
    options = {"monitor": "val_loss", **options}
    runs = {}
    for name, factory in (("stock", pkg.callbacks.ModelCheckpoint), ("ours", cls)):
        d = tmp_path / name
        extra = {"save_best": True} if name == "ours" else {}
        ckpt = factory(dirpath=d, **options, **extra)
        trainer(pkg, tmp_path, [ckpt], max_epochs=len(LOSSES)).fit(make_module(pkg, LOSSES))
        runs[name] = (d, ckpt)
    (d_stock, stock), (d_ours, ours) = runs["stock"], runs["ours"]
    assert files(d_ours) - {"best.ckpt", "best.ckpt.bestlink.json"} == files(d_stock)
    assert os.path.basename(ours.best_model_path) == os.path.basename(stock.best_model_path)
    assert os.path.basename(ours.last_model_path) == os.path.basename(stock.last_model_path)
    assert {os.path.basename(k) for k in ours.best_k_models} == {os.path.basename(k) for k in stock.best_k_models}
    if options.get("save_last") == "link":
        assert os.path.islink(d_ours / "last.ckpt"), "save_last='link' must stay a link"
    alias_ok(ours)
    record = json.loads((d_ours / "best.ckpt.bestlink.json").read_text())
    assert record["target"] == os.path.basename(ours.best_model_path)
    assert record["extra"]["monitor"] == options["monitor"]


# before Lightning 2.6 a time-triggered save may come before the first validation (Lightning warns)
@pytest.mark.filterwarnings("ignore:.*could not find the monitored key:UserWarning")
def test_train_time_interval(pkg: Any, cls: Any, tmp_path: Path) -> None:
    ckpt = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", train_time_interval=timedelta(microseconds=1))
    trainer(pkg, tmp_path, [ckpt], max_epochs=3).fit(make_module(pkg, [2.0, 1.0, 3.0]))
    assert ckpt.best_model_path
    alias_ok(ckpt)


def test_metadata_records_monitor_score_epoch_step(pkg: Any, cls: Any, tmp_path: Path) -> None:
    ckpt = cls(save_best=True, dirpath=tmp_path, monitor="val_loss")
    trainer(pkg, tmp_path, [ckpt], max_epochs=4).fit(make_module(pkg, [3.0, 1.0, 2.0, 4.0]))
    from lightning_bestlink import read_record

    record = read_record(tmp_path / "best.ckpt")
    assert record is not None
    assert record["score"] == pytest.approx(1.0)
    assert record["mode"] == "min"
    assert record["extra"]["monitor"] == "val_loss"
    assert record["extra"]["epoch"] == 1
    assert record["extra"]["step"] == 4  # 2 batches a epoch, after epoch 1
    assert os.path.basename(record["target"]) == "epoch=1-step=4.ckpt"


# --- the alias never dangles -------------------------------------------------------


@pytest.mark.parametrize("top_k", [1, 2])
def test_alias_never_points_at_a_removed_file(pkg: Any, cls: Any, tmp_path: Path, top_k: int) -> None:
    checks: list[str] = []

    class Watch(pkg.Callback):  # type: ignore[misc,name-defined]
        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            strategy = trainer.strategy
            original = strategy.remove_checkpoint

            def remove(filepath: Any) -> None:
                alias = ckpt.best_link_path
                if os.path.lexists(alias):
                    assert resolve(alias) != resolve(filepath), f"alias still points at {filepath}"
                original(filepath)
                if os.path.lexists(alias):
                    assert os.path.exists(alias), "alias dangles after a removal"
                checks.append(str(filepath))

            strategy.remove_checkpoint = remove

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if ckpt.best_model_path:
                alias_ok(ckpt)

    ckpt = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", save_top_k=top_k)
    losses = [5.0, 4.0, 3.0, 2.0, 1.0, 0.5]  # every epoch is a new best: every save evicts
    trainer(pkg, tmp_path, [ckpt, Watch()], max_epochs=len(losses)).fit(make_module(pkg, losses))
    assert len(checks) == len(losses) - top_k
    alias_ok(ckpt)


# --- naming: never "last", never evicted, no collisions ------------------------------


def test_alias_is_not_a_last_checkpoint_and_survives_eviction(pkg: Any, cls: Any, tmp_path: Path) -> None:
    ckpt = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", save_top_k=1, save_last=True)
    t = trainer(pkg, tmp_path, [ckpt], max_epochs=4)
    t.fit(make_module(pkg, [4.0, 3.0, 2.0, 1.0]))
    assert {os.path.basename(p) for p in ckpt._find_last_checkpoints(t)} == {"last.ckpt"}
    assert os.path.exists(tmp_path / "best.ckpt")
    alias_ok(ckpt)


@pytest.mark.parametrize(
    ("attr", "value", "message"),
    [
        ("filename", "best", "makes checkpoints named like the best alias"),
        ("CHECKPOINT_NAME_BEST", "last", "looks like a 'last' checkpoint name"),
        ("CHECKPOINT_NAME_BEST", "last-best", "looks like a 'last' checkpoint name"),
        ("CHECKPOINT_NAME_BEST", "{epoch}-best", "plain file name"),
        ("CHECKPOINT_NAME_LAST", "best", "looks like a 'last' checkpoint name"),
    ],
)
def test_colliding_names_are_refused_at_setup(
    pkg: Any, cls: Any, tmp_path: Path, attr: str, value: str, message: str
) -> None:
    ckpt = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", save_last=True)
    setattr(ckpt, attr, value)
    with pytest.raises(ValueError, match=message):
        trainer(pkg, tmp_path, [ckpt], max_epochs=1).fit(make_module(pkg, [1.0]))
    assert not (tmp_path / "best.ckpt").exists()


def test_two_instances_keep_their_own_alias(pkg: Any, cls: Any, tmp_path: Path) -> None:
    loss = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", filename="loss-{epoch}")
    loss.CHECKPOINT_NAME_BEST = "best-val_loss"  # the seed's way
    acc = cls(
        save_best=True,
        dirpath=tmp_path,
        monitor="val_acc",
        mode="max",
        filename="acc-{epoch}",
        best_name="best-val_acc",
    )

    class Both(pkg.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.inner = make_module(pkg, [3.0, 1.0, 2.0])

        def forward(self, x: Any) -> Any:
            return self.inner.layer(x)

        def training_step(self, batch: Any, i: int) -> Any:
            return self.inner.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch: Any, i: int) -> None:
            self.log("val_loss", [3.0, 1.0, 2.0][self.current_epoch])
            self.log("val_acc", [0.1, 0.2, 0.9][self.current_epoch])

        def configure_optimizers(self) -> Any:
            return self.inner.configure_optimizers()

        def train_dataloader(self) -> Any:
            return self.inner.train_dataloader()

        def val_dataloader(self) -> Any:
            return self.inner.val_dataloader()

    trainer(pkg, tmp_path, [loss, acc], max_epochs=3).fit(Both())
    assert os.readlink(tmp_path / "best-val_loss.ckpt") == "loss-epoch=1.ckpt"
    assert os.readlink(tmp_path / "best-val_acc.ckpt") == "acc-epoch=2.ckpt"


def test_two_instances_writing_one_alias_are_refused(pkg: Any, cls: Any, tmp_path: Path) -> None:
    a = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", filename="a-{epoch}")
    b = cls(save_best=True, dirpath=tmp_path, monitor="val_acc", mode="max", filename="b-{epoch}")
    with pytest.raises(ValueError, match="would both write the best alias") as info:
        trainer(pkg, tmp_path, [a, b], max_epochs=1).fit(make_module(pkg, [1.0]))
    # the suggestion is built from the monitor of the callback it names
    assert "best_name='best-val_loss' on the one with monitor='val_loss'" in str(info.value)
    assert not (tmp_path / "best.ckpt").exists()


def test_an_alias_named_like_another_callbacks_checkpoints_is_refused(pkg: Any, cls: Any, tmp_path: Path) -> None:
    other = pkg.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val_acc", filename="best")
    ours = cls(save_best=True, dirpath=tmp_path, monitor="val_loss")
    with pytest.raises(ValueError, match="makes checkpoints named like the best alias"):
        trainer(pkg, tmp_path, [other, ours], max_epochs=1).fit(make_module(pkg, [1.0]))


# --- resume --------------------------------------------------------------------------


def _fit(pkg: Any, cls: Any, root: Path, losses: list[float], ckpt_path: str | None = None, **kw: Any) -> Any:
    ckpt = cls(save_best=True, dirpath=root / "ckpt", monitor="val_loss", save_last=True, **kw)
    t = trainer(pkg, root, [ckpt], max_epochs=len(losses))
    t.fit(make_module(pkg, losses), ckpt_path=ckpt_path)
    return ckpt


@pytest.mark.parametrize("damage", ["none", "deleted", "pointed-away", "metadata-deleted"])
@pytest.mark.filterwarnings("ignore:Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected:UserWarning")
def test_resume_keeps_the_best_and_repairs_the_alias(
    pkg: Any, cls: Any, tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _flag(pkg, 4):
        # Lightning < 2.4 lets torch >= 2.6 default to weights_only=True, which cannot read its
        # own checkpoints; the documented switch restores the old default
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    first = _fit(pkg, cls, tmp_path, [3.0, 1.0, 2.0], save_top_k=2)
    best = first.best_model_path
    alias = tmp_path / "ckpt" / "best.ckpt"
    assert resolve(alias) == resolve(best)
    if damage == "deleted":
        alias.unlink()
    elif damage == "pointed-away":
        alias.unlink()
        alias.symlink_to("last.ckpt")
    elif damage == "metadata-deleted":
        (tmp_path / "ckpt" / "best.ckpt.bestlink.json").unlink()

    seen: list[str] = []

    class Probe(pkg.Callback):  # type: ignore[misc,name-defined]
        # Lightning runs checkpoint callbacks last, so look at the start of the first epoch
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if not seen:
                seen.append(resolve(alias))

    ckpt = cls(save_best=True, dirpath=tmp_path / "ckpt", monitor="val_loss", save_last=True, save_top_k=2)
    t = trainer(pkg, tmp_path, [ckpt, Probe()], max_epochs=5)
    # worse scores after the resume: the alias must not move
    t.fit(make_module(pkg, [3.0, 1.0, 2.0, 5.0, 6.0]), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert seen == [resolve(best)], "the alias is checked and rebuilt when training starts"
    assert ckpt.best_model_path == best
    assert resolve(alias) == resolve(best)


def test_the_state_key_is_the_stock_one_and_follows_a_setting_changed_later(pkg: Any, cls: Any) -> None:
    ours, stock = cls(save_best=True, monitor="val_loss"), pkg.callbacks.ModelCheckpoint(monitor="val_loss")
    assert ours.state_key == stock.state_key
    ours.monitor = stock.monitor = "val_acc"  # set on the instance, as the seed's users do
    assert ours.state_key == stock.state_key and "'val_acc'" in ours.state_key


def test_state_keeps_all_lightning_keys(pkg: Any, cls: Any, tmp_path: Path) -> None:
    stock = pkg.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val_loss")
    ours = cls(save_best=True, dirpath=tmp_path / "o", monitor="val_loss")
    trainer(pkg, tmp_path, [ours], max_epochs=2).fit(make_module(pkg, [2.0, 1.0]))
    state = ours.state_dict()
    assert set(stock.state_dict()) <= set(state)
    assert state["best_link"]["best_path"] == ours.best_model_path
    json.dumps(state["best_link"])
    # the stock class's key: a run switches between the two classes and keeps Lightning's state
    assert ours.state_key == stock.state_key
    assert ours.state_key.startswith("ModelCheckpoint{")


# --- remote dirpath ----------------------------------------------------------------


def test_memory_dirpath_copies_without_a_second_save(pkg: Any, cls: Any, tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    counts: dict[str, int] = {}
    for name, factory, extra in (
        ("stock", pkg.callbacks.ModelCheckpoint, {}),
        ("ours", cls, {"save_best": True}),
    ):
        ckpt = factory(dirpath=f"memory://bestlink-{name}", monitor="val_loss", save_top_k=1, **extra)
        t = trainer(pkg, tmp_path, [ckpt], max_epochs=4)
        calls = []
        original = t.strategy.checkpoint_io.save_checkpoint

        def save(
            checkpoint: Any, path: Any, *a: Any, _calls: list[Any] = calls, _orig: Any = original, **k: Any
        ) -> Any:
            _calls.append(str(path))
            return _orig(checkpoint, path, *a, **k)

        t.strategy.checkpoint_io.save_checkpoint = save
        t.fit(make_module(pkg, [3.0, 1.0, 2.0, 0.5]))
        counts[name] = len(calls)
        if name == "ours":
            alias = "/bestlink-ours/best.ckpt"
            assert fs.cat(alias) == fs.cat(ckpt.best_model_path.replace("memory://", ""))
            assert ckpt.best_linker.link_kind == "copy"
    assert counts["ours"] == counts["stock"], "the model must not be serialised a second time"


@pytest.mark.parametrize("save_best", ["symlink", "hardlink", "copy"])
def test_overwritten_best_file_refreshes_the_alias(pkg: Any, cls: Any, tmp_path: Path, save_best: str) -> None:
    if not _flag(pkg, 1):
        pytest.skip("enable_version_counter exists from Lightning 2.1")
    ckpt = cls(
        save_best=save_best,
        dirpath=tmp_path,
        monitor="val_loss",
        filename="model",
        enable_version_counter=False,
    )
    trainer(pkg, tmp_path, [ckpt], max_epochs=3).fit(make_module(pkg, [3.0, 2.0, 1.0]))
    assert sorted(files(tmp_path)) == ["best.ckpt", "best.ckpt.bestlink.json", "model.ckpt"]
    assert (tmp_path / "best.ckpt").read_bytes() == (tmp_path / "model.ckpt").read_bytes()
    assert torch.load(tmp_path / "best.ckpt", weights_only=False)["epoch"] == 2


def test_a_save_onto_a_leftover_link_never_writes_through(pkg: Any, cls: Any, tmp_path: Path) -> None:
    if not _flag(pkg, 2):
        pytest.skip("save_last='link' exists from Lightning 2.2")
    first = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", save_top_k=-1, save_last="link")
    trainer(pkg, tmp_path, [first], max_epochs=2).fit(make_module(pkg, [2.0, 1.0]))
    assert os.path.islink(tmp_path / "last.ckpt")
    pointed = tmp_path / os.readlink(tmp_path / "last.ckpt")
    before = pointed.read_bytes()

    # a second run into the same folder saves last.ckpt as a file: without care, torch.save
    # would open the leftover link and overwrite the top-k checkpoint it points at
    second = cls(
        save_best=True,
        dirpath=tmp_path,
        monitor="val_loss",
        save_last=True,
        filename="run2-{epoch}",
        enable_version_counter=False,  # else Lightning sidesteps to last-v1.ckpt
    )
    trainer(pkg, tmp_path, [second], max_epochs=1).fit(make_module(pkg, [5.0]))
    assert pointed.read_bytes() == before, "the checkpoint behind the old link was overwritten"
    assert not os.path.islink(tmp_path / "last.ckpt")
    alias_ok(second)


def test_copies_and_pickles_after_fit(pkg: Any, cls: Any, tmp_path: Path) -> None:
    # torch.save(trainer) and spawn-based strategies pickle callbacks; the linker (it holds a lock)
    # is made again by setup. deepcopy goes through the same __getstate__, and unlike pickle it
    # copes with the module's local class that Lightning leaves bound to the callback (log, log_dict)
    import copy as copying

    ckpt = cls(save_best=True, dirpath=tmp_path, monitor="val_loss")
    trainer(pkg, tmp_path, [ckpt], max_epochs=2).fit(make_module(pkg, [2.0, 1.0]))
    assert ckpt.best_linker is not None
    copy = copying.deepcopy(ckpt)
    assert (copy.best_model_path, copy.best_linker) == (ckpt.best_model_path, None)
    alias_ok(ckpt)


def test_async_checkpoint_io_links_once_the_file_is_written(pkg: Any, cls: Any, tmp_path: Path) -> None:
    from threading import Event

    class Slow(pkg.plugins.io.AsyncCheckpointIO):  # type: ignore[misc,name-defined]
        """Holds every write until the next save is asked for: the file is never there at once."""

        def __init__(self) -> None:
            super().__init__()
            self.gate = Event()

        def save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
            self.gate.set()  # let the previous write through
            self.gate = gate = Event()
            original = self.checkpoint_io.save_checkpoint

            def late(*a: Any, **k: Any) -> None:
                gate.wait(timeout=30)
                original(*a, **k)

            super().save_checkpoint(*args, **kwargs)  # queued behind the previous write
            self.checkpoint_io.save_checkpoint = late

        def teardown(self) -> None:
            self.gate.set()
            super().teardown()

    ckpt = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", save_top_k=2)
    t = trainer(pkg, tmp_path, [ckpt], max_epochs=3, plugins=[Slow()])
    t.fit(make_module(pkg, [3.0, 1.0, 2.0]))
    assert os.path.basename(ckpt.best_model_path) == "epoch=1-step=4.ckpt"
    alias_ok(ckpt)
