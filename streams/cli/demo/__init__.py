"""``driftline demo``: the whole pipeline on a drifting stream, watched live, then reported.

One run, from nothing to a report:

1. connect to Kafka and Redis from ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` when both answer,
   else start the embedded local stack (and stop it at the end, unless ``--keep-stack``);
2. isolate the run: a fresh topic prefix, Redis prefix and consumer group; the signing key from
   the environment, or a random one for this run;
3. start a trainer worker (``driftline worker``) and a scoring worker (``driftline score``) as
   subprocesses, their logs in the report folder (written afresh by each run), and wait until
   both are ready, showing each one's start-up stage from its log;
4. stream a drift dataset with an abrupt concept switch at ``--rate`` events/s (``--stream``, or
   by the model's task: SEA for classification, Friedman for regression), each event both
   labeled (for the trainer) and unlabeled (for the scorer);
5. show, live, what the workers publish: the metrics topic (events learned, each candidate's
   rolling primary metric, the champion), the registry topic (every record with its reason:
   promotions, drift detections, drift actions, alerts) and the predictions topic (events
   scored, per serving version);
6. once every event is learned and scored (or a bounded wait runs out), stop the workers and
   write ``summary.md`` and the plot of the primary metric (``rolling_accuracy.png``,
   ``rolling_mae.png``, ...) to the report folder; predictions are counted by the version
   serving when each event was produced, and by the version that scored it (which adds the
   scorer's lag).

The examples (``streams/examples``, linked from ``examples/``) run with ``--config``: the SEA
story (the default), drift actions with a window-refit candidate, and a regression model whose
report is in MAE.

The package, one concept per module:

- :mod:`~streams.cli.demo.options`: :class:`DemoOptions`, :data:`DEFAULT_CONFIG` and the stream
  of each task;
- :mod:`~streams.cli.demo.errors`: :class:`DemoError` and :class:`WorkerExited`;
- :mod:`~streams.cli.demo.watcher`: :class:`TopicWatcher`, which reads the workers' topics into
  an :class:`Observation`;
- :mod:`~streams.cli.demo.report`: the summary, its tables and markdown, and the plot (pure:
  they work from plain metric records and registry records);
- :mod:`~streams.cli.demo.startup`: each worker's start-up stage, read from its log;
- :mod:`~streams.cli.demo.live`: the live view;
- :mod:`~streams.cli.demo.delayed`: ``--delayed-labels``: labels only as delayed outcomes
  learned through the scorer's join, and the two trials (:class:`~.delayed.TrialDirector`);
- :mod:`~streams.cli.demo.trials`: hand-made canaries (trained, stored, published as an
  operator would), shared with the rollout tests;
- :mod:`~streams.cli.demo.runner`: :func:`run`, which starts, streams, waits, reports and
  always stops what it started.

With ``--delayed-labels``, step 4 sends a labeled warm-up batch, then every event unlabeled and
its label as an outcome later, and the view and the report add the scorer's live accuracy per
served version and arm, and the trials.
"""

from streams.cli.demo.errors import DemoError, WorkerExited
from streams.cli.demo.live import RateMeter
from streams.cli.demo.options import DEFAULT_CONFIG, EXAMPLES, DemoOptions
from streams.cli.demo.report import (
    CandidateResult,
    DemoSummary,
    build_summary,
    plot_rolling_metric,
    record_event,
    summary_markdown,
    summary_tables,
)
from streams.cli.demo.runner import run
from streams.cli.demo.watcher import Observation, TopicWatcher

__all__ = [
    "DEFAULT_CONFIG",
    "EXAMPLES",
    "CandidateResult",
    "DemoError",
    "DemoOptions",
    "DemoSummary",
    "Observation",
    "RateMeter",
    "TopicWatcher",
    "WorkerExited",
    "build_summary",
    "plot_rolling_metric",
    "record_event",
    "run",
    "summary_markdown",
    "summary_tables",
]
