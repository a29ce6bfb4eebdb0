"""The monitoring features of a text, computed by the same code for the training data (cola/data.py writes them to
data/reference/stats.json) and for live traffic (runtime/predictor.py logs them): counted two ways, the drift monitor
would alert on the difference between the counters rather than on the traffic."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer


def upper_ratio(text: str) -> float:
    """Share of letters that are capitals: the uncased tokenizer lowercases, so only this sees SHOUTING."""
    letters = [c for c in text if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def unk_token_id(tokenizer: Tokenizer) -> int | None:
    """The id of the model's unknown token, or None if its vocabulary has none (then nothing is unknown)."""
    unk_token = getattr(tokenizer.model, "unk_token", None)
    return tokenizer.token_to_id(unk_token) if unk_token else None


def count_tokens(ids: list[int], special_tokens_mask: list[int], unk_id: int | None) -> tuple[int, float]:
    """(token count incl. special tokens, share of the non-special tokens that are unknown) of one encoding made
    without truncation, so the count is the input's length before the model's max_length cuts it.

    The unknown token is never one of the template's special tokens ([CLS], [SEP]), so counting it over all ids
    counts it among the non-special ones."""
    words = len(ids) - sum(special_tokens_mask)
    unks = ids.count(unk_id) if unk_id is not None else 0
    return len(ids), unks / words if words else 0.0


def token_stats(tokenizer: Tokenizer, texts: Iterable[str]) -> tuple[list[int], list[float]]:
    """count_tokens of each text, encoded without truncation or padding (on a copy: the caller's tokenizer keeps
    its settings, e.g. the bundle's truncation at max_length)."""
    tokenizer = Tokenizer.from_str(tokenizer.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    unk_id = unk_token_id(tokenizer)
    counts = [count_tokens(enc.ids, enc.special_tokens_mask, unk_id) for enc in tokenizer.encode_batch(list(texts))]
    return [n for n, _ in counts], [rate for _, rate in counts]
