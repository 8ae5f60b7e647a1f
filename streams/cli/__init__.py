"""The ``driftline`` command line and the demo it runs."""
