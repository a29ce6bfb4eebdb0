"""The published request schema and the validator (app/inputs.py) accept exactly the same bodies.

Schemathesis judges generated data with an ECMA-262 regex engine (jsonschema-rs); Python validators use `re`;
the app runs parse_body(). When they disagree about a string (as `pattern: \\S` and `str.strip()` did about
"\\u001d"), schemathesis sends it as valid data and fails on the 422. These tests pin the agreement, in-process.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from pathlib import Path

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.inputs import SENTENCE_PATTERN, InputError, check_query, check_sentences, load_json, parse_body, request_schema
from app.settings import Settings

try:
    import jsonschema  # Python `re` semantics; installed with requirements-dev (moto[server])
except ImportError:  # pragma: no cover
    jsonschema = None

LIMITS = Settings(bundle_dir=Path("unused"), max_sentences=3, max_chars=20)
BODY_SCHEMA = request_schema(LIMITS).model_json_schema()
VALIDATORS = {"ecma-262 (jsonschema-rs, as schemathesis)": jsonschema_rs.Draft202012Validator(BODY_SCHEMA).is_valid}
if jsonschema is not None:
    VALIDATORS["python re (jsonschema)"] = jsonschema.Draft202012Validator(BODY_SCHEMA).is_valid

# The rule: whitespace is what Python's str.isspace() or ECMA-262's \s calls whitespace, nothing else.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# Zero-width and format characters, controls, a combining mark, letters, an astral character: content.
NOT_WHITESPACE = "\u200b\u200c\u200d\u2060\u180e\x00\x7f\u0301aZ.é😀"


def ecma_space(c: str) -> bool:
    """ECMA-262 \\s: WhiteSpace (TAB, VT, FF, ZWNBSP, any Zs) or LineTerminator (LF, CR, LS, PS)."""
    return c in "\t\x0b\x0c\ufeff\n\r\u2028\u2029" or unicodedata.category(c) == "Zs"


def api_accepts(body: dict) -> bool:
    try:
        parse_body(json.dumps(body).encode(), "application/json", LIMITS)
    except InputError as err:
        assert 400 <= err.status < 500, err.code
        return False
    return True


def test_whitespace_class_is_python_isspace_or_ecma_s():
    every_char = [chr(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i <= 0xDFFF]
    pattern = re.compile(SENTENCE_PATTERN)
    blank = {c for c in every_char if not pattern.fullmatch(c)}
    expected = {c for c in every_char if c.isspace() or ecma_space(c)}
    assert sorted(blank) == sorted(expected) == sorted(WHITESPACE)


CASES = (
    [(c, False) for c in WHITESPACE]
    + [(c * 3, False) for c in WHITESPACE]
    + [(" " + c + "\t", False) for c in WHITESPACE]
    + [(c, True) for c in NOT_WHITESPACE]
    + [("\u3000" + c + "\ufeff", True) for c in NOT_WHITESPACE]
    # lengths count code points in JSON Schema and in Python: an astral character is one
    + [("", False), ("a" * 20, True), ("a" * 21, False), ("😀" * 20, True), ("😀" * 21, False), (" " * 20, False)]
)


@pytest.mark.parametrize("validator", list(VALIDATORS))
@pytest.mark.parametrize("sentence,accepted", CASES, ids=[f"{i}-{ascii(c[0])[:20]}" for i, c in enumerate(CASES)])
def test_schema_and_validator_agree_on_tricky_sentences(validator, sentence, accepted):
    for body in ({"text": sentence}, {"text": ["ok", sentence]}):
        assert VALIDATORS[validator](body) is accepted, body
        assert api_accepts(body) is accepted, body


# codec="utf-8": no lone surrogates here (a validator in Rust cannot hold one; see the test below)
sentences = st.text(alphabet=st.sampled_from(WHITESPACE + NOT_WHITESPACE) | st.characters(codec="utf-8"), max_size=22)
bodies = st.one_of(sentences, st.lists(sentences, max_size=LIMITS.max_sentences + 1)).map(lambda text: {"text": text})


@pytest.mark.fuzz
@given(body=bodies)
def test_schema_and_validator_agree_on_generated_bodies(body):
    verdicts = {name: valid(body) for name, valid in VALIDATORS.items()} | {"parse_body": api_accepts(body)}
    assert len(set(verdicts.values())) == 1, verdicts


@pytest.mark.parametrize(
    "raw", [b'{"text": "\\ud800"}', b'{"text": ["ok", "a\\udfffb"]}', b'{"text": "\\ude00\\ud83d"}']
)
def test_lone_surrogates_are_invalid_text(raw):
    # Not expressible as a portable pattern; the schema's description says so, and the API answers 422.
    with pytest.raises(InputError) as err:
        parse_body(raw, "application/json", LIMITS)
    assert (err.value.status, err.value.code) == (422, "invalid_text")


def test_a_surrogate_pair_is_one_character():
    pair = b'"\\ud83d\\ude00"'
    assert parse_body(b'{"text": ' + pair + b"}", "application/json", LIMITS) == ["😀"]
    assert parse_body(b'{"text": [' + b", ".join([pair] * 3) + b"]}", "application/json", LIMITS) == ["😀"] * 3
    with pytest.raises(InputError) as err:
        parse_body(b'{"text": "' + b"\\ud83d\\ude00" * 21 + b'"}', "application/json", LIMITS)
    assert err.value.code == "text_too_long"


def rejection(call) -> tuple[int, str, str]:
    with pytest.raises(InputError) as err:
        call()
    return err.value.status, err.value.code, err.value.message


def test_the_documented_model_is_the_one_that_enforces():
    model = request_schema(LIMITS)
    assert rejection(lambda: model.model_validate({"text": "  "})) == (
        422,
        "empty_text",
        "text is empty or only whitespace: send a sentence",
    )
    assert model.model_validate({"text": ["ok", "fine"]}).sentences == ["ok", "fine"]
    assert model.model_json_schema() == BODY_SCHEMA  # the very class the OpenAPI schema is generated from


@pytest.mark.parametrize(
    "body,code",
    [
        ({"text": ""}, "empty_text"),
        ({"text": ["ok", "\u3000"]}, "empty_text"),
        ({"text": "a" * 21}, "text_too_long"),
        ({"text": ["ok", "a" * 21]}, "text_too_long"),
        ({"text": ["s"] * 4}, "too_many_sentences"),
        ({"text": []}, "invalid_text"),
        ({"text": 42}, "invalid_text"),
        ({"text": ["ok", None]}, "invalid_text"),
        ({"text": "\ud800"}, "invalid_text"),
        ({"sentence": "hi"}, "invalid_body"),
        ({"text": "hi", "extra": 1}, "invalid_body"),
        (["hi"], "invalid_body"),
    ],
)
def test_parse_body_answers_exactly_what_the_model_raises(body, code):
    model_says = rejection(lambda: request_schema(LIMITS).model_validate(body))
    assert model_says[:2] == (422, code)
    assert rejection(lambda: parse_body(json.dumps(body).encode(), "application/json", LIMITS)) == model_says


def test_get_sentences_go_through_the_same_model():
    assert check_sentences(["a" * 20], LIMITS) == ["a" * 20]
    assert rejection(lambda: check_sentences(["\u3000 "], LIMITS))[1:] == (
        "empty_text",
        "text is empty or only whitespace: send a sentence",
    )
    assert rejection(lambda: check_sentences(["a" * 21], LIMITS)) == rejection(
        lambda: request_schema(LIMITS).model_validate({"text": "a" * 21})
    )


def test_one_model_per_limits_built_once():
    same_limits = Settings(bundle_dir=Path("elsewhere"), max_sentences=3, max_chars=20)
    assert request_schema(same_limits) is request_schema(LIMITS)
    other = request_schema(Settings(bundle_dir=Path("unused"), max_sentences=3, max_chars=5))
    assert other is not request_schema(LIMITS)
    assert rejection(lambda: other.model_validate({"text": "a" * 6}))[1] == "text_too_long"
    assert request_schema(LIMITS).model_validate({"text": "a" * 6}).sentences == ["a" * 6]


def test_published_post_schema_uses_the_validators_pattern(client):
    text = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    string, array = text["schema"]["properties"]["text"]["anyOf"]
    assert string["pattern"] == array["items"]["pattern"] == SENTENCE_PATTERN
    assert "surrogate" in text["schema"]["properties"]["text"]["description"]  # the rule the pattern cannot carry


def test_published_get_schema_uses_the_validators_pattern(client):
    (param,) = client.get("/openapi.json").json()["paths"]["/predict"]["get"]["parameters"]
    assert param["schema"]["pattern"] == SENTENCE_PATTERN


# The transport checks and the GET path, in-process: exact status, code and message, so the mutation run
# (mutation.toml runs only this file against app/inputs.py) notices a changed branch, offset or cut-off.
# test_api.py and test_no_5xx.py cover the same rules over HTTP.


@pytest.mark.parametrize(
    "content_type,accepted",
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("text/plain", False),
        ("text/plain;charset=utf-8", False),
        ("application/evil+json", False),  # sorts before application/json
        ("application/x-www-form-urlencoded", False),
        ("json", False),
    ],
)
def test_only_application_json_is_parsed(content_type, accepted):
    if accepted:
        assert parse_body(b'{"text": "hi"}', content_type, LIMITS) == ["hi"]
    else:
        assert rejection(lambda: parse_body(b'{"text": "hi"}', content_type, LIMITS)) == (
            415,
            "unsupported_media_type",
            f"Content-Type {content_type!r} is not application/json: send that",
        )


@pytest.mark.parametrize("content_type", [None, ""])
def test_a_missing_content_type_is_named_as_missing(content_type):
    assert rejection(lambda: parse_body(b'{"text": "hi"}', content_type, LIMITS)) == (
        415,
        "unsupported_media_type",
        "the request has no Content-Type: send application/json",
    )


def test_a_long_content_type_is_quoted_cut_at_100_characters():
    content_type = "text/plain; " + "x" * 150
    message = rejection(lambda: parse_body(b'{"text": "hi"}', content_type, LIMITS))[2]
    assert message == f"Content-Type {content_type[:100]!r} is not application/json: send that"


def test_a_body_that_is_not_utf8_names_the_bad_byte():
    assert rejection(lambda: parse_body(b'{"text": "caf\xe9"}', "application/json", LIMITS)) == (
        400,
        "invalid_encoding",
        "the body is not valid UTF-8 (bad byte at offset 13): encode it as UTF-8",
    )


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"text": "hi"', "the body is not valid JSON (Expecting ',' delimiter at line 1, column 14)"),
        ('{"a": 1,\n "b": 2, "b": 3}', "the key 'b' appears twice in one object: send each key once"),
        (
            '{"' + "k" * 150 + '": 1, "' + "k" * 150 + '": 2}',
            f"the key {'k' * 100!r} appears twice in one object: send each key once",
        ),
        ("[" * 100_000 + "]" * 100_000, "the body nests JSON too deeply"),
        ("1" * 5000, "the body is not valid JSON for this API (a number has too many digits)"),
        ("[NaN]", "the body is not valid JSON for this API (NaN is not JSON)"),
        ('{"text": -Infinity}', "the body is not valid JSON for this API (-Infinity is not JSON)"),
    ],
    ids=["syntax", "duplicate", "long-duplicate", "deep", "digits", "nan", "infinity"],
)
def test_every_way_json_fails_is_a_400_that_says_which(text, message):
    assert rejection(lambda: load_json(text)) == (400, "invalid_json", message)


def test_an_object_with_many_distinct_keys_is_not_a_duplicate():
    # more keys than Python caches small ints for: the duplicate check compares counts by value
    pairs = {f"k{i}": i for i in range(300)}
    assert load_json(json.dumps({"text": "hi", "more": pairs})) == {"text": "hi", "more": pairs}


def test_a_query_that_is_not_utf8_once_decoded_names_the_part_and_byte():
    assert rejection(lambda: check_query(b"text=ok&other=%ff%fe")) == (
        400,
        "invalid_encoding",
        "the query string is not valid UTF-8 once percent-decoded (bad byte at offset 6 of 'other=%ff%fe'): "
        "percent-encode the text's UTF-8 bytes",
    )
    long_part = b"text=" + b"x" * 50 + b"%ff"
    message = rejection(lambda: check_query(b"a=1;" + long_part))[2]
    assert f"(bad byte at offset 55 of {long_part[:40].decode()!r})" in message
    assert check_query(b"text=caf%C3%A9+au+lait&x=%E2%82%AC;y=1") is None  # UTF-8, + as a space, ; as &


def test_get_sentences_are_named_as_a_list_only_when_there_are_several():
    assert check_sentences(["a", "b"], LIMITS) == ["a", "b"]
    assert rejection(lambda: check_sentences(["a", " "], LIMITS))[2] == (
        "text[1] is empty or only whitespace: send a sentence"
    )
    assert rejection(lambda: check_sentences([" "], LIMITS, as_list=True))[2] == (
        "text[0] is empty or only whitespace: send a sentence"
    )
    assert rejection(lambda: check_sentences([], LIMITS))[:2] == (422, "invalid_text")


@pytest.mark.parametrize(
    "body,message",
    [
        (["text"], 'the body must be a JSON object {"text": "a sentence"} or {"text": ["one", "two"]}'),
        ({"sentence": "hi"}, 'the body must be a JSON object {"text": "a sentence"} or {"text": ["one", "two"]}'),
        ({"text": "hi", "b": 1, "a": 2}, "unknown field(s) ['a', 'b']: the body takes only \"text\""),
    ],
)
def test_a_body_without_text_or_with_more_says_which(body, message):
    assert rejection(lambda: request_schema(LIMITS).model_validate(body)) == (422, "invalid_body", message)


def test_a_list_sentence_is_named_by_its_index():
    model = request_schema(LIMITS)
    assert rejection(lambda: model.model_validate({"text": ["ok", "ok", "a" * 21]}))[2] == (
        "text[2] has 21 characters; the limit is 20: shorten or split it"
    )
    assert rejection(lambda: model.model_validate({"text": ["ok", 7]}))[2] == "text[1] must be a string, not a number"
    assert rejection(lambda: model.model_validate({"text": ["s"] * 4}))[2] == (
        '"text" has 4 sentences; at most 3 per request: split the list'
    )
