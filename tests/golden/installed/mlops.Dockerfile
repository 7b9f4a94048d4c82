# Generated from mlops.yaml by mlops compile. Do not edit.
# stand-in for the framework's Dockerfile.team
