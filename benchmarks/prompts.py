"""The inputs every engine gets, as token ids made once by the memgpt fp32 tokenizer (so tokenization is not timed).

The long prompt and the perplexity text come from `data/english.txt` (original prose written for this suite);
the chat prompts go through the model's chat template.
"""

from __future__ import annotations

from pathlib import Path

TEXT_FILE = Path(__file__).parent / "data" / "english.txt"

CHAT_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."

BATCH_PROMPTS = [
    "What is the capital of France?",
    "Explain why the sky is blue in two sentences.",
    "Give me three tips for learning to cook.",
    "Write a haiku about autumn leaves.",
    "How do bees make honey?",
    "Summarize the plot of a detective story in one paragraph.",
    "What are the benefits of walking every day?",
    "Describe a busy market on a Saturday morning.",
]

AGREEMENT_PROMPTS = [
    "Tell me about the history of the bicycle.",
    "What should I pack for a weekend hiking trip?",
    "Explain how a rainbow forms.",
    "Write a friendly email inviting a colleague to lunch.",
    "Why do cats purr?",
]


def make_inputs(tokenizer, settings: dict) -> dict:
    """Token ids for every workload: prefill, chat, batch, agreement and text (perplexity)."""
    text_ids = tokenizer.encode(TEXT_FILE.read_text(encoding="utf-8"))

    def chat(prompt: str) -> list[int]:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)

    if len(text_ids) < settings["prefill_tokens"]:
        raise ValueError(f"{TEXT_FILE} has {len(text_ids)} tokens, fewer than the {settings['prefill_tokens']} of the prefill")
    return {
        "prefill": text_ids[: settings["prefill_tokens"]],
        "chat": chat(CHAT_PROMPT),
        "batch": [chat(p) for p in BATCH_PROMPTS[: settings["batch_size"]]],
        "agreement": [chat(p) for p in AGREEMENT_PROMPTS[: settings["agreement_prompts"]]],
        "text": text_ids[: settings["ppl_tokens"]] if settings["ppl_tokens"] else text_ids,
    }


def free_token_id(inputs: dict, vocab_size: int) -> int:
    """The smallest id in no prompt: a pad id for engines that infer the attention mask from it (genai)."""
    used = {t for key in ("prefill", "chat", "text") for t in inputs[key]}
    used |= {t for key in ("batch", "agreement") for row in inputs[key] for t in row}
    return next(i for i in range(vocab_size) if i not in used)
