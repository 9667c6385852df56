"""The naive ceiling: a bare aiohttp server that parses a V2 request and calls `predict`.

No protocol checks, no metrics, no access log. Run with the project's .venv python:
`python bench/bare_aiohttp.py --model DIR/cycles/1/model/model.skops --port 18310`.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from aiohttp import web

from modelcycle_trainer import modelio

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--host", default="127.0.0.1")
args = ap.parse_args()
model = modelio.load_model(Path(args.model))
model.predict(np.zeros((1, model.n_features_in_)))


async def infer(request: web.Request) -> web.Response:
    tensor = json.loads(await request.read())["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
    pred = model.predict(x).tolist()
    out = {"name": "predict", "shape": [len(pred)], "datatype": "INT64", "data": pred}
    return web.json_response({"model_name": request.match_info["model"], "outputs": [out]})


async def ready(_: web.Request) -> web.Response:
    return web.json_response({"ready": True})


app = web.Application()
app.router.add_post("/v2/models/{model}/infer", infer)
app.router.add_get("/v2/health/ready", ready)
web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
