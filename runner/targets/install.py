"""Plan -> what a team's repository installs the framework from (installed mode).

CI and the team image install the framework at the version the spec pins
(`ci.install`) with the framework's own constraints, so that they resolve the
dependency tree its tests ran on. Both files, and the image's Dockerfile, are
generated from the running framework and committed; a copy of the framework's
repository (template mode) installs itself from its checkout and gets none.
"""

from __future__ import annotations

from runner.framework import CONSTRAINTS_FILE, DOCKERFILE_FILE, REQUIREMENTS_FILE
from runner.plan import Plan
from runner.write import HEADER


def compile_plan(plan: Plan) -> dict[str, str]:
    """The files of the install target, as text."""
    framework = plan.framework
    if not framework.installed:
        return {}
    return {
        REQUIREMENTS_FILE: HEADER + framework.install + "\n",
        CONSTRAINTS_FILE: HEADER + framework.constraints,
        DOCKERFILE_FILE: HEADER + framework.dockerfile,
    }
