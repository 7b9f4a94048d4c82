"""mlops: compile one mlops.yaml into DVC, Argo Workflows and GitHub Actions."""
