"""Built-in ML lifecycle stages, each run by DVC as ``python -m stages.<kind>``."""

import os as _os

# The warm stage server's socket (stages/warm.py), set by `mlops run` for DVC.
SERVER_ENV = "MLOPS_STAGE_SERVER"

if _os.environ.get(SERVER_ENV):
    from stages import warm as _warm

    _warm.hand_over()  # returns only if no server takes this stage
