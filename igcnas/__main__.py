"""``python -m igcnas``."""

from __future__ import annotations

from igcnas.cli import main

raise SystemExit(main())
