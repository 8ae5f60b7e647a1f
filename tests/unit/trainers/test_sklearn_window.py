"""The sklearn_window candidate: window refits at fixed events, wherever the fit runs."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor

import pytest

from trainers.candidates import SklearnWindowCandidate, build_candidate
from trainers.errors import ConfigError
from trainers.serialization import canonical_dumps
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

WINDOW = {
    "name": "hgb",
    "sklearn_window": "HistGradientBoostingClassifier",
    "params": {"max_iter": 20},
    "window_events": 300,
    "refit_every": 200,
    "refit_lag": 50,
}
RIVER = {"name": "nb", "river": "StandardScaler | LogisticRegression"}
PROBE = [x for x, _ in drift_stream("sea", n=200, drift_at=100, seed=9)]


def spec(*candidates):
    return ModelSpec.from_dict(
        "sea",
        {
            "task": "classification",
            "champion": "nb",
            "candidates": list(candidates or (RIVER, WINDOW)),
            "policy": {"warmup": 300, "every": 300, "min_samples": 300},
        },
    )


def events(n, seed=3):
    return list(drift_stream("sea", n=n, drift_at=n // 2, seed=seed))


def feed(trainer, stream, start=0, *, pool=None, futures=None):
    """Feed `stream` from `start`; with `pool`, fit every job there as soon as it is cut and hand
    the result in before the event that installs it (as the worker does)."""
    futures = {} if futures is None else futures
    for position, (x, y) in enumerate(stream[start:], start):
        if pool is not None:
            for job in trainer.refit_jobs(due_next=True):
                trainer.provide_refit(job, futures.pop(id(job)).result())
        trainer.learn(x, y, source="s", position=position)
        if pool is not None:
            for job in trainer.refit_jobs():
                if id(job) not in futures:
                    futures[id(job)] = pool.submit(job.fit)
    return futures


def predictions(candidate):
    return [candidate.predict_proba_one(x) for x in PROBE]


def test_refits_are_cut_every_refit_every_events_and_installed_refit_lag_later():
    trainer = ModelTrainer(spec())
    stream = events(700)
    window = trainer.candidate("hgb")
    assert isinstance(window, SklearnWindowCandidate)
    installed = {}
    for position, (x, y) in enumerate(stream):
        trainer.learn(x, y, source="s", position=position)
        jobs = [(job.cut, job.due, len(job.labels)) for job in trainer.refit_jobs()]
        installed.setdefault(window.n_refits, position + 1)
        if position + 1 in (200, 249, 400, 600):
            assert jobs == [
                (
                    position + 1 - (position + 1) % 200,
                    (position + 1) // 200 * 200 + 50,
                    min(300, (position + 1) // 200 * 200),
                )
            ]
    # Each result is installed at exactly cut + refit_lag, whatever the fit's speed.
    assert installed == {0: 1, 1: 250, 2: 450, 3: 650}


def test_it_predicts_nothing_before_its_first_model_and_is_scored_between_refits():
    trainer = ModelTrainer(spec())
    stream = events(600)
    window = trainer.candidate("hgb")
    for position, (x, y) in enumerate(stream[:250]):
        assert (window.predict_one(x) is None) == (position < 250)
        trainer.learn(x, y, source="s", position=position)
    feed(trainer, stream, 250)
    cumulative = trainer.report()["candidates"]["hgb"]["cumulative"]
    # 250 events unpredicted (errors), then a fitted model scored on the rest.
    assert cumulative["n"] == 600 and cumulative["missing"] == 250
    assert cumulative["accuracy"] > 0.5


def test_inline_and_thread_pool_fits_give_the_same_model_and_snapshots():
    stream = events(900)
    inline = ModelTrainer(spec())
    feed(inline, stream)
    pooled = ModelTrainer(spec())
    with ThreadPoolExecutor(max_workers=2) as pool:
        feed(pooled, stream, pool=pool)
    assert pooled.candidate("hgb").n_refits == inline.candidate("hgb").n_refits == 4
    assert predictions(pooled.candidate("hgb")) == predictions(inline.candidate("hgb"))
    assert pooled.snapshot() == inline.snapshot()


def test_a_snapshot_taken_while_a_job_is_pending_restores_and_installs_the_same_model():
    stream = events(900)
    uninterrupted = ModelTrainer(spec())
    feed(uninterrupted, stream)
    interrupted = ModelTrainer(spec())
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = feed(interrupted, stream[:420], pool=pool)
        assert [job.cut for job in interrupted.refit_jobs()] == [400]
        # A result handed in but not installed yet is not part of the snapshot.
        (job,) = interrupted.refit_jobs()
        interrupted.provide_refit(job, futures.pop(id(job)).result())
        blob = interrupted.snapshot()
    restored, _ = ModelTrainer.restore(blob, spec())
    assert [job.cut for job in restored.refit_jobs()] == [400]
    with ThreadPoolExecutor(max_workers=1) as pool:
        feed(restored, stream, 420, pool=pool)
    assert predictions(restored.candidate("hgb")) == predictions(uninterrupted.candidate("hgb"))
    # The artifact a promotion would publish: the same bytes.
    assert canonical_dumps(restored.candidate("hgb")) == canonical_dumps(
        uninterrupted.candidate("hgb")
    )


def test_a_promoted_copy_pickles_the_same_whether_or_not_a_result_was_handed_in():
    candidate = build_candidate(WINDOW, "classification")
    for x, y in events(220):
        candidate.learn_one(x, y)
    before = pickle.dumps(candidate)
    (job,) = candidate.pending_refits
    candidate.provide(job, job.fit())
    assert pickle.dumps(candidate) == before


def test_a_single_class_window_is_not_refitted():
    candidate = build_candidate({**WINDOW, "refit_lag": 0}, "classification")
    for _ in range(200):
        candidate.learn_one({"x0": 1.0}, True)
    assert candidate.pending_refits == () and candidate.n_refits == 0
    assert candidate.request_refit() is None


def test_a_refit_request_cuts_a_job_once_per_event():
    candidate = build_candidate(WINDOW, "classification")
    for x, y in events(120):
        candidate.learn_one(x, y)
    job = candidate.request_refit()
    assert job is not None and (job.cut, job.due, len(job.labels)) == (120, 170, 120)
    assert candidate.request_refit() is None


@pytest.mark.parametrize(
    ("name", "task"),
    [("RandomForestRegressor", "regression"), ("LogisticRegression", "classification")],
)
def test_estimators_get_a_fixed_random_state(name, task):
    candidate = build_candidate({"name": "w", "sklearn_window": name}, task)
    assert isinstance(candidate, SklearnWindowCandidate)
    assert candidate.estimator.get_params()["random_state"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sklearn_window": "SGDClassifier"}, "not allowed for 'sklearn_window'"),
        ({"sklearn_window": "Ridge"}, "Ridge is for regression"),
        ({"refit_lag": -1}, "'refit_lag' must be an integer >= 0"),
        ({"refit_every": 0}, "'refit_every' must be a positive integer"),
        ({"batch_size": 10}, "unknown keys ['batch_size']"),
        ({"params": {"max_iter": "many"}}, "bad params for HistGradientBoostingClassifier"),
    ],
)
def test_invalid_window_specs_are_refused(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_candidate({**WINDOW, **change}, "classification")
