"""The input policy of /predict, in one place (docs/serving.md explains it to users).

Every rejection is an InputError: a 4xx status, a short machine-readable code and a sentence saying
what is wrong and how to fix it. Nothing a client sends may end in a 500.

parse_body() checks only the transport (Content-Type, UTF-8, JSON syntax); everything about the body's content
is PredictRequest, the one pydantic model that is both the documented schema (OpenAPI) and the enforcement: its
validators raise InputError, which pydantic lets through unchanged (it wraps only ValueError and AssertionError).
"""

from __future__ import annotations

import email.message
import functools
import json
import re
import urllib.parse
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic.config import JsonDict

from app.settings import Settings

# "Only whitespace" means only characters of this class: Unicode White_Space, plus \x1c-\x1f (Python's
# str.isspace() counts them) and \ufeff (ECMA-262's \s counts it); so whatever a Python or JavaScript client
# strips away, we call empty too. Explicit \uXXXX ranges, never \s or \S: those differ between Python `re`,
# ECMA-262 (what OpenAPI tools and schemathesis read the schema with) and Rust `regex` (pydantic), and a schema
# that disagrees with the validator makes schemathesis report valid data rejected (docs/serving.md).
WHITESPACE_CLASS = (
    r"\u0009-\u000d\u001c-\u001f\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# JSON Schema `pattern` is unanchored (a search), like re.search: a sentence needs one character outside the class.
SENTENCE_PATTERN = f"[^{WHITESPACE_CLASS}]"
_HAS_CONTENT = re.compile(SENTENCE_PATTERN)


class InputError(Exception):  # not a ValueError: raised in a pydantic validator, it reaches the caller as is
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _document(schema: JsonDict, model: type[Any]) -> None:
    """The published schema of PredictRequest's `text`, from the same limits its validator enforces.

    Written out rather than generated from pydantic constraints (StringConstraints, Field(max_length=...)): those
    would check again, with pydantic's Rust regex engine, and fail with pydantic's error types instead of our codes
    and messages; the validators below are the only checks, and this is what they enforce. Lone surrogates (JSON
    "\\ud800") are rejected too, but only the description says so: a pattern cannot express it portably (Rust and
    UTF-8 based validators cannot even hold such a string)."""
    sentence: JsonDict = {"type": "string", "minLength": 1, "maxLength": model.max_chars, "pattern": SENTENCE_PATTERN}
    schema["properties"] = {
        "text": {
            "anyOf": [sentence, {"type": "array", "items": sentence, "minItems": 1, "maxItems": model.max_sentences}],
            "description": f"One sentence, or a list of 1 to {model.max_sentences} sentences "
            f"(each 1 to {model.max_chars} characters, not only whitespace, no unpaired UTF-16 surrogate escapes).",
            "examples": ["The cat sat on the mat.", ["The cat sat on the mat.", "Cat the mat on sat."]],
        }
    }


class PredictRequest(BaseModel):
    """The body of POST /predict (and GET's ?text= as {"text": ...}): its schema and its checks, with the default
    limits; request_schema(settings) gives the subclass with the configured ones."""

    model_config = ConfigDict(extra="forbid", title="PredictRequest", json_schema_extra=_document)
    max_sentences: ClassVar[int] = Settings.max_sentences
    max_chars: ClassVar[int] = Settings.max_chars

    text: str | list[str]

    @property
    def sentences(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else self.text

    @model_validator(mode="before")
    @classmethod
    def _only_text(cls, body: Any) -> Any:
        if not isinstance(body, dict) or "text" not in body:
            raise InputError(
                422, "invalid_body", 'the body must be a JSON object {"text": "a sentence"} or {"text": ["one", "two"]}'
            )
        unknown = sorted(set(body) - {"text"})
        if unknown:
            raise InputError(422, "invalid_body", f'unknown field(s) {unknown}: the body takes only "text"')
        return body

    # mode="plain": this is the whole validation of `text` (pydantic adds no checks or errors of its own).
    @field_validator("text", mode="plain")
    @classmethod
    def _check_text(cls, text: Any) -> str | list[str]:
        if isinstance(text, str):
            sentences, listed = [text], False
        elif isinstance(text, list) and text:
            sentences, listed = text, True
        else:
            raise InputError(
                422, "invalid_text", f'"text" must be a string or a non-empty list of strings, not {_json_type(text)}'
            )
        if len(sentences) > cls.max_sentences:
            raise InputError(
                422,
                "too_many_sentences",
                f'"text" has {len(sentences)} sentences; at most {cls.max_sentences} per request: split the list',
            )
        for i, sentence in enumerate(sentences):
            where = f"text[{i}]" if listed else "text"
            if not isinstance(sentence, str):
                raise InputError(422, "invalid_text", f"{where} must be a string, not {_json_type(sentence)}")
            if not _HAS_CONTENT.search(sentence):  # the schema's own pattern, so both call the same strings empty
                raise InputError(422, "empty_text", f"{where} is empty or only whitespace: send a sentence")
            if len(sentence) > cls.max_chars:
                raise InputError(
                    422,
                    "text_too_long",
                    f"{where} has {len(sentence)} characters; the limit is {cls.max_chars}: shorten or split it",
                )
            try:
                sentence.encode("utf-8")
            except UnicodeEncodeError:  # JSON "\ud800" decodes to a lone surrogate, which no tokenizer accepts
                raise InputError(422, "invalid_text", f"{where} contains an unpaired UTF-16 surrogate escape") from None
        return text


def request_schema(settings: Settings) -> type[PredictRequest]:
    """The model of POST /predict's body for these settings: documented schema and validator in one."""
    return _with_limits(settings.max_sentences, settings.max_chars)


@functools.cache  # one model per pair of limits, built once, not per request
def _with_limits(sentences: int, chars: int) -> type[PredictRequest]:
    class LimitedPredictRequest(PredictRequest):
        max_sentences = sentences
        max_chars = chars

    return LimitedPredictRequest


def _is_json(content_type: str) -> bool:
    """application/json exactly (parameters such as charset allowed). Not a missing type, not text/plain, not
    application/anything+json: those are what a cross-site page may POST without a CORS preflight (`no-cors`),
    so refusing them makes every cross-site request ask first (and this API answers no preflight)."""
    message = email.message.Message()
    message["content-type"] = content_type
    return message.get_content_type() == "application/json" and "/" in content_type


def parse_body(raw: bytes, content_type: str | None, settings: Settings) -> list[str]:
    """Raw POST /predict body -> the sentences to classify: transport checks here, the body's rules in the model."""
    if not content_type:
        raise InputError(415, "unsupported_media_type", "the request has no Content-Type: send application/json")
    if not _is_json(content_type):
        raise InputError(
            415, "unsupported_media_type", f"Content-Type {content_type[:100]!r} is not application/json: send that"
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            400, "invalid_encoding", f"the body is not valid UTF-8 (bad byte at offset {exc.start}): encode it as UTF-8"
        ) from None
    return request_schema(settings).model_validate(load_json(decoded)).sentences


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # json.loads would keep the last value silently; a client meant one of them
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _DuplicateKey(duplicate)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(text: str) -> Any:
    """Strict JSON -> Python: every way json.loads can fail is an InputError (400 invalid_json), never a 500.
    Beyond syntax errors it raises a plain ValueError for an integer over Python's 4,300-digit conversion limit
    and RecursionError for deep nesting; duplicate keys and NaN/Infinity (not JSON) are refused here too."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            400, "invalid_json", f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except _DuplicateKey as exc:
        raise InputError(
            400, "invalid_json", f"the key {str(exc)[:100]!r} appears twice in one object: send each key once"
        ) from None
    except RecursionError:
        raise InputError(400, "invalid_json", "the body nests JSON too deeply") from None
    except ValueError as exc:
        detail = "a number has too many digits" if "digits" in str(exc) else str(exc)
        raise InputError(400, "invalid_json", f"the body is not valid JSON for this API ({detail})") from None


def check_query(raw: bytes) -> None:
    """GET's query must be UTF-8 once percent-decoded, as POST's body must be: Starlette would silently turn bad
    bytes (?text=%ff%fe) into U+FFFD and classify that."""
    for part in re.split(rb"[&;]", raw):
        try:
            urllib.parse.unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                400,
                "invalid_encoding",
                f"the query string is not valid UTF-8 once percent-decoded (bad byte at offset {exc.start} of "
                f"{part[:40].decode('latin-1')!r}): percent-encode the text's UTF-8 bytes",
            ) from None


def check_sentences(texts: list, settings: Settings, as_list: bool = False) -> list[str]:
    """Sentences that came without a JSON body (GET /predict?text=...), checked by the same model as the body:
    one sentence (as_list=False, named "text" in messages) or a list (named "text[i]")."""
    text = texts if as_list or len(texts) != 1 else texts[0]
    return request_schema(settings).model_validate({"text": text}).sentences


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
