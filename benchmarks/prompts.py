"""The inputs every engine gets, as token ids made once by the memgpt fp32 tokenizer (so tokenization is not timed).

The long prompt and the perplexity text come from `data/english.txt` (original prose written for this suite);
the chat prompts go through the model's chat template. The encoder-decoder part translates English sources,
tokenized plainly (the tokenizer appends </s>, as Marian's does).
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
        raise ValueError(
            f"{TEXT_FILE} has {len(text_ids)} tokens, fewer than the {settings['prefill_tokens']} of the prefill"
        )
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


# The encoder-decoder part: English sources to translate. Token counts depend on the tests' Marian tokenizer
# (about 40 for the source, 12 to 55 in the batch when written); the report gives the exact ones.
TRANSLATION_SOURCE = "I have no time today, but we can meet for coffee tomorrow afternoon near the station."
BATCH_SOURCES = [  # 8 different lengths
    "Where is the train station?",
    "The house is wonderful.",
    "Please close the window before you leave the office tonight.",
    "My sister lives in a small village near the mountains, where winters are long and summers are short.",
    "The museum opens at nine and closes at six.",
    "Thank you very much.",
    "We walked along the river until the sun went down.",
    "The report must be finished by Friday, so everyone is working late this week.",
]
AGREEMENT_SOURCES = [
    "The old lighthouse keeper climbed the stairs every evening.",
    "Could you tell me how much this book costs?",
    "The children are playing in the garden.",
    "Good morning!",
]


def make_seq2seq_inputs(tokenizer, settings: dict) -> dict:
    """Token ids of the encoder-decoder workloads: source (greedy and beam), batch and agreement."""
    return {
        "source": tokenizer.encode(TRANSLATION_SOURCE),
        "batch": [tokenizer.encode(t) for t in BATCH_SOURCES[: settings["batch_size"]]],
        "agreement": [tokenizer.encode(t) for t in AGREEMENT_SOURCES[: settings["agreement_sources"]]],
    }
