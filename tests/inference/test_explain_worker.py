"""The explanation worker's own limits: busy and late explanations are 503s, a broken worker too, never a 500."""

import asyncio

import pytest

from emotion_lab.inference.batching import Limits, RequestError
from emotion_lab.inference.explain_worker import ExplainWorker


def test_beyond_the_pending_limit_and_past_the_deadline_the_answer_is_503(tiny_model):
    async def run():
        worker = ExplainWorker(tiny_model, Limits(max_pending_explanations=1, explain_timeout_s=0.05), steps=8)
        worker.start()
        try:
            first = asyncio.create_task(worker.explain(["i feel happy"]))  # the child is still starting: late
            await asyncio.sleep(0.01)
            with pytest.raises(RequestError) as busy:
                await worker.explain(["i feel sad"])
            with pytest.raises(RequestError) as late:
                await first
            pending_after_the_deadline = worker.pending
        finally:
            await asyncio.to_thread(worker.stop)
        return busy.value, late.value, pending_after_the_deadline, worker.pending

    busy, late, pending_after_the_deadline, pending_at_the_end = asyncio.run(run())
    assert busy.status == 503 and "explanations busy: 1 requests waiting" in str(busy) and busy.may_retry
    assert late.status == 503 and "took longer than 0.05 s" in str(late) and late.may_retry
    # A request that gave up still holds its place until the worker is done with it.
    assert (pending_after_the_deadline, pending_at_the_end) == (1, 0)


def test_a_worker_that_cannot_load_its_model_answers_503_and_is_not_started_again(tmp_path):
    async def run():
        worker = ExplainWorker(tmp_path / "not_a_model", Limits(explain_timeout_s=120))
        worker.start()
        try:
            errors = []
            for _ in range(2):
                with pytest.raises(RequestError) as caught:
                    await worker.explain(["i feel happy"])
                errors.append(caught.value)
            return errors, worker.failed, worker._pool
        finally:
            await asyncio.to_thread(worker.stop)

    (first, second), failed, pool = asyncio.run(run())
    assert first.status == 503 and "the explanation worker stopped" in str(first)
    # No new child loading the model for every request: one line saying so instead.
    assert second.status == 503 and "could not load the model" in str(second)
    assert not second.may_retry  # answered without Retry-After: asking again would not help
    assert failed and pool is None
