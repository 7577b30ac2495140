"""``python -m lightning_bestlink``: the same as the ``lightning-bestlink`` command."""

from __future__ import annotations

from lightning_bestlink.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
