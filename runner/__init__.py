"""mlops: compile one mlops.yaml into DVC, Argo Workflows and GitHub Actions."""

# The spec every command reads unless told another (`--file`); here, where the
# CLI's parser finds it without importing the spec's loader and jsonschema.
DEFAULT_SPEC = "mlops.yaml"
# The branch the generated workflows deploy from and reports compare with; a
# repository `mlops init` or `mlops run` creates starts on it, whatever git's
# init.defaultBranch says.
MAIN_BRANCH = "main"
