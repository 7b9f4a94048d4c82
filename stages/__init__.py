"""Built-in ML lifecycle stages, each run by DVC as ``python -m stages.<kind>``."""
