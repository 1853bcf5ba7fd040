"""`memgpt chat`: an interactive multi-turn conversation that keeps its history in the chat template.

Each turn renders the whole history with the model's template and streams the reply (beam search, which
decides at the end, prints it whole). Turns run on an engine that keeps the KV of the last turn, so the next
one computes only its new tokens: the time to its first token does not grow with the history. `/reset` clears the history, `/exit` or Ctrl-D leaves, Ctrl-C stops the
reply being written and keeps the conversation. A turn that fails (a message too long, a template that
refuses it) says so in one line and leaves the conversation as it was.
"""

from __future__ import annotations

import sys

from .engine import Engine
from .errors import MemgptError, PromptTooLongError, UsageError
from .request import Done
from .stream import TextStream

HELP = "Type a message. /reset clears the conversation, /exit or Ctrl-D leaves."


def chat_loop(lm, options: dict, system: str | None = None, read=input, write=None) -> int:
    if not lm.tokenizer.chat_template:
        raise UsageError("this model has no chat template; use `memgpt generate` for plain text")
    config = lm.generation_config(**options)  # bad options fail now, not at the first message
    if config.num_return_sequences > 1:
        raise UsageError("chat keeps one reply per turn; drop --num-return-sequences")
    write = write or _write_stdout
    with Engine(lm, slots=max(config.num_beams, 2), max_queue=1) as engine:
        return _turns(lm, engine, options, config.num_beams > 1, system, read, write)


def _turns(lm, engine: Engine, options: dict, beams: bool, system: str | None, read, write) -> int:
    opening = [{"role": "system", "content": system}] if system else []
    history = list(opening)
    write(HELP + "\n")
    while True:
        try:
            line = read("> ")
        except EOFError:
            write("\n")
            return 0
        except KeyboardInterrupt:
            write("\n")
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = list(opening)
            write("(conversation cleared)\n")
            continue
        history.append({"role": "user", "content": text})
        reply = []
        handle = None
        try:
            ids = lm.encode_prompt(history)
            handle = engine.submit(ids, reuse_prefix=True, **options)
            for piece in _reply(lm, handle, beams):
                reply.append(piece)
                write(piece)
        except KeyboardInterrupt:
            if handle is not None:
                handle.cancel()
            write(" [stopped]")
        except PromptTooLongError:
            history.pop()
            if len(history) == len(opening):
                write("(this message alone does not fit the model's context with the reply; shorten it)\n")
            else:
                write("(the conversation no longer fits the model's context; /reset to start again)\n")
            continue
        except MemgptError as exc:
            history.pop()
            write(f"(error: {exc})\n")
            continue
        write("\n")
        history.append({"role": "assistant", "content": "".join(reply).strip()})


def _reply(lm, handle, beams: bool):
    """The reply's text as it becomes final (beam search: all of it at the end)."""
    text = TextStream(lm.tokenizer)
    for event in handle:
        if isinstance(event, Done):
            if beams:
                yield lm.tokenizer.decode(event.result.sequences[0, handle.prompt_len :], skip_special_tokens=True)
            else:
                yield text.flush()
        elif not beams and event.live[0]:
            yield text.push([int(event.tokens[0])])


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
