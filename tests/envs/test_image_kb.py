"""The image knowledge base on real images: descriptor, crops, build/save/load, cache, CLIP path, CLI build."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from seekrl.cli import app
from seekrl.envs.image_kb import (
    MIN_SIDE,
    DescriptorEncoder,
    ImageInputError,
    ImageKB,
    bbox_to_pixels,
    build_image_index,
    check_bbox,
    crop,
    decode_base64_image,
    encode_png_base64,
    open_rgb,
    pixel_hash,
)
from seekrl.envs.image_world import shared_images, write_kb_files
from seekrl.envs.index import IndexDirError, load_index, read_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def sources(shared_data):
    return shared_images(shared_data)


@pytest.fixture(scope="module")
def real_kb_files(sources, tmp_path_factory):
    """images/ + meta.jsonl of the 75 real images with their datasets' own text."""
    return write_kb_files(sources, tmp_path_factory.mktemp("realkb"))


@pytest.fixture(scope="module")
def real_kb(real_kb_files, tmp_path_factory) -> ImageKB:
    images, meta = real_kb_files
    out = tmp_path_factory.mktemp("idx") / "image"
    build_image_index(images, meta, out)
    return ImageKB.load(out)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_real_data_kb_has_every_image_with_its_text(sources, real_kb_files):
    assert len(sources) == 75
    assert [s.dataset for s in sources].count("infoseek") == 5
    assert [s.dataset for s in sources].count("okvqa") == 20
    assert [s.dataset for s in sources].count("easy_vqa") == 50
    rows = {r["id"]: r for r in map(json.loads, real_kb_files[1].read_text().splitlines())}
    assert rows["infoseek-0"]["caption"] == "What is the country of origin of this food? Spain."
    assert rows["okvqa-1777145"]["caption"] == "What are the bright pieces of food? carrots."
    assert rows["easyvqa-0"]["caption"] == "a red triangle."  # from "what is the red shape?" -> triangle
    assert rows["easyvqa-1"]["caption"] == "a yellow rectangle."


def test_every_real_image_finds_itself_first(real_kb, sources):
    manifest = read_manifest(real_kb.root)
    assert manifest["kind"] == "image" and manifest["image"]["encoder"]["name"] == "descriptor"
    assert manifest["image"]["num_entries"] == 75 and manifest["image"]["dim"] == DescriptorEncoder().dim
    results = real_kb.search([s.data for s in sources], topk=2)
    assert [r[0]["id"] for r in results] == [s.id for s in sources]
    assert all(r[0]["score"] == pytest.approx(1.0, abs=1e-5) for r in results)
    assert set(results[0][0]) == {"id", "title", "caption", "score"}
    assert results[0][0]["title"] == "InfoSeek image 0"


def test_descriptor_is_deterministic_and_robust_to_resizing(sources):
    encoder = DescriptorEncoder()
    photo = open_rgb(sources[10].data)  # an OK-VQA COCO photo
    first, again = encoder.encode([photo]), encoder.encode([open_rgb(sources[10].data)])
    assert np.array_equal(first, again)
    assert np.linalg.norm(first[0]) == pytest.approx(1.0, abs=1e-6)
    stretched = photo.resize((112, 112), Image.Resampling.LANCZOS)
    others = encoder.encode([open_rgb(s.data) for s in sources if s.id != sources[10].id])
    resized = encoder.encode([stretched])[0]
    assert float(resized @ first[0]) > 0.97
    assert float(resized @ first[0]) > float((others @ resized).max()) + 0.1


def test_cache_is_keyed_by_pixels_and_topk(real_kb_files, sources):
    kb = ImageKB.build(*real_kb_files)
    image = open_rgb(sources[3].data)
    first = kb.search([image], 3)
    # The same pixels as PNG bytes: a hit, whatever the encoding.
    again = kb.search([png_bytes(image)], 3)
    other_k = kb.search([image], 2)
    assert again == first and other_k[0] == first[0][:2]
    assert kb.cache_info() == {"hits": 1, "misses": 2, "size": 2, "max_size": 4096}
    assert pixel_hash(image) == pixel_hash(png_bytes(image)) != pixel_hash(image.rotate(90))
    # Results are copies: changing one does not change the cache.
    again[0][0]["title"] = "changed"
    assert kb.search([image], 3)[0][0]["title"] == "InfoSeek image 3"
    # Scores do not depend on the batch an image is searched in.
    kb.clear_cache()
    batch = kb.search([open_rgb(s.data) for s in sources[:5]], 3)
    assert kb.cache_info()["misses"] == 5 and batch[3] == first[0]


def test_lru_cache_evicts_the_oldest(real_kb_files, sources):
    images, meta = real_kb_files
    kb = ImageKB.build(images, meta)
    kb.cache_size = 2
    a, b, c = (open_rgb(s.data) for s in sources[:3])
    kb.search([a], 1), kb.search([b], 1), kb.search([a], 1), kb.search([c], 1)  # b is now the oldest: evicted
    assert kb.cache_info()["size"] == 2
    hits = kb.hits
    kb.search([a], 1)
    assert kb.hits == hits + 1
    kb.search([b], 1)
    assert kb.hits == hits + 1


BBOX_PIXELS = [
    # bbox (0-1000), image size, pixel box
    ((0, 0, 1000, 1000), (640, 480), (0, 0, 640, 480)),
    ((0, 0, 500, 500), (448, 448), (0, 0, 224, 224)),
    ((500, 500, 1000, 1000), (448, 448), (224, 224, 448, 448)),
    ((250, 100, 750, 900), (640, 480), (160, 48, 480, 432)),
    ((333, 333, 667, 667), (100, 100), (33, 33, 67, 67)),  # partly covered pixels are kept (floor/ceil)
    ((500, 500, 505, 505), (448, 448), (211, 211, 239, 239)),  # 3 px grows to MIN_SIDE around its centre
    ((0, 0, 10, 10), (448, 448), (0, 0, 28, 28)),  # grows, then shifted back inside at the top-left
    ((990, 990, 1000, 1000), (448, 448), (420, 420, 448, 448)),  # and at the bottom-right
    ((0, 0, 1000, 10), (640, 480), (0, 0, 640, 28)),  # only the short side grows
    ((400, 0, 600, 1000), (20, 50), (0, 0, 20, 50)),  # an image narrower than MIN_SIDE: its full width
]


@pytest.mark.parametrize(("bbox", "size", "pixels"), BBOX_PIXELS)
def test_bbox_to_pixels_table(bbox, size, pixels):
    assert bbox_to_pixels(bbox, size) == pixels
    left, top, right, bottom = pixels
    assert right - left >= min(MIN_SIDE, size[0]) and bottom - top >= min(MIN_SIDE, size[1])
    assert crop(Image.new("RGB", size), bbox).size == (right - left, bottom - top)


@pytest.mark.parametrize(
    ("bbox", "expected"),
    [
        ([0, 0, 1000, 1000], (0, 0, 1000, 1000)),
        ([10.4, 20.6, 30, 40], (10, 21, 30, 40)),
        ([0, 0, 1001, 5], "out of range"),
        ([-1, 0, 5, 5], "out of range"),
        ([50, 0, 50, 5], "out of range"),
        ([0, 9, 5, 3], "out of range"),
        ([0, 0, 5], "must be [x1, y1, x2, y2]"),
        ("0,0,5,5", "must be [x1, y1, x2, y2]"),
        ([0, 0, float("nan"), 5], "finite numbers"),
        ([True, 0, 5, 5], "finite numbers"),
    ],
)
def test_api_bbox_rules(bbox, expected):
    if isinstance(expected, tuple):
        assert check_bbox(bbox) == expected
    else:
        with pytest.raises(ImageInputError, match=expected.replace("[", r"\[")):
            check_bbox(bbox)


def test_image_decoding_rules(sources):
    image = open_rgb(sources[0].data)
    assert decode_base64_image(encode_png_base64(image)).size == image.size
    assert decode_base64_image("data:image/png;base64," + encode_png_base64(image)).size == image.size
    cases = [
        ("not base64 at all!", 422, "invalid base64"),
        ("aGVsbG8gd29ybGQ=", 422, "cannot be decoded"),  # valid base64 of 'hello world'
        ("", 422, "empty"),
    ]
    for text, status, message in cases:
        with pytest.raises(ImageInputError, match=message) as err:
            decode_base64_image(text)
        assert err.value.status == status
    with pytest.raises(ImageInputError, match="at most 1000 bytes") as err:
        decode_base64_image(encode_png_base64(image), max_bytes=1000)
    assert err.value.status == 413
    with pytest.raises(ImageInputError, match="at most 100 are allowed") as err:
        decode_base64_image(encode_png_base64(Image.new("RGB", (20, 20))), max_pixels=100)
    assert err.value.status == 413


def test_build_errors_name_the_problem(real_kb_files, tmp_path):
    images, meta = real_kb_files
    (tmp_path / "dup.jsonl").write_text('{"id": "infoseek-0"}\n{"id": "infoseek-0"}\n')
    (tmp_path / "missing.jsonl").write_text('{"id": "nope", "title": "x"}\n')
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "broken.jsonl").write_text('{"id": "b", "image": "broken.jpg"}\n')
    with pytest.raises(IndexDirError, match="duplicate id 'infoseek-0'"):
        ImageKB.build(images, tmp_path / "dup.jsonl")
    with pytest.raises(IndexDirError, match=r"entry 1 \(nope\): image .*nope.jpg not found"):
        ImageKB.build(images, tmp_path / "missing.jsonl")
    with pytest.raises(IndexDirError, match="broken.jpg: image cannot be decoded"):
        ImageKB.build(tmp_path, tmp_path / "broken.jsonl")
    with pytest.raises(IndexDirError, match="no such file"):
        ImageKB.build(images, tmp_path / "absent.jsonl")
    out = tmp_path / "idx"
    build_image_index(images, meta, out)
    with pytest.raises(IndexDirError, match="exists and is not empty"):
        build_image_index(images, meta, out)
    with pytest.raises(IndexDirError, match="is an image index: load it with .*ImageKB.load"):
        load_index(out)


def test_cli_builds_an_image_index(real_kb_files, tmp_path):
    images, meta = real_kb_files
    out = tmp_path / "kb"
    result = runner.invoke(app, ["retriever", "build", "--kind", "image", "--images", str(images), "--meta",
                                 str(meta), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "built image index of 75 images (descriptor)" in result.output
    kb = ImageKB.load(out)
    assert kb.search([kb.image("okvqa-982615")], 1)[0][0]["id"] == "okvqa-982615"
    errors = [
        (["--kind", "image", "--meta", str(meta), "--out", str(tmp_path / "a")], "needs --images DIR and --meta"),
        (["--kind", "bm25", "--out", str(tmp_path / "b")], "--kind bm25 needs --corpus"),
        (["--kind", "bm25", "--corpus", str(meta), "--images", str(images), "--out", str(tmp_path / "c")],
         "--images and --meta are for --kind image"),
        (["--kind", "image", "--images", str(images), "--meta", str(meta), "--out", str(out)], "not empty"),
    ]
    for args, message in errors:
        result = runner.invoke(app, ["retriever", "build", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output


def tiny_clip_dir(out):
    """A randomly initialised tiny CLIPModel and its image processor, built from a config (no download)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8)
    CLIPModel(config).save_pretrained(out)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return out


def test_clip_encoder_by_path_is_recorded_and_reloaded(sources, tmp_path):
    import torch
    from transformers import AutoImageProcessor, CLIPModel

    model_dir = tiny_clip_dir(tmp_path / "clip")
    subset = sources[:6] + sources[25:31]
    images, meta = write_kb_files(subset, tmp_path / "files")
    out = tmp_path / "kb"
    result = runner.invoke(app, ["retriever", "build", "--kind", "image", "--images", str(images), "--meta",
                                 str(meta), "--out", str(out), "--encoder", str(model_dir)])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["image"]["encoder"]["name"] == str(model_dir) and manifest["image"]["dim"] == 8
    kb = ImageKB.load(out)
    assert type(kb.encoder).__name__ == "CLIPEncoder"
    # The stored embeddings are CLIP's own normalised get_image_features.
    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        out_ = model.get_image_features(**processor(images=[open_rgb(subset[0].data)], return_tensors="pt"))
    features = out_ if isinstance(out_, torch.Tensor) else out_.pooler_output
    expected = torch.nn.functional.normalize(features, dim=-1)[0].numpy()
    np.testing.assert_allclose(kb.embeddings[0], expected, atol=1e-5)
    results = kb.search([s.data for s in subset], 1)
    assert [r[0]["id"] for r in results] == [s.id for s in subset]
