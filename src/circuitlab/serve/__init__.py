"""``circuitlab serve``: the interactive explorer, a local web application over the library's analyses.

    from circuitlab.serve import create_app
    app = create_app(["zoo/toy-lm"], data_dir="explorer-data")      # an ASGI app (FastAPI); uvicorn serves it
    # or from the shell:  circuitlab serve -m zoo/toy-lm --port 8765

- :mod:`circuitlab.serve.app`: the application (:func:`create_app`), its security guard and :func:`serve`;
- :mod:`circuitlab.serve.analyses`: what a request may compute and how its arguments are checked;
- :mod:`circuitlab.serve.jobs`: one bounded job queue and one worker thread per loaded model;
- :mod:`circuitlab.serve.store`: the SQLite store of runs (WAL mode);
- ``static/``: the page (plain HTML, CSS and JavaScript, no build step); circuitsvis's bundle is served from the
  installed circuitsvis package.
"""

from circuitlab.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
