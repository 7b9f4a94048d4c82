"""Built-in ML lifecycle stages, each run by DVC as ``python -m stages.<kind>``."""

import os as _os

if _os.environ.get("MLOPS_STAGE_SERVER"):  # under `mlops run`: stages/warm.py
    from stages import warm as _warm

    _warm.hand_over()  # returns only if no server takes this stage
