"""One Trainer run in a fresh process, for tests/test_trainer_resume.py (see tests/_lit.py:run_trainer).

The config (JSON, argv[1]) names the package, the checkpoint callbacks, the scripted validation
losses, the action and ckpt_path. The script writes a JSON report to config["out"]: each
callback's best_model_path/score and state key after the run and when training started, the
trainer's ckpt_path, every warning, and the error if the action raised one.
"""

import importlib
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from tests._lit import make_module, trainer

config = json.loads(sys.argv[1])
pkg_name = config.get("package", "lightning.pytorch")
pl = importlib.import_module(pkg_name)
ours_module = (
    "lightning_bestlink.callbacks" if pkg_name == "lightning.pytorch" else "lightning_bestlink.pytorch_lightning"
)
Ours = importlib.import_module(ours_module).ModelCheckpointWithLinkBest
Stock = pl.callbacks.ModelCheckpoint


class ModelCheckpointWithLinkBest(Stock):
    """Stands in for lightning_template's class: the same name (so the same state key) and the
    stock state, with a relative symlink best.ckpt and no record."""

    CHECKPOINT_NAME_BEST = "best"

    def __init__(self, save_best=None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_best = save_best

    def _save_checkpoint(self, trainer, filepath):
        super()._save_checkpoint(trainer, filepath)
        if self.save_best and trainer.is_global_zero and filepath == self.best_model_path:
            alias = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_BEST)
            if os.path.lexists(alias):
                os.remove(alias)
            os.symlink(os.path.basename(filepath), alias)


CLASSES = {"ours": Ours, "stock": Stock, "seed": ModelCheckpointWithLinkBest}


def score(value):
    return None if value is None else float(value)


def describe(cb):
    alias = getattr(cb, "best_link_path", None)
    return {
        "cls": type(cb).__name__,
        "best_model_path": cb.best_model_path,
        "best_model_score": score(cb.best_model_score),
        "state_key": cb.state_key,
        "alias": alias,
        "alias_resolves_to": os.path.realpath(alias) if alias and os.path.exists(alias) else None,
    }


class Probe(pl.Callback):
    """What the checkpoint callbacks hold when training starts (after the restore; checkpoint
    callbacks run after this one) and once they have checked the alias (first epoch start)."""

    def __init__(self):
        self.at_train_start = None
        self.at_first_epoch = None

    def on_train_start(self, trainer, pl_module):
        self.at_train_start = [describe(cb) for cb in trainer.checkpoint_callbacks]

    def on_train_epoch_start(self, trainer, pl_module):
        if self.at_first_epoch is None:
            self.at_first_epoch = [describe(cb) for cb in trainer.checkpoint_callbacks]


callbacks = [CLASSES[spec["cls"]](**spec.get("kwargs", {})) for spec in config["callbacks"]]
probe = Probe()
losses = config.get("losses", [3.0, 1.0, 2.0])
logger = False
if config.get("logger") == "csv":
    logger = pl.loggers.CSVLogger(config["root"], name="logs")
t = trainer(pl, config["root"], [*callbacks, probe], max_epochs=len(losses), logger=logger)
model = make_module(pl, losses)
errors, ckpt_paths = [], []
actions = config.get("action", "fit")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for action in [actions] if isinstance(actions, str) else actions:  # one Trainer, one call after another
        try:
            getattr(t, action)(model, ckpt_path=config.get("ckpt_path"))
            errors.append(None)
        except Exception as err:  # reported, for tests that expect an error
            errors.append(f"{type(err).__name__}: {err}")
        ckpt_paths.append(None if t.ckpt_path is None else str(t.ckpt_path))
report = {
    "callbacks": [describe(cb) for cb in callbacks],
    "at_train_start": probe.at_train_start,
    "at_first_epoch": probe.at_first_epoch,
    "ckpt_path": ckpt_paths[-1],
    "ckpt_paths": ckpt_paths,
    "log_dir": getattr(logger, "log_dir", None) if logger else None,
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    "error": errors[-1],
    "errors": errors,
}
with open(config["out"], "w") as fh:
    json.dump(report, fh)
