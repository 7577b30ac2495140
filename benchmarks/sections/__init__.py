"""The measured sections, in the order they run (part of the method: keep it).

Imports run first, before this process's page cache fills up; the Trainer runs last (it sets
``torch.set_num_threads(1)`` and loads the whole of Lightning). The report orders its tables by
their numbers, not by this order.
"""

from __future__ import annotations

from _common import Section

from sections import alias, churn, clone, imports, noop, trainer

SECTIONS: tuple[Section, ...] = (
    imports.SECTION,
    noop.SECTION,
    alias.SECTION,
    churn.SECTION,
    clone.SECTION,
    trainer.SECTION,
)
