"""The faust workers: the trainer, the scorer, and the partition ledger.

The ledger keeps learning exactly-once; the workers share one faust app base.
"""
