"""`mlops serve`: the production model over HTTP, checked before it is served.

Two phases, two processes (see :mod:`stages.serving.cli`):

- ``python -m stages.serving`` (:mod:`~stages.serving.fetch`) asks MLflow
  which version to serve, downloads it once into ``.mlops/serving/``, checks it
  with the project's skops allow-list, verifies the ONNX conversion when the
  version carries one, and hashes the files it checked;
- it then replaces itself with ``python -m stages.serving.server``, which
  never imports MLflow: uvicorn workers load exactly the hashed bytes
  (:mod:`~stages.serving.predictor`) and answer through the ASGI app in
  :mod:`~stages.serving.app`, which parses requests against the model's
  signature (:mod:`~stages.serving.inputs`), counts them
  (:mod:`~stages.serving.metrics`) and logs predictions
  (:mod:`~stages.serving.predlog`).
"""
