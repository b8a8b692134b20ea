"""seekrl.envs: the retrieval environments agents search.

- `corpus`: streaming readers for `{id, contents}` (wiki-18) and `{id, title, text}` corpora; the packed,
  memory-mapped `DocStore`.
- `bm25`, `dense`, `hybrid`: the three index kinds (bm25s; sentence-transformers + FAISS; convex score fusion of both by default, reciprocal-rank fusion as an option).
- `index`: `build_index` / `load_index` by directory (manifest.json) and `retrieve` (Search-R1 result lists).
- `server`: the FastAPI app with Search-R1's `POST /retrieve` and `GET /health`; `batcher`: its cross-request
  micro-batching; `serve_ray`: the same app as a Ray Serve deployment with N replicas.
- `client`: `InProcessClient` and `HTTPClient` with one `search(queries, topk)` interface; failures raise `ToolError`.
  Image search: `InProcessImageClient` and `HTTPClient.image_search(images, topk, bboxes)`.
- `image_kb`: the image knowledge base of Glance-or-Gaze (offline descriptor or CLIP-style encoders, crops, cache);
  the server's `POST /image_search` serves it. `image_world`: the composite-image quickstart world and the KB of
  the real images in ../shared/data/multimodal.

Nothing heavy is imported here: `import seekrl.envs` stays cheap, and each module imports faiss,
sentence-transformers or torch only inside the functions that need them.
"""
