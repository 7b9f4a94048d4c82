"""Compilers from the plan to each target: pure functions, plan in, files out."""
