"""POST /image_search on a real loopback server: glance and gaze results, clients, and every kind of bad input."""

from __future__ import annotations

import base64
import io
import random

import httpx
import pytest
from PIL import Image

from seekrl.envs.client import HTTPClient, InProcessImageClient, ToolError
from seekrl.envs.image_kb import ImageKB, crop, encode_png_base64
from seekrl.envs.image_world import TILE_BOXES, generate_image_world, shared_images, write_image_world
from seekrl.envs.index import build_index
from seekrl.envs.server import create_app

from retrieval_helpers import ThreadServer, free_port, start_cli_server

MAX_IMAGE_BYTES = 200_000
MAX_IMAGE_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def world(shared_data):
    return generate_image_world(seed=0, source=shared_images(shared_data))


@pytest.fixture(scope="module")
def world_dirs(world, tmp_path_factory):
    return write_image_world(world, tmp_path_factory.mktemp("gog-world"))


@pytest.fixture(scope="module")
def kb(world_dirs) -> ImageKB:
    return ImageKB.load(world_dirs["index"])


@pytest.fixture(scope="module")
def server(kb):
    """An image-only server with small image limits, so the 413s are cheap to reach."""
    server = ThreadServer(create_app(None, image_kb=kb, max_image_bytes=MAX_IMAGE_BYTES,
                                     max_image_pixels=MAX_IMAGE_PIXELS, max_body_bytes=400_000)).start()
    yield server
    server.stop()


def post(server, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/image_search", json=body, timeout=30, **kwargs)


def png64(image) -> str:
    return encode_png_base64(image)


def test_glance_and_gaze_over_http(server, world):
    composite = world.composites[0]
    image = world.composite_image(composite)
    glance = post(server, {"image": png64(image), "topk": 3})
    assert glance.status_code == 200
    result = glance.json()["result"]
    assert len(result) == 3 and set(result[0]) == {"id", "title", "caption", "score"}
    assert result[0]["score"] < 0.8
    for i, kb_id in enumerate(composite.tiles):
        # Server-side crop (image + bbox) and client-side crop give the same pixels, hence the same answer.
        gaze = post(server, {"image": png64(image), "bbox": list(TILE_BOXES[i]), "topk": 1}).json()["result"]
        local = post(server, {"image": png64(crop(image, TILE_BOXES[i])), "topk": 1}).json()["result"]
        assert gaze == local
        assert gaze[0]["id"] == kb_id and gaze[0]["title"] == world.thing[kb_id].name
        assert gaze[0]["caption"] == world.thing[kb_id].caption
    # A JPEG and a data URL are fine too; topk null is the server default (3).
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    data_url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    assert len(post(server, {"image": data_url, "topk": None}).json()["result"]) == 3


def test_search_by_image_id_with_bbox(server, world):
    kb_id = world.things[0].kb_id
    whole = post(server, {"image_id": kb_id, "topk": 1}).json()["result"]
    assert whole[0]["id"] == kb_id and whole[0]["score"] == pytest.approx(1.0, abs=1e-5)
    inner = post(server, {"image_id": kb_id, "bbox": [100, 100, 900, 900], "topk": 1}).json()["result"]
    assert inner[0]["id"] == kb_id and inner[0]["score"] < whole[0]["score"]


def test_health_of_an_image_only_server(server, kb):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "kind": "image", "num_images": 75,
                                                         "encoder": "descriptor"}
    response = httpx.post(f"{server.url}/retrieve", json={"queries": ["x"]})
    assert response.status_code == 404 and "no text index" in response.json()["error"]


def _bad_bodies(kb):
    tiny = png64(Image.new("RGB", (40, 40), (200, 30, 30)))
    noise = Image.frombytes("RGB", (300, 300), random.Random(0).randbytes(300 * 300 * 3))
    big_file = png64(noise)  # ~270 KB of incompressible pixels > MAX_IMAGE_BYTES, < the body limit
    return [
        ({"image": "@@not base64@@"}, 422, "image: invalid base64"),
        ({"image": base64.b64encode(b"hello, world").decode()}, 422, "image cannot be decoded"),
        ({"image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()}, 422, "image cannot be decoded"),
        ({"image": ""}, 422, "image: empty"),
        ({"image": "data:image/png;base64"}, 422, "data URL without ','"),
        ({"image": tiny, "bbox": [0, 0, 1001, 500]}, 422, "out of range"),
        ({"image": tiny, "bbox": [-5, 0, 500, 500]}, 422, "out of range"),
        ({"image": tiny, "bbox": [500, 0, 400, 500]}, 422, "out of range"),
        ({"image": tiny, "bbox": [0, 0, 500]}, 422, "bbox must be [x1, y1, x2, y2]"),
        ({"image": tiny, "bbox": ["0", 0, 5, 5]}, 422, "bbox.0: Input should be a valid number"),
        ({"image_id": "no-such-id"}, 422, "unknown image_id 'no-such-id'"),
        ({"image_id": "x" * 10_000}, 422, "unknown image_id"),
        ({"image_id": kb.entries[0].id, "bbox": [0, 0, 2000, 2000]}, 422, "out of range"),
        ({"image": tiny, "image_id": kb.entries[0].id}, 422, "exactly one of 'image' (base64) and 'image_id'"),
        ({}, 422, "exactly one of 'image'"),
        ({"image": tiny, "topk": 0}, 422, "topk must be between 1 and 100"),
        ({"image": tiny, "topk": 101}, 422, "topk must be between 1 and 100"),
        ({"image": tiny, "topk": "3"}, 422, "topk"),
        ({"image": 12}, 422, "image: Input should be a valid string"),
        ({"image": tiny, "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
        ([tiny], 422, "Input should be a valid dictionary"),
        ({"image": big_file}, 413, f"at most {MAX_IMAGE_BYTES} bytes are allowed"),
        ({"image": png64(Image.new("RGB", (1100, 1000)))}, 413, "at most 1000000 are allowed"),
        ({"image": "A" * 500_000}, 413, "request body larger than 400000 bytes"),
    ]


def test_bad_inputs_get_4xx_with_a_message_and_the_server_keeps_serving(server, kb):
    for body, status, message in _bad_bodies(kb):
        response = post(server, body)
        assert response.status_code == status, (body if len(str(body)) < 200 else str(body)[:200], response.text)
        assert message in response.json()["error"], response.json()
    not_json = httpx.post(f"{server.url}/image_search", content=b"{not json", timeout=30,
                          headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422
    assert post(server, {"image_id": kb.entries[1].id, "topk": 1}).json()["result"][0]["id"] == kb.entries[1].id


def test_http_client_matches_the_in_process_client(server, kb, world):
    image = world.composite_image(world.composites[1])
    crops = [crop(image, box) for box in TILE_BOXES]
    local = InProcessImageClient(kb)
    with HTTPClient(server.url, max_retries=0) as remote:
        assert remote.image_search([image, *crops], topk=2) == local.image_search([image, *crops], topk=2)
        boxes = [None, *TILE_BOXES]
        assert remote.image_search([image] * 5, topk=1, bboxes=boxes) == local.image_search([image] * 5, 1, boxes)
        encoded = io.BytesIO()
        crops[0].save(encoded, format="PNG")
        assert remote.image_search([encoded.getvalue()], 1)[0][0]["id"] == world.composites[1].tiles[0]
        kb_id = world.things[2].kb_id
        assert remote.image_search_by_id([kb_id], 1) == local.image_search_by_id([kb_id], 1)
        with pytest.raises(ToolError, match="out of range") as err:
            remote.image_search([image], 1, bboxes=[(0, 0, 1200, 10)])
        assert err.value.kind == "invalid_request" and err.value.status == 422
        with pytest.raises(ToolError, match="unknown image_id"):
            remote.image_search_by_id(["nope"], 1)
    with pytest.raises(ToolError, match="out of range"):
        local.image_search([image], 1, bboxes=[(0, 0, 1200, 10)])
    with pytest.raises(ToolError, match="unknown image_id"):
        local.image_search_by_id(["nope"])
    dead = HTTPClient(f"http://127.0.0.1:{free_port()}", max_retries=1, backoff_s=0.01)
    with pytest.raises(ToolError) as err:
        dead.image_search([image], 1)
    assert err.value.kind == "unavailable"


def test_text_server_without_image_index_answers_404(bm25_server):
    response = httpx.post(f"{bm25_server.url}/image_search", json={"image_id": "x"})
    assert response.status_code == 404 and "no image index" in response.json()["error"]


def test_cli_serves_an_image_index_beside_a_text_index(world_dirs, world, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"id": "t{i}", "contents": "\\"{t.name}\\"\\n{t.caption}"}}\n'
                              for i, t in enumerate(world.things)))
    text_index = tmp_path / "bm25"
    build_index(corpus, text_index, "bm25", progress=False)
    port = free_port()
    proc = start_cli_server(text_index, port, "--image-index", str(world_dirs["index"]))
    try:
        url = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{url}/health").json()
        assert health["kind"] == "bm25" and health["image"] == {"num_images": 75, "encoder": "descriptor"}
        thing = world.things[5]
        with HTTPClient(url) as client:
            assert client.search([thing.name], 1)[0][0]["id"] == "t5"
            assert client.image_search_by_id([thing.kb_id], 1)[0][0]["title"] == thing.name
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # An image index alone: only /image_search.
    port = free_port()
    proc = start_cli_server(world_dirs["index"], port)
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/health").json()["kind"] == "image"
        assert httpx.post(f"{url}/retrieve", json={"queries": ["x"]}).status_code == 404
        image = world.composite_image(world.composites[0])
        body = {"image": png64(image), "bbox": list(TILE_BOXES[3]), "topk": 1}
        assert httpx.post(f"{url}/image_search", json=body).json()["result"][0]["id"] == world.composites[0].tiles[3]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
