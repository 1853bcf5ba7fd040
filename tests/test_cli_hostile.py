"""The command line under hostile use: bad ids and thread counts, bytes that are not UTF-8, closed pipes, signals.

Each refusal is one line on stderr and a non-zero exit; a reader that leaves (`| head`) ends the command quietly
with 141, as Unix tools end; Ctrl-C exits 130 and SIGTERM 143, each with one line and no native abort.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import memgpt_runtime as mr

MEMGPT = [sys.executable, "-m", "memgpt_runtime.cli"]


def memgpt(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    argv = [*MEMGPT, *(a if isinstance(a, bytes) else str(a) for a in args)]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def lm(tiny_llama_export):
    return mr.load(tiny_llama_export)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "1000"], f"argument --threads: expected a whole number from 1 to {os.cpu_count()}"),
        (["--threads", "-1"], "argument --threads: expected a whole number"),
        (["--threads", "two"], "argument --threads: expected a whole number"),
        (["--bad-words-ids", "[[999999]]"], "bad_words_ids must hold token ids in [0, 384), got 999999"),
        (["--forced-eos-token-id", "999999"], "forced_eos_token_id must be a token id in [0, 384), got 999999"),
        (["--eos-token-id", "999999"], "eos_token_id must be a token id in [0, 384), got 999999"),
        (["--forced-bos-token-id", "999999"], "forced_bos_token_id must be a token id in [0, 384), got 999999"),
        (["--pad-token-id", "999999"], "pad_token_id must be a token id in [0, 384), got 999999"),
    ],
)
def test_bad_ids_and_thread_counts_are_one_line(tiny_llama_export, args, message):
    run = memgpt("generate", tiny_llama_export, "Hello", "--max-new-tokens", 4, *args)
    assert run.returncode == 2
    assert run.stdout == b""
    lines = run.stderr.decode().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_an_argument_that_is_not_utf8_reads_as_replacement_characters(tiny_llama_export, lm):
    run = memgpt("generate", tiny_llama_export, b"Hello \xff\xfe world", "--max-new-tokens", 5, "--quiet")
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode() == lm.generate_text("Hello \ufffd\ufffd world", max_new_tokens=5) + "\n"


def test_standard_input_that_is_not_utf8_reads_as_replacement_characters(tiny_llama_export, lm):
    run = memgpt("generate", tiny_llama_export, "-", "--max-new-tokens", 5, "--quiet", stdin=b"Once \xc3( upon")
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode() == lm.generate_text("Once \ufffd( upon", max_new_tokens=5) + "\n"


def test_chat_survives_a_line_that_is_not_utf8(tiny_llama_export, lm):
    run = memgpt("chat", tiny_llama_export, "--max-new-tokens", 4, stdin=b"hi \xff\nhello\n")
    assert run.returncode == 0, run.stderr
    first = [{"role": "user", "content": "hi \ufffd"}]
    reply = lm.generate_text(first, chat=True, max_new_tokens=4)
    second = first + [{"role": "assistant", "content": reply.strip()}, {"role": "user", "content": "hello"}]
    assert lm.generate_text(second, chat=True, max_new_tokens=4) in run.stdout.decode()  # the history was kept


@pytest.mark.parametrize("mode", [[], ["--stream"], ["--json"]])
def test_a_reader_that_left_ends_the_command_quietly(tiny_llama_export, mode):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte, as `| head -c 0` would be
    proc = subprocess.Popen(
        [*MEMGPT, "generate", str(tiny_llama_export), "Hello", "--max-new-tokens", "40", *mode],
        stdout=write,
        stderr=subprocess.PIPE,
    )
    os.close(write)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert b"terminate called" not in err and b"Traceback" not in err and b"Exception ignored" not in err


def test_chat_refuses_bad_options_before_the_first_message(tiny_llama_export):
    run = memgpt("chat", tiny_llama_export, "--top-p", "1.5", "--do-sample", stdin=b"hello\n")
    assert (run.returncode, run.stdout) == (2, b"")
    assert run.stderr == b"error: top_p must be in (0, 1], got 1.5\n"


def test_chat_answers_with_beam_search(tiny_llama_export, lm):
    run = memgpt("chat", tiny_llama_export, "--num-beams", 3, "--max-new-tokens", 5, stdin=b"hello\n")
    assert run.returncode == 0, run.stderr
    reply = lm.generate_text([{"role": "user", "content": "hello"}], chat=True, num_beams=3, max_new_tokens=5)
    assert reply and reply in run.stdout.decode()


def test_chat_blames_an_over_long_message_on_the_message(tiny_llama_export):
    run = memgpt("chat", tiny_llama_export, "--max-new-tokens", 4, stdin=b"word " * 400 + b"\nhello\n")
    assert run.returncode == 0, run.stderr
    out = run.stdout.decode()
    assert "(this message alone does not fit the model's context with the reply; shorten it)" in out
    assert "no longer fits" not in out


def test_sigterm_ends_chat_with_one_line(tiny_llama_export):
    proc = subprocess.Popen(
        [*MEMGPT, "chat", str(tiny_llama_export)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline().startswith(b"Type a message.")  # loaded and waiting for input
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (143, b"error: terminated\n")


def _ctrl_c_as_at_a_terminal() -> None:
    # subtle: a job started in the background of a script (`cmd &`) inherits SIGINT ignored, and Python then
    # never raises KeyboardInterrupt; a user's Ctrl-C reaches a foreground process, whose SIGINT is the default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, code, line", [(signal.SIGINT, 130, b"error: interrupted\n"), (signal.SIGTERM, 143, b"error: terminated\n")]
)
def test_a_signal_during_a_stream_exits_with_one_line(smollm2_int8_export, sig, code, line):
    for _ in range(3):  # it used to abort natively 2 times in 3
        proc = subprocess.Popen(
            [
                *MEMGPT,
                "generate",
                str(smollm2_int8_export),
                "Tell me a long story.",
                "--chat",
                "--stream",
                "--max-new-tokens",
                "400",
                "--min-new-tokens",
                "400",
                "--threads",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_ctrl_c_as_at_a_terminal,
        )
        assert proc.stdout.read(1)  # streaming has started
        time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert (proc.returncode, err) == (code, line)


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--quick", "--threads", "99"], f"--threads must be at most {os.cpu_count()}, this machine's CPUs"),
        (["bench", "--quick", "--repeats", "0"], "--threads and --repeats must be at least 1"),
    ],
)
def test_bench_counts_are_checked_before_anything_runs(args, message):
    run = memgpt(*args)
    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1 and message in run.stderr.decode()
