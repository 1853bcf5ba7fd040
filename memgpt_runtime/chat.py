"""`memgpt chat`: an interactive multi-turn conversation that keeps its history in the chat template.

Each turn renders the whole history with the model's template and streams the reply (beam search, which
decides at the end, prints it whole). `/reset` clears the history, `/exit` or Ctrl-D leaves, Ctrl-C stops the
reply being written and keeps the conversation. A turn that fails (a message too long, a template that
refuses it) says so in one line and leaves the conversation as it was.
"""

from __future__ import annotations

import sys

from .errors import MemgptError, PromptTooLongError, UsageError

HELP = "Type a message. /reset clears the conversation, /exit or Ctrl-D leaves."


def chat_loop(lm, options: dict, system: str | None = None, read=input, write=None) -> int:
    if not lm.tokenizer.chat_template:
        raise UsageError("this model has no chat template; use `memgpt generate` for plain text")
    config = lm.generation_config(**options)  # bad options fail now, not at the first message
    if config.num_return_sequences > 1:
        raise UsageError("chat keeps one reply per turn; drop --num-return-sequences")
    write = write or _write_stdout
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
        try:
            if config.num_beams > 1:
                reply.append(lm.generate_text(history, chat=True, **options))
                write(reply[0])
            else:
                for piece in lm.generate_text(history, chat=True, stream=True, **options):
                    reply.append(piece)
                    write(piece)
        except KeyboardInterrupt:
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


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
