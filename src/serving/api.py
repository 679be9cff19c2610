"""The LitServe API: requests checked by :mod:`src.serving.uploads` in, JSON predictions out.

With ``max_batch_size`` > 1 LitServe's worker collects up to that many requests (waiting at most
``batch_timeout`` seconds for them) and :meth:`ClassifierAPI.predict` runs all their images in one
forward pass; every answer says which pass served it (``batch``), so batching can be seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import litserve as ls
from PIL import Image

from src.inference.predictor import Prediction
from src.models.network import call_target
from src.serving.served_model import ServedModel
from src.serving.uploads import image_from_payload
from src.visualize.data_urls import heatmap_png

log = logging.getLogger(__name__)


@dataclass
class ImagesRequest:
    """One request's images (decoded), their names and what it asked for."""

    names: list[str]
    images: list[Image.Image]
    topk: int
    cam: bool
    inside: dict | None = None  # {"kernel": k or None}: add the "Inside the model" view


class ClassifierAPI(ls.LitAPI):
    """Predictions of the backend ``backend`` (a ``conf/backend/`` config, built in the worker).

    Args:
        backend: the backend's config (``_target_`` and its arguments other than ``served``/``device``).
        served: the served model (a checkpoint, or a network before training), pickled to the worker with the API.
        model: what every answer says about the model (name, checkpoint ...).
        topk: classes per image in the answer unless the request asks for another count.
    """

    def __init__(self, backend: dict, served: ServedModel | None, model: dict, topk: int, max_batch_size: int = 1,
                 batch_timeout: float = 0.0, api_path: str = "/predict") -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=api_path)
        self.backend_config = backend
        self.served = served
        self.model = model
        self.topk = topk

    def setup(self, device: str) -> None:
        # called, not instantiated: Hydra would take the served model (a dataclass) for a config and copy its network
        self.backend = call_target(self.backend_config, served=self.served, device=device)
        self.forward_passes = 0
        self.model = {**self.model, "precision": self.backend.precision}  # what the worker really runs at
        log.info("serving %s with the %s backend on %s at %s", self.served.describe(), self.backend.name, device,
                 self.backend.precision)

    def decode_request(self, request: dict) -> ImagesRequest:
        items = request["images"]
        images = [image_from_payload(item) for item in items]
        return ImagesRequest([item["name"].strip("'") for item in items], images, request.get("topk") or self.topk,
                             bool(request.get("cam")), request.get("inside"))

    def batch(self, inputs: list[ImagesRequest]) -> list[ImagesRequest]:
        return inputs  # predict stacks the images of every request itself (a request may hold several)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def predict(self, x: ImagesRequest | list[ImagesRequest]) -> dict | list[dict]:
        requests = x if isinstance(x, list) else [x]
        # an inside request (one image) is answered by its own pass with hooks, which gives its prediction too
        views = {id(r): self.backend.inside(r.images[0], r.inside["kernel"]) for r in requests if r.inside is not None}
        predictions = self.backend.predict([image for r in requests if id(r) not in views for image in r.images])
        self.forward_passes += 1
        batch = {"forward_pass": self.forward_passes, "requests": len(requests),
                 "images": sum(len(r.images) for r in requests)}
        answers, start = [], 0
        for r in requests:
            if id(r) in views:
                view, prediction = views[id(r)]
                described = [{**self._describe(r.names[0], r.images[0], prediction, r), "inside": view}]
            else:
                mine = predictions[start:start + len(r.images)]
                start += len(r.images)
                described = [self._describe(name, image, p, r) for name, image, p in zip(r.names, r.images, mine)]
            answers.append({"model": self.model, "predictions": described, "batch": batch})
        return answers if isinstance(x, list) else answers[0]

    def _describe(self, name: str, image: Image.Image, prediction: Prediction, request: ImagesRequest) -> dict[str, Any]:
        label, index, probabilities = prediction
        top = probabilities.topk(min(request.topk, len(probabilities)))
        answer: dict[str, Any] = {
            "file": name,
            "label": list(label) if isinstance(label, tuple) else label,
            "probability": ([float(probabilities[i]) for i in index] if isinstance(index, tuple)
                            else float(probabilities[index])),
            "top": [{"label": self.backend.classes[i], "probability": float(p)}
                    for p, i in zip(top.values.tolist(), top.indices.tolist())],
            "probabilities": probabilities.tolist(),
        }
        if request.cam and self.backend.cam_available:
            answer["cam"] = {"class": self.backend.classes[int(top.indices[0])],
                             "png": heatmap_png(self.backend.cam(image, int(top.indices[0])))}
        return answer

    def encode_response(self, output: dict) -> dict:
        return output
