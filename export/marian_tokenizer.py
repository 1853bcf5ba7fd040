"""Convert a Marian (Helsinki-NLP opus-mt) tokenizer, which ships only SentencePiece files, to a `tokenizers` one.

transformers has no fast Marian tokenizer. Its slow one segments the source with `source.spm` and then maps
each piece to an id through the joint `vocab.json` (unknown pieces to `<unk>`), appending `</s>`. This builds the
same thing: SentencePiece's normalizer and Metaspace pre-tokenizer from `source.spm` (transformers'
`SpmConverter` does that part), and a Unigram model whose ids are vocab.json's, with each piece's score taken
from `source.spm`. Pieces that only the target side knows keep their ids (the runtime decodes them) but get a
score so low that the segmentation never picks them where the source model has an alternative. It does not
check the result: `tokenizer_file.py` compares it with the slow tokenizer on sample texts and refuses a
mismatch. Models with separate source and target vocabularies are refused (one tokenizer.json holds one).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from memgpt_runtime.errors import ExportError

UNREACHABLE = -1e9  # score of target-only pieces: below any path through source pieces


def is_marian(tokenizer: Any) -> bool:
    return type(tokenizer).__name__ == "MarianTokenizer"


def convert_marian(tokenizer: Any) -> Any:
    """A `tokenizers.Tokenizer` that encodes like the slow MarianTokenizer `tokenizer` (ids from its vocab.json)."""
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import SpmConverter

    if getattr(tokenizer, "separate_vocabs", False):
        raise ExportError(
            "this Marian model has separate source and target vocabularies, which one tokenizer.json cannot hold; "
            "it is not supported"
        )
    ids = dict(tokenizer.encoder)  # vocab.json: piece -> id
    if sorted(ids.values()) != list(range(len(ids))):
        raise ExportError("this Marian tokenizer's vocab.json does not number its pieces 0..n-1; it is not supported")
    eos, unk = str(tokenizer.eos_token), str(tokenizer.unk_token)

    class _MarianConverter(SpmConverter):
        def vocab(self, proto: Any) -> list[tuple[str, float]]:
            scores = {p.piece: p.score for p in proto.pieces if p.type == 1}  # NORMAL pieces of source.spm
            by_id = sorted(ids, key=ids.__getitem__)
            return [(piece, scores.get(piece, 0.0 if piece in (eos, unk) else UNREACHABLE)) for piece in by_id]

        def unk_id(self, proto: Any) -> int:
            return ids[unk]

        def post_processor(self) -> Any:
            return processors.TemplateProcessing(
                single=f"$A {eos}", pair=f"$A $B {eos}", special_tokens=[(eos, ids[eos])]
            )

    # SpmConverter reads the SentencePiece model from `vocab_file`; Marian keeps it as the source spm
    shim = SimpleNamespace(vocab_file=tokenizer.spm_files[0], legacy=True, add_prefix_space=True)
    converted = _MarianConverter(shim).converted()
    specials = [t for t in (eos, unk, str(tokenizer.pad_token)) if t in ids]
    specials += [
        t for t in ids if t.startswith(">>") and t.endswith("<<")
    ]  # target-language codes of multilingual models
    converted.add_special_tokens(specials)
    return converted
