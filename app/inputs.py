"""The input policy of /predict, in one place (docs/serving.md explains it to users).

Every rejection is an InputError: a 4xx status, a short machine-readable code and a sentence saying
what is wrong and how to fix it. Nothing a client sends may end in a 500.
"""

from __future__ import annotations

import email.message
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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


class InputError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def request_schema(settings: Settings) -> type[BaseModel]:
    """The documented body of POST /predict; parse_body() enforces the same rules with clearer messages."""
    # Lone surrogates (JSON "\ud800") are rejected too, but only the description says so: a pattern cannot
    # express it portably (Rust and UTF-8 based validators cannot even hold such a string).
    sentence: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.max_chars,
        "pattern": SENTENCE_PATTERN,
    }

    class PredictRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={
                "properties": {
                    "text": {
                        "anyOf": [
                            sentence,
                            {"type": "array", "items": sentence, "minItems": 1, "maxItems": settings.max_sentences},
                        ],
                        "description": f"One sentence, or a list of 1 to {settings.max_sentences} sentences "
                        f"(each 1 to {settings.max_chars} characters, not only whitespace, "
                        "no unpaired UTF-16 surrogate escapes).",
                        "examples": ["The cat sat on the mat.", ["The cat sat on the mat.", "Cat the mat on sat."]],
                    }
                }
            },
        )
        text: str | list[str] = Field(...)

    return PredictRequest


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # be lenient with clients that send no type at all
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def parse_body(raw: bytes, content_type: str | None, settings: Settings) -> list[str]:
    """Raw POST /predict body -> the sentences to classify."""
    if not _is_json(content_type):
        raise InputError(
            415, "unsupported_media_type", f"Content-Type {content_type!r} is not JSON: send application/json"
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            400, "invalid_encoding", f"the body is not valid UTF-8 (bad byte at offset {exc.start}): encode it as UTF-8"
        ) from None
    try:
        payload = json.loads(decoded)
    except json.JSONDecodeError as exc:
        raise InputError(
            400, "invalid_json", f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InputError(400, "invalid_json", "the body nests JSON too deeply") from None
    if not isinstance(payload, dict) or "text" not in payload:
        raise InputError(
            422, "invalid_body", 'the body must be a JSON object {"text": "a sentence"} or {"text": ["one", "two"]}'
        )
    unknown = sorted(set(payload) - {"text"})
    if unknown:
        raise InputError(422, "invalid_body", f'unknown field(s) {unknown}: the body takes only "text"')
    text = payload["text"]
    if isinstance(text, str):
        return check_sentences([text], settings)
    if not isinstance(text, list) or not text:
        raise InputError(
            422, "invalid_text", f'"text" must be a string or a non-empty list of strings, not {_json_type(text)}'
        )
    return check_sentences(text, settings, as_list=True)


def check_sentences(texts: list, settings: Settings, as_list: bool = False) -> list[str]:
    if len(texts) > settings.max_sentences:
        raise InputError(
            422,
            "too_many_sentences",
            f'"text" has {len(texts)} sentences; at most {settings.max_sentences} per request: split the list',
        )
    for i, text in enumerate(texts):
        where = f"text[{i}]" if as_list else "text"
        if not isinstance(text, str):
            raise InputError(422, "invalid_text", f"{where} must be a string, not {_json_type(text)}")
        if not _HAS_CONTENT.search(text):  # the schema's own pattern, so both call the same strings empty
            raise InputError(422, "empty_text", f"{where} is empty or only whitespace: send a sentence")
        if len(text) > settings.max_chars:
            raise InputError(
                422,
                "text_too_long",
                f"{where} has {len(text)} characters; the limit is {settings.max_chars}: shorten or split it",
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # JSON "\ud800" decodes to a lone surrogate, which no tokenizer accepts
            raise InputError(422, "invalid_text", f"{where} contains an unpaired UTF-16 surrogate escape") from None
    return texts


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
