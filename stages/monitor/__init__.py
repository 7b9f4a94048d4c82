"""``mlops monitor``: is the data the production model sees still the data it
was trained on?

``python -m stages.monitor`` compares the *current* data (the prediction log
``mlops serve`` writes, a source under ``data:`` named by
``monitoring.current``, or ``--current FILE``) with the *reference*: the train
split of the version holding ``registry.production_alias``, fetched by the
data hash its tags record from the DVC cache or remote, never this checkout's
split, which may be newer.

- :mod:`.drift`: the pure core, DataFrames in and scores out (numpy/scipy);
- :mod:`.current` and :mod:`.reference`: where the two sides come from;
- :mod:`.outputs`: ``monitor.json``, the Markdown summary and the Prometheus
  text file, and :mod:`.report`: the deepchecks HTML;
- :mod:`.cli`: the thin ``main``.
"""

from __future__ import annotations

KIND = "monitor"

# The verdicts, and the exit code of each (1 is reserved for a failure of the
# command itself, 2 for an invalid spec, as everywhere in the CLI).
NO_DRIFT = "no drift"
DRIFT = "drift"
UNCHECKED = "could not check"
EXIT_CODES = {NO_DRIFT: 0, DRIFT: 3, UNCHECKED: 4}
EXIT_FAILED = 1
