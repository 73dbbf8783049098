"""Load the bundle's ``tokenizer.json`` (``tokenizers``), and build tiny ones for tests/demos."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from edgetune.data.errors import DataError, first_line

PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<PAD>")


def load_tokenizer(path: str | Path, max_length: int):
    """A ``tokenizers.Tokenizer`` that truncates to ``max_length`` and does not pad (batches
    pad themselves); returns ``(tokenizer, pad_id)``."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such tokenizer file (expected the bundle's tokenizer.json)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:
        raise DataError(path, f"not a valid tokenizer.json ({first_line(e)})") from None
    pad_id = (tok.padding or {}).get("pad_id")
    if pad_id is None:
        ids = (tok.token_to_id(t) for t in PAD_TOKENS)
        pad_id = next((i for i in ids if i is not None), 0)
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok, int(pad_id)


def build_word_level_tokenizer(texts: Iterable[str], path: str | Path,
                               vocab_size: int = 1000) -> Path:
    """Train a lower-casing, whitespace-split WordLevel tokenizer on ``texts`` (``[CLS] … [SEP]``
    around each text, ``[PAD]`` = 0, ``[UNK]`` = 1) and save it to ``path``; no download."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(),
                                           normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=vocab_size,
                                                             special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def build_bpe_tokenizer(texts: Iterable[str], path: str | Path, vocab_size: int = 512,
                        end_token: str = "<|endoftext|>") -> Path:
    """Train a byte-level BPE tokenizer (GPT-2's scheme: any text encodes, no unknown token) on
    ``texts``, ``end_token`` = id 0 (a language model's EOS), and save it to ``path``; no
    download. ``vocab_size`` ≥ 257 (the 256 bytes and the end token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[end_token],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path
