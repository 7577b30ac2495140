"""The command line, ``lightning-bestlink``: everything but the entry point (``cli.main``).

- ``parser.py``: the argument parser and every ``--help``;
- ``commands.py``: ``show``, ``verify``, ``repair`` and ``path``; ``watch.py``: ``watch``;
- ``survey.py``: folders in, data out (aliases, records, checkpoints), no printing;
- ``render.py`` and ``render_json.py``: how the commands word what the survey found;
- ``demo.py``: ``demo``, the only command that imports torch and Lightning.

Data flows one way: the commands read through the survey, which reads through the
storage seam and :class:`~lightning_bestlink.BestLinker`; nothing in the core imports
this package.
"""
