"""``python -m stages.monitor``: check the current data for drift."""

from stages import run_then_leave
from stages.monitor.cli import main

run_then_leave(main)
