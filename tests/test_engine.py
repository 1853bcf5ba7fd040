"""The continuous-batching engine: every request's answer is the one `generate()` gives it alone, whatever else
runs beside it and whenever it arrives; cancelling frees its slots; a full queue refuses; a chat's next turn
reuses the KV of the last; models without shared slots run one request at a time behind the same handles."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

import memgpt_runtime as mr
from memgpt_runtime import scheduler as scheduler_module
from memgpt_runtime.engine import Cancelled, Engine, QueueFull
from memgpt_runtime.request import Done, Step

PROMPTS = [
    [5, 6, 7],
    [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],
    [30],
    list(range(40, 95)),
    [7, 7, 7, 7, 8],
    list(range(100, 140)),
]
OPTIONS = [
    dict(max_new_tokens=12),
    dict(max_new_tokens=9, num_beams=3, num_return_sequences=2),
    dict(max_new_tokens=10, do_sample=True, top_k=20, seed=7, num_return_sequences=2),
    dict(max_new_tokens=15, repetition_penalty=1.3),
    dict(max_new_tokens=8, num_beams=2, length_penalty=0.5, early_stopping=True),
    dict(max_new_tokens=11, do_sample=True, temperature=0.8, top_p=0.9, seed=3),
    dict(max_new_tokens=6, no_repeat_ngram_size=2, eos_token_id=[9]),
]


def alone(lm, prompt, options):
    return lm.generate([prompt], return_dict_in_generate=True, **options)


def assert_same(result, reference):
    np.testing.assert_array_equal(result.sequences, reference.sequences)
    if reference.sequences_scores is not None:
        np.testing.assert_allclose(result.sequences_scores, reference.sequences_scores, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(result.lengths, reference.lengths)


def submit_in_random_order(engine, jobs, seed):
    """Submit `jobs` (prompt, options) from threads, in a random order with random pauses; return the results."""
    rng = np.random.default_rng(seed)
    results = [None] * len(jobs)

    def client(i):
        time.sleep(float(rng.uniform(0, 0.05)))
        results[i] = engine.submit(jobs[i][0], **jobs[i][1]).result(timeout=120)

    threads = [threading.Thread(target=client, args=(i,)) for i in rng.permutation(len(jobs))]
    for t in threads:
        t.start()
        time.sleep(float(rng.uniform(0, 0.01)))
    for t in threads:
        t.join(timeout=180)
    return results


@pytest.fixture(params=["tiny_llama_export", "tiny_llama_int8", "tiny_llama_int4", "tiny_qwen2_export"])
def lm(request):
    return mr.load(request.getfixturevalue(request.param))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_answer_is_the_one_it_gets_alone_whatever_runs_beside_it(lm, seed):
    rng = np.random.default_rng(seed)
    jobs = [(PROMPTS[rng.integers(len(PROMPTS))], OPTIONS[rng.integers(len(OPTIONS))]) for _ in range(10)]
    with Engine(lm, slots=int(rng.integers(3, 9))) as engine:
        results = submit_in_random_order(engine, jobs, seed)
    for (prompt, options), result in zip(jobs, results):
        assert_same(result, alone(lm, prompt, options))


def test_prompts_in_small_chunks_give_the_same_answers_in_generate_and_in_the_engine(tiny_llama_export):
    lm = mr.load(tiny_llama_export)
    whole = [alone(lm, p, OPTIONS[0]) for p in PROMPTS]
    lm.session.prefill_chunk = 4
    chunked = [alone(lm, p, OPTIONS[0]) for p in PROMPTS]
    for a, b in zip(whole, chunked):  # fp32: chunking moves the last bits only, never a greedy choice here
        np.testing.assert_array_equal(a.sequences, b.sequences)
    with Engine(lm, slots=4) as engine:
        results = submit_in_random_order(engine, [(p, OPTIONS[0]) for p in PROMPTS], seed=5)
    for result, reference in zip(results, chunked):
        assert_same(result, reference)
    lm.session.prefill_chunk = 256
    batch = lm.generate(PROMPTS, num_beams=2, max_new_tokens=8)  # a padded batch, one chunk
    lm.session.prefill_chunk = 4
    np.testing.assert_array_equal(lm.generate(PROMPTS, num_beams=2, max_new_tokens=8), batch)  # rows in chunks


def test_a_burst_of_prompts_prefilled_together_gets_the_answers_each_gets_alone(tiny_llama_int8):
    lm = mr.load(tiny_llama_int8)
    jobs = [(p, dict(max_new_tokens=6)) for p in PROMPTS] + [(PROMPTS[0], dict(max_new_tokens=6, num_beams=2))]
    with Engine(lm, slots=12) as engine:
        handles = [engine.submit(p, **o) for p, o in jobs]  # queued faster than the engine admits them
        results = [h.result(timeout=60) for h in handles]
    for (prompt, options), result in zip(jobs, results):
        assert_same(result, alone(lm, prompt, options))


def test_lone_positions_run_beside_a_scratch_row_where_the_model_needs_two(tiny_llama_export):
    lm = mr.load(tiny_llama_export)
    lm.session._min_rows = 2  # as int4: no step or chunk of one position runs alone
    lm.session.prefill_chunk = 4
    jobs = [([5, 6, 7, 8, 9], dict(max_new_tokens=7)), ([30], dict(max_new_tokens=5)), (PROMPTS[1], OPTIONS[1])]
    with Engine(lm, slots=3) as engine:
        results = submit_in_random_order(engine, jobs, seed=2)
    for (prompt, options), result in zip(jobs, results):
        assert_same(result, alone(lm, prompt, options))


def test_steps_stream_the_tokens_of_the_result(tiny_llama_export):
    lm = mr.load(tiny_llama_export)
    with Engine(lm, slots=2) as engine:
        handle = engine.submit(PROMPTS[1], max_new_tokens=10)
        events = list(handle)
    assert isinstance(events[-1], Done) and all(isinstance(e, Step) for e in events[:-1])
    streamed = [int(e.tokens[0]) for e in events[:-1] if e.live[0]]
    result = events[-1].result
    assert streamed == result.sequences[0, handle.prompt_len :].tolist()[: int(result.lengths[0])]


def test_asyncio_callers_await_events_without_blocking_the_loop(tiny_llama_export):
    lm = mr.load(tiny_llama_export)

    async def main(engine):
        async def one(prompt):
            tokens = []
            async for event in engine.submit(prompt, max_new_tokens=8).events():
                if isinstance(event, Step):
                    tokens.append(int(event.tokens[0]))
            return tokens

        ticks = 0

        async def ticker():  # proves the loop keeps running while the engine works
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick = asyncio.create_task(ticker())
        streams = await asyncio.gather(*(one(p) for p in PROMPTS[:4]))
        seen = ticks
        long = [e async for e in engine.submit(PROMPTS[0], max_new_tokens=150, min_new_tokens=150).events()]
        tick.cancel()
        return streams, ticks - seen, len(long)

    with Engine(lm, slots=4) as engine:
        streams, ticks, events = asyncio.run(main(engine))
    for prompt, tokens in zip(PROMPTS[:4], streams):
        assert tokens == alone(lm, prompt, dict(max_new_tokens=8)).sequences[0, len(prompt) :].tolist()
    assert events == 151 and ticks >= 10  # the loop ticked all along the 150-token stream


def test_an_awaiting_caller_can_be_woken_every_few_steps_and_still_gets_every_event(tiny_llama_export):
    lm = mr.load(tiny_llama_export)

    async def main(engine, every):
        loop, wakes = asyncio.get_running_loop(), 0
        real = loop.call_soon_threadsafe

        def counted(callback, *args, **kwargs):  # the engine thread wakes the loop through this
            nonlocal wakes
            wakes += 1
            return real(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counted
        events = [e async for e in engine.submit(PROMPTS[1], max_new_tokens=40, min_new_tokens=40).events(every)]
        return events, wakes

    with Engine(lm, slots=2) as engine:
        each, each_wakes = asyncio.run(main(engine, 1))
        eighth, eighth_wakes = asyncio.run(main(engine, 8))
    tokens = lambda events: [int(e.tokens[0]) for e in events if isinstance(e, Step)]  # noqa: E731
    assert len(each) == len(eighth) == 41 and isinstance(eighth[-1], Done)
    solo = alone(lm, PROMPTS[1], dict(max_new_tokens=40, min_new_tokens=40)).sequences[0, len(PROMPTS[1]) :]
    assert tokens(eighth) == tokens(each) == solo.tolist()
    assert eighth_wakes <= 40 // 8 + 1 < each_wakes  # a wake-up per 8 steps, and one at the end


def test_cancelling_frees_the_slots_for_the_next_request(tiny_llama_export):
    lm = mr.load(tiny_llama_export)
    with Engine(lm, slots=1, max_queue=4) as engine:
        long = engine.submit(PROMPTS[0], max_new_tokens=200, min_new_tokens=200)
        waiting = engine.submit(PROMPTS[2], max_new_tokens=5)
        next(iter(long))  # the first token is out: it holds the only slot
        assert engine.stats()["waiting"] == 1
        long.cancel()
        with pytest.raises(Cancelled):
            long.result(timeout=30)
        assert_same(waiting.result(timeout=30), alone(lm, PROMPTS[2], dict(max_new_tokens=5)))
        deadline = time.monotonic() + 10
        while engine.stats()["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.stats() == {"running": 0, "waiting": 0, "reused_tokens": 0}


def test_a_full_queue_refuses_new_work(tiny_llama_export):
    lm = mr.load(tiny_llama_export)
    with Engine(lm, slots=1, max_queue=2) as engine:
        handles = [engine.submit(PROMPTS[0], max_new_tokens=200, min_new_tokens=200)]
        next(iter(handles[0]))  # it holds the only slot
        handles += [engine.submit(PROMPTS[0], max_new_tokens=5) for _ in range(2)]
        with pytest.raises(QueueFull, match=r"queue is full \(2 requests waiting\); retry later"):
            engine.submit(PROMPTS[0], max_new_tokens=5)
        for h in handles:
            h.cancel()


@pytest.mark.parametrize(
    "prompt, options, error, message",
    [
        ([[5, 6], [7, 8]], {}, mr.UsageError, "one prompt per request"),
        ([5, 6], dict(top_p=2.0), mr.UsageError, "top_p"),
        ([5, 6], dict(num_beams=5), mr.UsageError, "needs 5 slots"),
        ([5] * 250, dict(max_new_tokens=20), mr.PromptTooLongError, "context is 256"),
    ],
)
def test_bad_requests_are_refused_at_submit(tiny_llama_export, prompt, options, error, message):
    with Engine(mr.load(tiny_llama_export), slots=4) as engine:
        with pytest.raises(error, match=message):
            engine.submit(prompt, **options)


def test_the_next_chat_turn_reuses_the_kv_of_the_last(tiny_llama_export):
    lm = mr.load(tiny_llama_export)
    turn1 = PROMPTS[3]
    with Engine(lm, slots=2) as engine:
        first = engine.submit(turn1, max_new_tokens=10, reuse_prefix=True).result(timeout=60)
        turn2 = first.sequences[0].tolist() + [7, 8, 9]
        second = engine.submit(turn2, max_new_tokens=10, reuse_prefix=True).result(timeout=60)
        reused = engine.stats()["reused_tokens"]
    assert reused == len(turn1) + 10 - 1  # every position the first turn computed (its last token was never fed)
    # fp32: a carried-over cache moves the last bits only; the answer is the one computed from scratch
    assert_same(second, alone(lm, turn2, dict(max_new_tokens=10)))


@pytest.mark.parametrize("folder", ["tiny_gpt2_export", "tiny_t5_export"])
def test_models_without_shared_slots_run_one_at_a_time_with_the_same_answers(request, folder):
    lm = mr.load(request.getfixturevalue(folder))
    jobs = [(PROMPTS[i], OPTIONS[i]) for i in range(4)]
    with Engine(lm) as engine:
        assert not engine.batched
        results = submit_in_random_order(engine, jobs, seed=1)
    for (prompt, options), result in zip(jobs, results):
        assert_same(result, alone(lm, prompt, options))


def test_closing_the_engine_ends_unfinished_requests(tiny_llama_export):
    engine = Engine(mr.load(tiny_llama_export), slots=1)
    handle = engine.submit(PROMPTS[0], max_new_tokens=200, min_new_tokens=200)
    engine.close()
    with pytest.raises(mr.MemgptError, match="closed"):
        handle.result(timeout=30)
    with pytest.raises(mr.MemgptError, match="closed"):
        engine.submit(PROMPTS[0])


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["smollm2_int8_export", "smollm2_int4_export"])
def test_the_default_model_answers_alike_in_the_engine_and_alone(request, folder):
    lm = mr.load(request.getfixturevalue(folder), batch_invariant=True)
    chats = [
        "Name three rivers.",
        "What is 2 + 2?",
        "Write a haiku about the sea.",
        "Who wrote Hamlet?",
        "Give me a synonym of happy.",
        "What is the capital of Italy?",
        "Count to five.",
        "Say hello in French.",
    ]
    prompts = [lm.encode_prompt(c, chat=True) for c in chats]
    jobs = [(p, dict(max_new_tokens=40)) for p in prompts] + [(prompts[0], dict(max_new_tokens=20, num_beams=3))]
    with Engine(lm, slots=8) as engine:
        results = submit_in_random_order(engine, jobs, seed=11)
    for (prompt, options), result in zip(jobs, results):
        assert_same(result, alone(lm, prompt, options))


@pytest.mark.slow
def test_a_lone_int4_row_runs_alone_unless_batch_invariance_is_asked_for(smollm2_int4_export, tiny_llama_export):
    assert mr.load(smollm2_int4_export).session.min_rows == 1  # the fast kernel for one row: answers may differ
    assert mr.load(smollm2_int4_export, batch_invariant=True).session.min_rows == 2  # its lone row differs
    assert mr.load(tiny_llama_export, batch_invariant=True).session.min_rows == 1  # fp32: the same bits at any count


# -- the scheduling policy alone ---------------------------------------------------------------------------------


def test_the_scheduler_places_in_arrival_order_into_the_lowest_free_run():
    s = scheduler_module.Scheduler(slots=6, max_queue=4)
    a, b, c, d = (scheduler_module.Ticket(rows=r, prompt_len=10) for r in (2, 3, 2, 1))
    for t in (a, b, c, d):
        s.submit(t)
    assert s.admit() == [a, b] and (a.start, b.start) == (0, 2)  # c (2 rows) does not fit: d waits behind it
    s.remove(a)
    assert s.admit() == [c, d] and (c.start, d.start) == (0, 5)


def test_requests_that_fit_free_slots_take_no_room_in_the_queue():
    s = scheduler_module.Scheduler(slots=3, max_queue=1)
    a, b, c, d = (scheduler_module.Ticket(rows=r, prompt_len=10) for r in (1, 2, 1, 1))
    for t in (a, b, c):  # a and b fill the three free slots at the next step; c is the one waiting
        s.submit(t)
    with pytest.raises(QueueFull, match=r"queue is full \(1 requests waiting\)"):
        s.submit(d)
    assert s.admit() == [a, b]
    with pytest.raises(QueueFull):  # c still waits: no slot was freed
        s.submit(d)
    s.remove(a)
    s.submit(d)  # c takes a's slot at the next step, d waits


def test_the_scheduler_runs_one_prompt_chunk_at_a_time_oldest_first():
    s = scheduler_module.Scheduler(slots=4, max_queue=4)
    a, b = scheduler_module.Ticket(rows=1, prompt_len=600), scheduler_module.Ticket(rows=1, prompt_len=5)
    s.submit(a), s.submit(b), s.admit()
    assert s.next_prefill() is a and scheduler_module.chunk_bounds(a.prefilled, 600, 256) == (0, 256)
    a.prefilled = 256
    assert scheduler_module.chunk_bounds(a.prefilled, 600, 256) == (256, 512)
    a.prefilled = 600
    assert s.next_prefill() is b and s.decoding() == [a] and s.high_water() == 1


def test_adjacent_prompts_prefill_together_within_one_chunk_of_positions():
    s = scheduler_module.Scheduler(slots=8, max_queue=8)
    tickets = [scheduler_module.Ticket(rows=r, prompt_len=n) for r, n in ((1, 40), (2, 30), (1, 50), (1, 300))]
    for t in tickets:
        s.submit(t)
    s.admit()
    assert (
        s.prefill_group(256) == tickets[:3]
    )  # 4 slots x 50 positions = 200 <= 256; the 300-token prompt would not fit
    tickets[0].prefilled = 40
    assert s.prefill_group(256) == tickets[1:3]
    assert s.prefill_group(64) == [tickets[1]]  # 3 slots x 50 > 64


def test_chunks_end_at_multiples_of_the_chunk_size_from_the_prompt_start():
    assert scheduler_module.chunk_bounds(100, 600, 256) == (100, 256)  # after a reused prefix of 100
    assert scheduler_module.chunk_bounds(512, 600, 256) == (512, 600)
