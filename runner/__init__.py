"""mlops: compile one mlops.yaml into DVC, Argo Workflows and GitHub Actions."""

# The spec every command reads unless told another (`--file`); here, where the
# CLI's parser finds it without importing the spec's loader and jsonschema.
DEFAULT_SPEC = "mlops.yaml"
