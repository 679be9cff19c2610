"""What runs the network behind the API: the served model in PyTorch (:class:`TorchBackend`, through
:class:`~src.inference.predictor.Predictor`, at the precision the run trained with) or the checkpoint's
exported ONNX model in onnxruntime (:class:`OnnxBackend`). ``conf/backend/`` picks one by ``_target_``.

Each is built in LitServe's inference worker, on the device LitServe gives it, from the
:class:`~src.serving.served_model.ServedModel` the API carries, and answers
``predict(images) -> list[Prediction]`` in one forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from src.core.hardware import FULL_PRECISION
from src.core.extras import require_extra
from src.inference.predictor import Prediction, Predictor, prediction_of
from src.optim.freezing import describe_stage, trainable_parameter_ids
from src.models.loading import eval_transform_for
from src.serving.served_model import ServedModel
from src.visualize.cam import MIN_CAM_CELLS, cam_layers, default_cam_layer, grad_cam
from src.visualize.walkthrough import inside_view

log = logging.getLogger(__name__)

EXPORT_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "export.yaml"


class TorchBackend:
    """The served network in PyTorch; Grad-CAM and the "Inside the model" view available."""

    name = "torch"
    cam_available = True
    inside_available = True

    def __init__(self, served: ServedModel, device: str, precision: str | None = None, tta: bool = False,
                 threshold: float | None = None, cam_layer: str | None = None) -> None:
        loaded = served.load()
        self.predictor = Predictor.from_loaded(loaded, device=device, tta=tta, threshold=threshold, precision=precision)
        # which parameters train in the stage the checkpoint was saved in (before training: the first), for the
        # inside view (described, not applied: freezing switches BatchNorm's running statistics off)
        schedule, (stage, when) = loaded.config.schedule, served.stage()
        groups = loaded.net.layer_groups()
        self.trainable = trainable_parameter_ids(groups, schedule.stages[stage].get("freeze_to", 0), schedule.train_bn)
        self.state = describe_stage(schedule, stage, len(groups), when)
        self.classes = self.predictor.classes
        self.multi_label = self.predictor.multi_label
        self.threshold = self.predictor.threshold
        self.precision = self.predictor.precision
        layers = cam_layers(self.predictor.net.net.backbone)
        if cam_layer is not None and cam_layer not in layers:
            raise ValueError(f"backend.cam_layer={cam_layer!r}; choose one of {', '.join(layers)} "
                             f"(null: the deepest whose map is at least {MIN_CAM_CELLS} x {MIN_CAM_CELLS} at the training size)")
        if cam_layer is None:
            cam_layer = default_cam_layer(self.predictor.net.net.backbone, self.predictor.transform.size)
        self.cam_layer_name = cam_layer
        self.cam_layer = layers[cam_layer]

    @staticmethod
    def prepare(backend: DictConfig, served: ServedModel, output_dir: Path) -> DictConfig:
        return backend

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        return self.predictor.predict_batch(images)

    def cam(self, image: Image.Image, index: int) -> torch.Tensor:
        """The (S, S) Grad-CAM of class ``index`` over the image the network sees (resized, centre-cropped)."""
        tensor = self.predictor.transform(image).to(self.predictor.device)
        return grad_cam(self.predictor.net, self.cam_layer, tensor, target=index)[0].cpu()

    def inside(self, image: Image.Image, kernel: int | None) -> tuple[dict, Prediction]:
        """The "Inside the model" view of ``image`` (:func:`~src.visualize.walkthrough.inside_view`): the served
        network, at its precision, in one forward pass; and the prediction, from that pass (with TTA, from
        the usual passes: the view shows the plain one)."""
        view = inside_view(self.predictor.net.net, self.predictor.transform, image, classes=self.classes,
                           forward=self.predictor.net, cam_layer=self.cam_layer_name, kernel=kernel,
                           trainable=self.trainable, state=self.state, multi_label=self.multi_label)
        if self.predictor.tta:
            return view, self.predict([image])[0]
        return view, prediction_of(torch.tensor(view["probabilities"]), self.classes, self.multi_label, self.threshold)


class OnnxBackend:
    """The model exported by ``src.export`` (uint8 images in, probabilities out) in onnxruntime, fed the
    images resized and cropped as the eval transform does (the export's own resize is then a no-op).
    Always float32; no Grad-CAM (onnxruntime gives no gradients)."""

    name = "onnx"
    cam_available = False
    inside_available = False
    precision = FULL_PRECISION

    def __init__(self, served: ServedModel, device: str, onnx_path: str, threshold: float | None = None) -> None:
        import onnxruntime

        self.classes = served.classes
        self.multi_label = served.multi_label
        self.threshold = served.threshold if threshold is None else threshold
        self.view = eval_transform_for(served.config).uint8_view()
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(str(onnx_path), providers=providers)

    @staticmethod
    def prepare(backend: DictConfig, served: ServedModel, output_dir: Path) -> DictConfig:
        """Export the checkpoint to ``output_dir/model.onnx`` unless ``onnx_path`` names an exported model."""
        require_extra("export", "backend=onnx")  # onnxruntime runs it; onnx and onnxscript export it
        if served.checkpoint is None:
            raise ValueError(f"backend=onnx serves a checkpoint exported to ONNX, and {served.describe()} has no "
                             "checkpoint; use the torch backend (backend=torch) or train first")
        ckpt_path = str(served.checkpoint)
        if backend.onnx_path is not None:
            if not Path(backend.onnx_path).is_file():
                raise FileNotFoundError(f"backend.onnx_path={backend.onnx_path!r} does not exist; export the checkpoint "
                                        "with `python -m src.export ckpt_path=... format=onnx`, or leave it null to "
                                        "export at start")
            return backend
        from src.inference.exporting import export  # onnx and onnxscript: the export extra

        log.info("exporting %s to ONNX for the onnx backend", ckpt_path)
        defaults = OmegaConf.load(EXPORT_CONFIG)  # the opset `python -m src.export` uses
        paths = export(OmegaConf.create({"ckpt_path": ckpt_path, "format": "onnx", "opset": defaults.opset,
                                         "paths": {"output_dir": str(output_dir)}}))
        backend = backend.copy()
        with open_dict(backend):
            backend.onnx_path = paths["model"]
        return backend

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        batch = torch.stack([self.view(image) for image in images]).numpy()
        probabilities = torch.from_numpy(self.session.run(None, {"images": batch})[0])
        return [prediction_of(p, self.classes, self.multi_label, self.threshold) for p in probabilities]

    def cam(self, image: Image.Image, index: int) -> torch.Tensor:
        raise NotImplementedError("Grad-CAM needs the torch backend")
