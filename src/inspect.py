"""See how each part of the CNN works on your own model and data, in one command.

``python -m src.inspect experiment=resnet50 data.root=DIR`` (before training) or
``python -m src.inspect ckpt_path=RUN/checkpoints/best.ckpt [image=PATH]`` (after) writes to its run
directory: ``summary.txt`` (fastai's ``learner.summary()``), ``batch.png`` (``show_batch``),
``tensor.txt`` (the image as numbers), ``kernels.png`` (convolution), ``features.png`` (stage
outputs), ``pooling.png`` (feature map -> pooled vector -> class scores) and ``cam.png`` (Grad-CAM).
``inspect_model(cfg)`` does the work (tests call it); ``main`` is the thin Hydra wrapper.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from src.data.datamodule import ImageFolderDataModule
from src.data.files.image_reader import load_rgb
from src.data.labels.split import label_text
from src.models.components.classifier import ImageClassifier
from src.inference.precision_net import PrecisionNet
from src.optim.freezing import freeze_for_stage
from src.models.loading import eval_transform_for, load_classifier
from src.runs.builder import build_datamodule, build_module
from src.serving.served_model import BEFORE_TRAINING, ServedModel
from src.core.hardware import FULL_PRECISION, normalize_precision
from src.visualize.cam import cam_figure, cam_layers, default_cam_layer, grad_cam
from src.visualize.figure_files import save_figure
from src.visualize.features import features_figure, stage_outputs
from src.visualize.interpretation_figures import TOP_LOSS_TITLE_KEY, top_loss_title
from src.visualize.kernels import kernels_figure
from src.visualize.pooling import pooling_figure
from src.visualize.show_batch import denormalize, normalized_and_denormalized_figure
from src.visualize.summary import summary_table
from src.visualize.tensor_report import tensor_report
from src.optim.fine_tune import register_resolvers
from src.core.extras import require_extra
from src.core.user_errors import one_line_user_errors

register_resolvers()  # conf/schedule/fine_tune.yaml's ${fine_tune_stages:}, before Hydra composes a config

log = logging.getLogger(__name__)


@dataclass
class Subject:
    """The network to inspect, its classes, the data config it goes with and its trainable state."""

    net: ImageClassifier
    classes: list[str]
    data_config: DictConfig
    state: str  # which stage's frozen set the summary shows, in words
    trained: bool
    precision: str = FULL_PRECISION  # what the predictions (Grad-CAM, top losses) run at
    channels_last: bool = False


def load_subject(cfg: DictConfig, classes: list[str] | None = None) -> Subject:
    """From ``cfg.ckpt_path`` (trained; last stage's state) or the experiment (untrained; first stage).

    Before training the class list is ``classes``, or else that of the data folder ``cfg.data.root``.
    """
    if cfg.get("ckpt_path"):
        loaded = load_classifier(cfg.ckpt_path)
        schedule = loaded.config.schedule
        state = freeze_for_stage(loaded.net, schedule, len(schedule.stages) - 1,
                                 f"(the last stage of the run that wrote {cfg.ckpt_path})")
        precision = loaded.precision_on(torch.device("cpu"), cfg.get("precision"))
        return Subject(loaded.net, loaded.classes, loaded.config.data, state, trained=True, precision=precision,
                       channels_last=loaded.channels_last_at(precision))
    if classes is None:
        classes = build_datamodule(cfg.data, split_csv=None).classes
    net = build_module(cfg, classes=classes, multi_label=False).net  # the same network for either
    state = freeze_for_stage(net, cfg.schedule, 0, BEFORE_TRAINING)
    precision = normalize_precision(cfg.get("precision") or FULL_PRECISION)
    return Subject(net, classes, cfg.data, state, trained=False, precision=precision)


def model_summary(subject: Subject) -> str:
    """fastai's summary table of ``subject.net`` at the data's image size, with its trainable state."""
    size = subject.data_config.size
    title = (f"{type(subject.net).__name__} ({subject.net.backbone.name} body + head, {len(subject.classes)} classes, "
             f"input 3 x {size} x {size})")
    return summary_table(subject.net, (3, size, size), title, subject.state)


def _datamodule(data_config: DictConfig, output_dir: Path, image: str | None) -> ImageFolderDataModule | None:
    """The checkpoint's data, or None when its folder has gone and ``image`` is given instead."""
    root = Path(data_config.root).expanduser()
    if not root.is_dir():
        if image is None:
            raise FileNotFoundError(
                f"data.root={str(root)!r} (from the checkpoint's run) is not a folder, and no image was given: "
                "pass image=PATH to follow one image through the network (batch.png and the top losses need the data)"
            )
        log.warning("data.root=%s is missing: batch.png and the top losses are skipped", root)
        return None
    return _setup_datamodule(data_config, output_dir)


def _setup_datamodule(data_config: DictConfig, output_dir: Path) -> ImageFolderDataModule:
    # Single images and the CPU: the workers' transforms show what the network sees either way
    # (data.augment.on=device draws from the same distributions on whole batches).
    augment = {**(data_config.get("augment") or {}), "on": "workers"}
    datamodule = build_datamodule(data_config, split_csv=str(output_dir / "split.csv"), num_workers=0,
                                  augment=augment, decode_on="workers")
    datamodule.setup("fit")
    return datamodule


def _cam_layer(net: ImageClassifier, name: str | None, size: int) -> tuple[str, torch.nn.Module]:
    layers = cam_layers(net.backbone)
    name = default_cam_layer(net.backbone, size) if name is None else name
    if name not in layers:
        raise ValueError(f"cam_layer={name!r}; choose one of {', '.join(layers)}")
    return name, layers[name]


def _top_losses(net: torch.nn.Module, datamodule: ImageFolderDataModule, count: int) -> list[tuple[int, float]]:
    """(validation index, loss) of the ``count`` validation images the network gets most wrong."""
    losses = []
    with torch.no_grad():
        for images, labels in datamodule.val_dataloader():
            losses.append(F.cross_entropy(net(images), labels, reduction="none"))
    values, indices = torch.cat(losses).topk(min(count, len(datamodule.datasets["valid"])))
    return list(zip(indices.tolist(), values.tolist()))


def serve_inspected(cfg: DictConfig) -> None:
    """Serve the network ``inspect_model`` would inspect (``serve=true``) until interrupted (Ctrl+C or SIGTERM).

    A checkpoint is served as ``python -m src.serve`` serves it; before training, the seeded network built from
    the config (its classes from the data folder) is handed to the server's worker as it is.
    """
    from src.serving.server import run_server, serve_settings

    command = "python -m src.inspect serve=true"
    require_extra("serve", command)  # before the network is built
    torch.manual_seed(cfg.seed)
    if cfg.get("ckpt_path"):
        served = ServedModel.from_checkpoint(cfg.ckpt_path)
    else:
        subject = load_subject(cfg)
        served = ServedModel.before_training(subject.net, subject.classes, cfg, subject.precision)
    run_server(serve_settings(cfg.paths, host=cfg.host, port=cfg.port, **{"backend.precision": cfg.get("precision")}),
               served, command)


def inspect_model(cfg: DictConfig) -> dict[str, Path]:
    """Write every artefact of the module docstring to ``cfg.paths.output_dir``; return their paths by name."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.get("ckpt_path"):
        subject = load_subject(cfg)
        datamodule = _datamodule(subject.data_config, output_dir, cfg.get("image"))
    else:  # before training the classes come from the data folder, so it must be there
        datamodule = _setup_datamodule(cfg.data, output_dir)
        subject = load_subject(cfg, datamodule.classes)
    net, classes, data = subject.net, subject.classes, subject.data_config
    mean, std = list(data.mean), list(data.std)
    paths: dict[str, Path] = {"summary": output_dir / "summary.txt"}
    paths["summary"].write_text(model_summary(subject))

    if datamodule is not None:
        dataset = datamodule.datasets["train"]
        picks = torch.randperm(len(dataset))[: cfg.batch_count].tolist()
        images, labels = zip(*(dataset[i] for i in picks))
        batch = normalized_and_denormalized_figure(torch.stack(images), labels, classes, mean, std)
        paths["batch"] = save_figure(batch, output_dir / "batch.png")
    if cfg.get("image"):
        image_path, label = Path(cfg.image).expanduser(), None
        if not image_path.is_file():
            raise FileNotFoundError(f"image={str(image_path)!r} is not a file; give the path of a photo")
    else:
        sample = datamodule.index.valid[0]
        image_path, label = sample.path, label_text(sample.label, classes)

    transform = datamodule.eval_transform if datamodule is not None else eval_transform_for(OmegaConf.create({"data": data}))
    unnormalized = transform.unnormalized_view()(load_rgb(image_path))
    image = transform.normalize(unnormalized)
    batch_shape = (data.batch_size, *image.shape)
    paths["tensor"] = output_dir / "tensor.txt"
    paths["tensor"].write_text(tensor_report(str(image_path), unnormalized, image, mean, std, batch_shape))

    name = f"({label})" if label else f"({image_path.name})"
    first_conv = next(m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    paths["kernels"] = save_figure(kernels_figure(unnormalized, first_conv.weight, name), output_dir / "kernels.png")
    outputs = stage_outputs(net.eval().backbone, image)
    paths["features"] = save_figure(features_figure(unnormalized, outputs), output_dir / "features.png")
    paths["pooling"] = save_figure(pooling_figure(net, image, classes), output_dir / "pooling.png")

    cam_name, layer = _cam_layer(net, cfg.cam_layer, data.size)
    # The predictions from here on run as the network trained (autocast, memory format), so the
    # probabilities shown are the ones src.evaluate and src.predict give.
    net = PrecisionNet(net, subject.precision, torch.device("cpu"), subject.channels_last)
    cam, logits = grad_cam(net, layer, image)
    probability, predicted = logits.softmax(0).max(0)
    pictures, cams = [unnormalized], [cam]
    titles = [f"{image_path.name}\npred {classes[predicted]}, p(pred) {probability:.2f}" + (f"\nactual {label}" if label else "")]
    # Top losses by cross-entropy are single-label (see src.inference.interpretation.MULTI_LABEL_SKIPPED).
    if subject.trained and datamodule is not None and cfg.top_losses > 0 and not datamodule.multi_label:
        valid = datamodule.datasets["valid"]
        for index, loss in _top_losses(net, datamodule, cfg.top_losses):
            valid_image, valid_label = valid[index]
            cam_i, logits_i = grad_cam(net, layer, valid_image)
            probabilities = logits_i.softmax(0)
            pictures.append(denormalize(valid_image.unsqueeze(0), mean, std)[0])
            cams.append(cam_i)
            titles.append(top_loss_title(classes[int(probabilities.argmax())], classes[valid_label], loss,
                                         float(probabilities[valid_label])))
    suptitle = (f"Grad-CAM at {cam_name} of the predicted class"
                + (f": the chosen image, then the top losses ({TOP_LOSS_TITLE_KEY})" if len(pictures) > 1 else ""))
    paths["cam"] = save_figure(cam_figure(pictures, cams, titles, suptitle), output_dir / "cam.png")
    log.info("inspected %s on %s at precision %s: %s", "checkpoint" if subject.trained else "untrained model",
             image_path, subject.precision, ", ".join(str(p) for p in paths.values()))
    return paths


@one_line_user_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="inspect")
def main(cfg: DictConfig) -> None:
    if cfg.serve:
        serve_inspected(cfg)
        return
    paths = inspect_model(cfg)
    # The command's result: the summary table, then where everything went.
    print(paths["summary"].read_text())
    print(f"inspect directory: {cfg.paths.output_dir}")
    for path in paths.values():
        print(f"  {path.name}")


if __name__ == "__main__":
    main()
