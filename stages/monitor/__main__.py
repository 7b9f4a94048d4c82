"""``python -m stages.monitor``: check the current data for drift."""

from stages.monitor.cli import main

raise SystemExit(main())
