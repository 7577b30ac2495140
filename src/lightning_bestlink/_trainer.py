"""The Trainer adapter, written once for both ``lightning.pytorch`` and ``pytorch_lightning``.

``BestLinkMixin`` holds no linking logic: it decides *when* (right after a
checkpoint becomes ``best_model_path`` and is written, before Lightning evicts the
previous best) and *what* (``best_model_path``, with monitor, epoch and step as
metadata); :class:`~lightning_bestlink.BestLinker` does the file work. It imports
neither Lightning package: ``callbacks.py`` and ``pytorch_lightning.py`` combine it
with each package's ``ModelCheckpoint``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lightning_bestlink._names import is_last_name
from lightning_bestlink._ranks import on_rank_zero
from lightning_bestlink._storage import LINK_CHOICES
from lightning_bestlink.linker import BestLinker

if TYPE_CHECKING:
    _Base = Any  # ModelCheckpoint of either package; the mixin only uses its public surface
else:
    _Base = object

SaveBest = bool | str | None


def check_save_best(save_best: object) -> str | None:
    """The link kind ``save_best`` asks for (None when off); raises ``ValueError`` otherwise.

    >>> check_save_best(True), check_save_best(None), check_save_best("copy")
    ('auto', None, 'copy')
    """
    if save_best is None or save_best is False:
        return None
    if save_best is True:
        return "auto"
    if isinstance(save_best, str) and save_best in LINK_CHOICES:
        return save_best
    choices = ", ".join(repr(c) for c in LINK_CHOICES)
    raise ValueError(f"save_best must be None, False, True or one of {choices}, got {save_best!r}")


class BestLinkMixin(_Base):  # type: ignore[misc]
    """Adds ``save_best`` to a ``ModelCheckpoint``: ``best.ckpt`` follows ``best_model_path``."""

    CHECKPOINT_NAME_BEST = "best"

    def __init__(self, save_best: SaveBest = None, *args: Any, **kwargs: Any) -> None:
        self._best_link_kind = check_save_best(save_best)
        super().__init__(*args, **kwargs)
        self.save_best = save_best
        self._best_linker: BestLinker | None = None
        self._best_linker_for = ""  # the alias path the linker was made for
        self._linked_best_path = ""  # the best_model_path the alias was last pointed at (all ranks)

    # --- naming and setup -----------------------------------------------------

    @property
    def best_link_path(self) -> str | None:
        """Where the best alias goes (``dirpath/best.ckpt``), once ``dirpath`` is known."""
        if self._best_link_kind is None or self.dirpath is None:
            return None
        return str(self.format_checkpoint_name({}, self.CHECKPOINT_NAME_BEST))

    @property
    def best_linker(self) -> BestLinker | None:
        """The :class:`BestLinker` behind the alias (after ``setup``)."""
        return self._best_linker

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self._best_link_kind is None:
            return
        self._check_names(trainer)
        link_path = self.best_link_path
        assert link_path is not None
        if self._best_linker is None or self._best_linker_for != link_path:  # first setup, or dirpath moved
            self._best_linker = BestLinker(link_path, mode=self.mode, link=self._best_link_kind)  # type: ignore[arg-type]
            self._best_linker_for = link_path

    def _check_names(self, trainer: Any) -> None:
        name = self.CHECKPOINT_NAME_BEST
        if not isinstance(name, str) or not name or "{" in name or "/" in name:
            raise ValueError(
                f"CHECKPOINT_NAME_BEST must be a plain file name without '{{...}}' fields or '/', got "
                f"{name!r}: the best alias needs one stable name. Set it to e.g. 'best' or 'best-val_loss'"
            )
        alias = self.best_link_path
        if is_last_name(name, str(self.CHECKPOINT_NAME_LAST)):
            raise ValueError(
                f"CHECKPOINT_NAME_BEST={name!r} looks like a 'last' checkpoint name "
                f"(CHECKPOINT_NAME_LAST={self.CHECKPOINT_NAME_LAST!r}): Lightning would resume from the "
                f"best alias as if it were the latest state. Choose a name that does not start with it"
            )
        if alias == self.format_checkpoint_name({}, self.filename) or alias == self.format_checkpoint_name(
            {}, self.CHECKPOINT_NAME_LAST
        ):
            raise ValueError(
                f"filename={self.filename!r} makes checkpoints named like the best alias {alias!r}: "
                f"every save would land on the alias. Use another filename template, or set "
                f"CHECKPOINT_NAME_BEST on this callback to another name"
            )
        for other in getattr(trainer, "checkpoint_callbacks", []):
            if other is self or not isinstance(other, BestLinkMixin) or other._best_link_kind is None:
                continue
            if other.best_link_path == alias:
                raise ValueError(
                    f"two ModelCheckpointWithLinkBest callbacks (monitor={self.monitor!r} and "
                    f"monitor={other.monitor!r}) would both write the best alias {alias!r}. Give each its "
                    f"own name, e.g. set CHECKPOINT_NAME_BEST = 'best-{other.monitor}' on the second one"
                )

    # --- when the alias moves --------------------------------------------------

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        if trainer.is_global_zero and os.path.islink(filepath):
            # a save to a path that is a link would overwrite the file it points to
            # (e.g. last.ckpt left as a link by save_last="link"); drop the link, keep its target
            os.unlink(filepath)
        super()._save_checkpoint(trainer, filepath)
        # the new file exists now, and Lightning evicts the old best only after this returns:
        # moving the alias here means it never points at a deleted checkpoint
        self._link_best(trainer, saved=filepath)

    def _link_best(self, trainer: Any, saved: str) -> None:
        linker = self._best_linker
        best = self.best_model_path
        # also when the best file itself was just rewritten (a fixed filename with
        # enable_version_counter=False): a copy or hard link would otherwise keep the old bytes
        if linker is None or not best or (best == self._linked_best_path and saved != best):
            return

        def write() -> None:
            linker.follow(self._best_score(trainer), best, extra=self._best_extra(trainer))

        on_rank_zero(trainer.is_global_zero, trainer.strategy.broadcast, linker, write, "update")
        self._linked_best_path = best

    def _best_score(self, trainer: Any) -> Any:
        if self.monitor is None or self.best_model_score is None:
            return trainer.global_step  # monitor=None: the best is the latest save
        return self.best_model_score

    def _best_extra(self, trainer: Any) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "filename": os.path.basename(self.best_model_path),
        }

    # --- resume ---------------------------------------------------------------

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        linker = self._best_linker
        best = self.best_model_path
        if linker is None or not best:
            return

        # after every restore (some strategies restore after on_fit_start): check the alias
        # against the restored best_model_path, and rebuild it if it was deleted or damaged
        def repair() -> None:
            linker.load_state_dict({"best_score": self._best_score(trainer), "best_path": best})
            linker.restore_alias()

        on_rank_zero(trainer.is_global_zero, trainer.strategy.broadcast, linker, repair, "verify")
        self._linked_best_path = best

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = super().state_dict()
        if self._best_linker is not None:
            state["best_link"] = self._best_linker.state_dict()
        return state
