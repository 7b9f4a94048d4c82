"""``python -m stages.serving``: fetch and check the model, then serve it."""

from stages.serving.cli import main

raise SystemExit(main())
