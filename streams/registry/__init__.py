"""The registry topic: model-version records, their artifacts, the client and the CLI."""
