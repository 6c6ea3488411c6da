"""``/openapi.json`` tells the truth: one operation per registry model with that model's own
input schema, every error status declared in its dialect's shape, 405 with ``Allow`` on known
paths, the README's endpoint tables equal to the served paths, and ``/docs`` served from the
package under a strict CSP. In-process; the contract run against a real server is
``test_openapi_contract.py``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from reel.catalog.registry import MODELS
from reel.media.images import OUTPUT_SIZES
from reel.predictions.inputs import MAX_PROMPT_CHARS, MAX_SEED
from reel.predictions.runway_inputs import RATIOS
from support.inprocess import InProcessReel

README = Path(__file__).parents[2] / "README.md"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def document(reel_app: InProcessReel) -> dict[str, Any]:
    with reel_app.client() as anonymous:
        response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


@pytest.fixture(scope="module")
def me(reel_app: InProcessReel) -> httpx.Client:
    return reel_app.client(reel_app.create_key())


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of ``anyOf: [X, null]``."""
    branches = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    assert len(branches) == 1, schema
    return branches[0]


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


# --- one operation per model ------------------------------------------------------------------


@pytest.mark.parametrize("model_id", list(MODELS))
def test_every_registry_model_has_its_own_operation_and_input_schema(
    document: dict[str, Any], model_id: str
) -> None:
    spec = MODELS[model_id]
    operation = document["paths"][f"/api/v3/{model_id}"]["post"]
    media = operation["requestBody"]["content"]["application/json"]
    body = resolve(document, media["schema"])
    properties = body["properties"]
    # A text-to-video model takes no image, and names its size WaveSpeed's way too.
    assert set(body["required"]) == ({"prompt"} if spec.text_to_video else {"prompt", "image"})
    assert ("size" in properties) == spec.text_to_video
    assert ("loras" in properties) == bool(spec.max_loras)
    if spec.max_loras:
        adapters = non_null(properties["loras"])
        assert adapters["maxItems"] == spec.max_loras
        assert resolve(document, adapters["items"])["required"] == ["path"]
    assert ("high_noise_loras" in properties) == bool(spec.max_loras and spec.two_experts)
    assert properties["prompt"]["maxLength"] == MAX_PROMPT_CHARS
    assert non_null(properties["aspect_ratio"])["enum"] == list(OUTPUT_SIZES)
    optional = {"duration", "seed", "negative_prompt", "num_inference_steps", "guidance_scale"}
    assert {name for name in properties if name in optional} == set(spec.params)
    if "duration" in spec.params:
        assert non_null(properties["duration"])["enum"] == list(spec.durations)
        assert properties["duration"]["default"] == spec.default_duration
    if "seed" in spec.params:
        assert non_null(properties["seed"])["maximum"] == MAX_SEED
    for name, (low, high) in spec.ranges.items():
        assert (non_null(properties[name])["minimum"], non_null(properties[name])["maximum"]) == (low, high)
    # Unknown fields are ignored, as on WaveSpeed: the schema must not forbid them.
    assert body.get("additionalProperties", True) is not False
    expected = {"prompt_only", "size"} if spec.text_to_video else {"image_url", "inline_image"}
    assert expected <= set(media["examples"])


def test_an_unknown_model_is_no_operation_and_still_a_404(document: dict[str, Any], me: httpx.Client) -> None:
    assert "/api/v3/{model}" not in document["paths"]
    response = me.post("/api/v3/nobody/no-such-model", json={"prompt": "p", "image": "x"})
    assert response.status_code == 404
    assert "nobody/no-such-model" in response.json()["message"]


def test_runway_create_lists_the_served_models_and_ratios(document: dict[str, Any]) -> None:
    media = document["paths"]["/v1/image_to_video"]["post"]["requestBody"]["content"]["application/json"]
    body = resolve(document, media["schema"])
    assert set(body["required"]) == {"model", "promptImage", "ratio"}
    image_models = {model_id for model_id, spec in MODELS.items() if not spec.text_to_video}
    assert set(body["properties"]["model"]["enum"]) == {"gen4_turbo", *image_models} - {"runwayml/gen4-turbo"}
    assert body["properties"]["ratio"]["enum"] == list(RATIOS)


def test_runway_text_to_video_lists_the_text_models(document: dict[str, Any]) -> None:
    media = document["paths"]["/v1/text_to_video"]["post"]["requestBody"]["content"]["application/json"]
    body = resolve(document, media["schema"])
    assert set(body["required"]) == {"model", "promptText", "ratio"}
    text_models = {model_id for model_id, spec in MODELS.items() if spec.text_to_video}
    assert set(body["properties"]["model"]["enum"]) == {"gen4.5", *text_models} - {
        "wavespeed-ai/wan-2.2/t2v-5b-720p"
    }


# --- statuses and shapes ----------------------------------------------------------------------


def test_every_operation_declares_its_errors_in_its_dialects_shape(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        where = f"{method.upper()} {path}"
        assert "405" in responses and "Allow" in responses["405"]["headers"], where
        shape = "RunwayError" if path.startswith("/v1/") else "ErrorEnvelope"
        for status, response in responses.items():
            if status.startswith(("4", "5")) and not (path == "/readyz" and status == "503"):
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("/" + shape), f"{where} {status}: {schema}"
        if operation.get("security"):
            assert "401" in responses and "503" in responses, where
    # Reel answers a malformed request with a 400 in the dialect's shape, never FastAPI's 422.
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.parametrize("path", [f"/api/v3/{model}" for model in MODELS] + ["/v1/image_to_video"])
def test_submit_declares_429_with_retry_after_and_the_idempotency_422(
    document: dict[str, Any], path: str
) -> None:
    responses = document["paths"][path]["post"]["responses"]
    assert "Retry-After" in responses["429"]["headers"]
    assert {"400", "401", "413", "422", "503"} <= set(responses)


def test_the_prediction_schema_has_the_extension_and_sync_timeout_fields(document: dict[str, Any]) -> None:
    prediction = document["components"]["schemas"]["Prediction"]["properties"]
    assert non_null(prediction["queue_position"])["type"] == "integer"
    assert non_null(prediction["code"])["const"] == 5004
    assert "progress" in prediction


def test_a_task_is_one_schema_per_status(document: dict[str, Any]) -> None:
    ok = document["paths"]["/v1/tasks/{task_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    schema = ok["schema"]
    assert schema["discriminator"]["propertyName"] == "status"
    statuses = {resolve(document, branch)["properties"]["status"]["const"] for branch in schema["oneOf"]}
    assert statuses == {"PENDING", "THROTTLED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"}


# --- 405 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/v3/runwayml/gen4-turbo", "POST"),
        ("PUT", "/api/v3/wavespeed-ai/wan-2.2/i2v-720p", "POST"),
        ("GET", "/api/v3/predictions", "POST"),
        ("DELETE", "/api/v3/predictions/delete", "POST"),
        ("POST", "/api/v3/predictions/abc/result", "GET"),
        ("PATCH", "/api/v3/predictions/abc", "DELETE, GET"),
        ("POST", "/api/v3/webhook/secret", "GET"),
        ("DELETE", "/api/v3/media/uploads", "POST"),
    ],
)
def test_a_wrong_method_on_a_v3_path_is_a_405_envelope_with_allow(
    me: httpx.Client, method: str, path: str, allow: str
) -> None:
    response = me.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    payload = response.json()
    assert payload["code"] == 405 and payload["data"] is None
    assert method in payload["message"] and allow in payload["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/tasks/abc", "DELETE, GET"),
        ("GET", "/v1/image_to_video", "POST"),
        ("DELETE", "/v1/uploads", "POST"),
    ],
)
def test_a_wrong_method_on_a_runway_path_is_a_405_in_runways_shape(
    me: httpx.Client, method: str, path: str, allow: str
) -> None:
    response = me.request(method, path, headers={"X-Runway-Version": "2024-11-06"})
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert set(response.json()) == {"error"}


# --- the README and the document agree --------------------------------------------------------


def readme_endpoints() -> set[tuple[str, str]]:
    """``(METHOD, /path)`` from the first column of the README's endpoint tables, with every
    ``{param}`` spelled ``{}`` and ``{model}`` standing for each registry model."""
    text = README.read_text()
    endpoints: set[tuple[str, str]] = set()
    for section in ("### Endpoints", "### Runway's API"):
        block = text.split(section, 1)[1].split("\n#", 1)[0]
        for row in re.findall(r"^\| (.+?) \|", block, flags=re.MULTILINE):
            for method, path in re.findall(r"`(GET|POST|PUT|DELETE|PATCH) (/[^`\s?]*)", row):
                for concrete in [path.replace("{model}", m) for m in MODELS] if "{model}" in path else [path]:
                    endpoints.add((method, re.sub(r"\{[^}]+\}", "{}", concrete)))
    return endpoints


def test_the_readme_endpoint_tables_match_the_served_paths(document: dict[str, Any]) -> None:
    served = {(method.upper(), re.sub(r"\{[^}]+\}", "{}", path)) for method, path, _ in operations(document)}
    documented = readme_endpoints()
    assert sorted(served - documented) == [], "served but not in the README's endpoint tables"
    assert sorted(documented - served) == [], "in the README's endpoint tables but not served"


# --- /docs ----------------------------------------------------------------------------------------


def test_docs_is_swagger_ui_from_the_package_under_a_strict_csp(reel_app: InProcessReel) -> None:
    with reel_app.client() as anonymous:
        page = anonymous.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert csp == anonymous.get("/").headers["content-security-policy"]  # the playground's, unrelaxed
        scripts = re.findall(r'<script[^>]*src="([^"]+)"', page.text)
        assert scripts == ["/docs/swagger-ui-bundle.js", "/static/api-docs.js"]
        assert "<script>" not in page.text  # no inline script: the CSP would refuse it
        for asset in [*scripts, "/docs/swagger-ui.css"]:
            response = anonymous.get(asset)
            assert response.status_code == 200 and len(response.content) > 400, asset
        assert anonymous.get("/docs/../../etc/passwd").status_code == 404
        assert anonymous.get("/docs/nothing.js").status_code == 404
        assert 'href="/docs"' in anonymous.get("/").text  # linked from the playground


# --- the schema and the server's validation agree -----------------------------------------------


@pytest.mark.parametrize("model_id", list(MODELS))
def test_each_models_documented_example_is_accepted_and_its_bounds_are_enforced(
    document: dict[str, Any], me: httpx.Client, model_id: str
) -> None:
    operation = document["paths"][f"/api/v3/{model_id}"]["post"]
    media = operation["requestBody"]["content"]["application/json"]
    example = media["examples"]["prompt_only" if MODELS[model_id].text_to_video else "inline_image"]["value"]
    created = me.post(f"/api/v3/{model_id}", json=example)
    assert created.status_code == 200, created.text
    assert created.json()["data"]["status"] == "created"

    properties = resolve(document, media["schema"])["properties"]
    just_outside: dict[str, Any] = {"aspect_ratio": "2:1", "prompt": " "}
    if "size" in properties:
        just_outside["size"] = "1280*721"
    if "loras" in properties:
        too_many = non_null(properties["loras"])["maxItems"] + 1
        just_outside["loras"] = [{"path": f"style{i}", "scale": 1} for i in range(too_many)]
    if "duration" in properties:
        just_outside["duration"] = max(non_null(properties["duration"])["enum"]) + 1
    for name in ("seed", "num_inference_steps", "guidance_scale"):
        if name in properties:
            just_outside[name] = non_null(properties[name])["maximum"] + 1
    for name, value in just_outside.items():
        # size is read only when aspect_ratio is absent.
        base = {k: v for k, v in example.items() if not (name == "size" and k == "aspect_ratio")}
        refused = me.post(f"/api/v3/{model_id}", json={**base, name: value})
        assert refused.status_code == 400, (name, refused.text)
        assert name in refused.json()["message"]
