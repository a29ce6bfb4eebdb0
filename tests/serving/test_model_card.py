"""GET /model: the bundle's model card, as the export wrote it, over HTTP and through the Lambda handler; the page
links to it; a bundle whose card is not a JSON object does not load."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from contract.bundle import MODEL_CARD, BundleError, write_manifest
from runtime.predictor import BundlePredictor
from tests.serving.test_lambda import Context, fresh_lambda_handler, load_event


def test_get_model_returns_the_bundles_card(client, tiny_bundle):
    card = json.loads((tiny_bundle / MODEL_CARD).read_text())
    response = client.get("/model")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == card
    assert card["served"]["variant"] == "int8_static" and "mcc" in card["evaluation"]["metrics"]
    assert "/model" in client.get("/openapi.json").json()["paths"]
    assert '<a href="model">Model card</a>' in client.get("/").text  # relative: works behind an API stage path


def test_get_model_through_the_lambda_handler(tiny_bundle):
    event = copy.deepcopy(load_event("http_api_v2.json"))
    event |= {"routeKey": "GET /model", "rawPath": "/model", "rawQueryString": "", "queryStringParameters": None}
    event["requestContext"]["http"] |= {"path": "/model", "method": "GET"}
    with fresh_lambda_handler(tiny_bundle) as lambda_module:
        response = lambda_module.handler(event, Context())
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == json.loads((tiny_bundle / MODEL_CARD).read_text())


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"score": NaN}'])
def test_a_card_that_is_not_a_json_object_stops_the_bundle_loading(tiny_bundle, tmp_path, text):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    (bundle / MODEL_CARD).write_text(text)
    write_manifest(bundle, {}, {})  # the hashes match: only the content is wrong
    with pytest.raises(BundleError, match=r"model_card.json is not a JSON object: re-run `dvc repro export_onnx`"):
        BundlePredictor(bundle)


def test_a_bundle_from_before_model_cards_still_serves_and_says_it_has_none(tiny_bundle, tmp_path, settings):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    for name in (MODEL_CARD, "model_card.md"):
        (bundle / name).unlink()
    write_manifest(bundle, {}, {})
    with TestClient(create_app(BundlePredictor(bundle), settings)) as client:
        response = client.get("/model")
        assert response.status_code == 404 and response.json()["error"] == "no_model_card"
        assert "dvc repro export_onnx" in response.json()["message"]
        assert client.post("/predict", json={"text": "It works."}).status_code == 200
