"""The command line, ``lightning-bestlink``: everything but the entry point (``cli.main``).

- ``parser.py``: the argument parser and every ``--help``;
- ``commands.py``: ``show``, ``verify`` and ``repair``; ``path.py``: ``path`` (and ``hold.py``,
  the detached process behind ``path --hold``); ``watch.py``: ``watch``;
- ``survey.py``: folders in, data out (aliases, records, checkpoints), no printing;
  ``alias.py``: one alias, its record and health, which the survey exports;
- ``render.py`` and ``render_json.py``: how the commands word what the survey found;
- ``demo.py``: ``demo``, the only command that imports torch and Lightning.

Data flows one way: the commands read through the survey, which reads through the
storage seam and :class:`~lightning_bestlink.BestLinker`; nothing in the core imports
this package.
"""
