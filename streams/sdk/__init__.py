"""The producer SDK and the replayable sources behind ``driftline produce``."""
