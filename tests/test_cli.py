"""The `memgpt generate` and `memgpt chat` commands: exit codes, exact output, one-line errors, a real terminal."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

import pytest

import memgpt_runtime as mr
from memgpt_runtime.chat import HELP

MEMGPT = [sys.executable, "-m", "memgpt_runtime.cli"]


def memgpt(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MEMGPT, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def lm(tiny_llama_export):
    return mr.load(tiny_llama_export)


def test_generate_prints_the_continuation(tiny_llama_export, lm):
    run = memgpt("generate", tiny_llama_export, "Hello world", "--max-new-tokens", 8, "--quiet")
    assert run.returncode == 0, run.stderr
    assert run.stdout == lm.generate_text("Hello world", max_new_tokens=8) + "\n"
    assert run.stderr == ""


def test_generate_reports_timing_on_stderr(tiny_llama_export):
    run = memgpt("generate", tiny_llama_export, "Hello", "--max-new-tokens", 4, "--eos-token-id", 0)
    assert run.returncode == 0
    assert run.stderr.startswith("[2 prompt tokens, 4 new tokens in ") and run.stderr.endswith(" tokens/s]\n")


def test_generate_reads_standard_input(tiny_llama_export, lm):
    run = memgpt("generate", tiny_llama_export, "-", "--max-new-tokens", 5, "--quiet", stdin="Once upon a time")
    assert run.stdout == lm.generate_text("Once upon a time", max_new_tokens=5) + "\n"


def test_generate_chat_beam_json(tiny_llama_export, lm):
    run = memgpt(
        "generate",
        tiny_llama_export,
        "--chat",
        "hi there",
        "--num-beams",
        3,
        "--num-return-sequences",
        2,
        "--max-new-tokens",
        6,
        "--json",
        "--early-stopping",
        "never",
    )
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": "hi there"}], add_generation_prompt=True)
    ref = lm.generate(
        [ids],
        num_beams=3,
        num_return_sequences=2,
        max_new_tokens=6,
        early_stopping="never",
        return_dict_in_generate=True,
    )
    assert body["prompt_tokens"] == len(ids)
    assert [o["text"] for o in body["outputs"]] == lm.tokenizer.batch_decode(
        ref.sequences[:, len(ids) :], skip_special_tokens=True
    )
    assert [round(o["score"], 4) for o in body["outputs"]] == [round(float(s), 4) for s in ref.sequences_scores]


def test_generate_stream_prints_the_same_text(tiny_llama_export, lm):
    run = memgpt("generate", tiny_llama_export, "Hello world", "--stream", "--max-new-tokens", 8, "--quiet")
    assert run.stdout == lm.generate_text("Hello world", max_new_tokens=8) + "\n"


def test_stream_and_plain_report_the_same_text_and_token_count(tiny_llama_export, lm):
    # the tiny model repeats its last token; no_repeat_ngram_size=1 makes each new token new, and the third one EOS
    ids = lm.tokenizer.encode("Hello world")
    eos = int(lm.generate([ids], max_new_tokens=3, no_repeat_ngram_size=1, eos_token_id=[])[0, -1])
    args = (
        "generate",
        tiny_llama_export,
        "Hello world",
        "--max-new-tokens",
        8,
        "--no-repeat-ngram-size",
        1,
        "--eos-token-id",
        eos,
    )
    plain, streamed, as_json = memgpt(*args), memgpt(*args, "--stream"), memgpt(*args, "--json")
    assert streamed.returncode == plain.returncode == as_json.returncode == 0, streamed.stderr
    assert streamed.stdout == plain.stdout
    assert streamed.stderr.startswith(f"[{len(ids)} prompt tokens, 3 new tokens in ")
    assert plain.stderr.startswith(f"[{len(ids)} prompt tokens, 3 new tokens in ")
    assert json.loads(as_json.stdout)["outputs"][0]["token_ids"][-1] == eos
    assert len(json.loads(as_json.stdout)["outputs"][0]["token_ids"]) == 3


def test_generate_defaults_to_128_new_tokens_when_the_model_sets_no_length(tiny_gpt2_export):
    gpt2 = mr.load(tiny_gpt2_export)
    assert not {"max_new_tokens", "max_length"} & set(gpt2.manifest.generation_defaults)
    run = memgpt("generate", tiny_gpt2_export, "Hello", "--eos-token-id", 0, "--json")
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    expected = min(128, gpt2.manifest.context_length - body["prompt_tokens"])
    assert len(body["outputs"][0]["token_ids"]) == expected


def test_generate_translates_with_an_encoder_decoder_model(tiny_marian_export):
    lm = mr.load(tiny_marian_export)
    run = memgpt(
        "generate",
        tiny_marian_export,
        "Hello world",
        "--num-beams",
        3,
        "--max-new-tokens",
        6,
        "--json",
        "--bad-words-ids",
        "[[5], [7, 8]]",
        "--renormalize-logits",
    )
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    options = dict(num_beams=3, max_new_tokens=6, bad_words_ids=[[5], [7, 8]], renormalize_logits=True)
    assert body["outputs"][0]["text"] == lm.generate_text("Hello world", **options)
    ids = lm.generate([lm.tokenizer.encode("Hello world")], **options)[0, 1:]
    assert body["outputs"][0]["token_ids"] == [int(t) for t in ids[: len(body["outputs"][0]["token_ids"])]]


def test_chat_refuses_an_encoder_decoder_model(tiny_marian_export):
    run = memgpt("chat", tiny_marian_export, stdin="hi\n")
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        "error: this model has no chat template; use `memgpt generate` for plain text"
    ]


def test_bad_words_ids_must_be_json_lists(tiny_llama_export):
    run = memgpt("generate", tiny_llama_export, "hi", "--bad-words-ids", "5,6")
    assert run.returncode == 2
    assert "expected a JSON list of lists of token ids" in run.stderr and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-p", "1.5", "--do-sample"], "error: top_p must be in (0, 1], got 1.5"),
        (["--temperature", "x"], "error: argument --temperature: invalid float value: 'x'"),
        (
            ["--num-beams", "2", "--num-return-sequences", "3"],
            "error: num_return_sequences must be at most num_beams (2), got 3",
        ),
        (["--early-stopping", "maybe"], "error: argument --early-stopping: invalid choice: 'maybe'"),
        (["--max-new-tokens", "1000"], "context is 256"),
    ],
)
def test_bad_options_give_one_line_and_a_non_zero_exit(tiny_llama_export, args, message):
    run = memgpt("generate", tiny_llama_export, "Hello", *args)
    assert run.returncode != 0
    assert run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and message in run.stderr


def test_missing_folder_is_one_line(tmp_path):
    run = memgpt("generate", tmp_path / "nope", "Hello")
    assert run.returncode == 1
    assert (
        run.stderr
        == f"error: model folder {tmp_path / 'nope'} does not exist; export one with `memgpt export MODEL -o {tmp_path / 'nope'}`\n"
    )


def test_empty_prompt_is_one_line(tiny_llama_export):
    run = memgpt("generate", tiny_llama_export, "-", stdin="")
    assert run.returncode == 2
    assert run.stderr == "error: the prompt is empty; give some text to continue\n"


# no token twice in a reply: the tiny model's plain greedy reply is six spaces, which would hide an empty one
VARIED = {"max_new_tokens": 6, "no_repeat_ngram_size": 1}
VARIED_ARGS = ["--max-new-tokens", "6", "--no-repeat-ngram-size", "1"]


def test_chat_through_pipes(tiny_llama_export, lm):
    run = memgpt("chat", tiny_llama_export, *VARIED_ARGS, stdin="hello\n/reset\nhello\n")
    assert run.returncode == 0, run.stderr
    reply = lm.generate_text([{"role": "user", "content": "hello"}], chat=True, **VARIED)
    assert reply.strip()
    # the same question after /reset gets the same reply: the history was cleared
    assert run.stdout == f"{HELP}\n> {reply}\n> (conversation cleared)\n> {reply}\n> \n"


class Terminal:
    """A child process on a pseudo-terminal, read and written like a person at a keyboard."""

    def __init__(self, args):
        master, slave = os.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
        os.close(slave)
        self.master = master
        self.seen = ""

    def read_until(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"timed out waiting for {text!r}; screen so far: {self.seen!r}")
            try:
                chunk = os.read(self.master, 4096).decode("utf-8", "replace")
            except OSError:  # the child closed the terminal
                chunk = ""
            if not chunk:
                raise AssertionError(f"terminal closed before {text!r}; screen so far: {self.seen!r}")
            self.seen += chunk
        head, _, self.seen = self.seen.partition(text)
        return head

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        code = self.proc.wait(timeout=30)
        os.close(self.master)
        return code


def test_chat_in_a_terminal_keeps_history_resets_and_leaves_on_ctrl_d(tiny_llama_export, lm):
    term = Terminal([*MEMGPT, "chat", str(tiny_llama_export), *VARIED_ARGS])
    term.read_until("> ")
    term.type("hello\n")
    first = term.read_until("> ")
    history = [{"role": "user", "content": "hello"}]
    reply = lm.generate_text(history, chat=True, **VARIED)
    assert reply.strip() and reply.strip() in first
    term.type("how are you\n")
    second = term.read_until("> ")
    history += [{"role": "assistant", "content": reply.strip()}, {"role": "user", "content": "how are you"}]
    answer = lm.generate_text(history, chat=True, **VARIED)
    assert answer.strip() and answer.strip() in second
    term.type("/reset\n")
    assert "(conversation cleared)" in term.read_until("> ")
    term.type("\x04")  # Ctrl-D
    assert term.close() == 0
