"""The retrieval server as a Ray Serve deployment: the same FastAPI app, N replicas behind Ray's HTTP proxy.

The app is passed to `serve.ingress` as a builder function, so each replica opens the index directory in its
own process (memory-mapped, so replicas on one node share the page cache) instead of receiving a pickled copy.
"""

from __future__ import annotations

from pathlib import Path

DEPLOYMENT_NAME = "seekrl-retriever"


def retriever_deployment(index_dir: str | Path, replicas: int = 1, **app_options):
    """A bound Ray Serve application serving `index_dir`; `app_options` go to `create_app` (api_key, limits)."""
    from ray import serve

    index_dir = str(Path(index_dir).resolve())

    def build_app():
        from seekrl.envs.index import load_index
        from seekrl.envs.server import create_app

        searcher = load_index(index_dir)
        searcher.search(["warm-up"], 1)  # load the encoder now, not on the replica's first request
        return create_app(searcher, **app_options)

    deployment = serve.deployment(serve.ingress(build_app)(), name=DEPLOYMENT_NAME, num_replicas=replicas)
    return deployment.bind()


def start_ray_serve(index_dir: str | Path, replicas: int, host: str = "127.0.0.1", port: int = 8000,
                    **app_options):
    """Start Ray Serve (local Ray unless RAY_ADDRESS names a cluster) and deploy; returns when replicas are up."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    return serve.run(retriever_deployment(index_dir, replicas, **app_options), name=DEPLOYMENT_NAME,
                     route_prefix="/")


def run_ray_serve(index_dir: str | Path, replicas: int, host: str = "127.0.0.1", port: int = 8000,
                  **app_options) -> None:
    """Serve until SIGINT or SIGTERM, then shut Serve and the local Ray down (`seekrl retriever serve --replicas N`)."""
    import signal
    import threading

    import ray
    from ray import serve

    start_ray_serve(index_dir, replicas, host=host, port=port, **app_options)
    print(f"serving {index_dir} with {replicas} Ray Serve replicas on http://{host}:{port}", flush=True)
    stop = threading.Event()
    # Our own handlers, installed after ray.init: a plain KeyboardInterrupt does not reliably reach this loop.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    serve.shutdown()
    ray.shutdown()
