"""`python -m src.serve`: the real server in a subprocess on a free 127.0.0.1 port, asked over HTTP."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from PIL import Image

from tests.conftest import PROJECT_ROOT, _bomb_png, compose_config, copy_sample, require_extra, train_tiny_run

require_extra("litserve", "serve")

CLASSES = 4
START_TIMEOUT_S = 240  # two cores shared with other jobs: importing torch in the worker and loading take a while


@pytest.fixture(scope="module")
def trained(module_tmp_path) -> Path:
    """A tiny training run on real photos: its best checkpoint."""
    return train_tiny_run(module_tmp_path / "served", [], classes=CLASSES, per_class=8) / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def photos(trained) -> list[Path]:
    """One real photo per class."""
    images = trained.parents[2] / "images"
    return [sorted(folder.iterdir())[-1] for folder in sorted(images.iterdir())]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """Plain HTTP/1.1 requests to the server (the standard library only)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def get_json(self, path: str) -> dict:
        status, body = self.request("GET", path)
        assert status == 200, body
        return json.loads(body)

    def post(self, body: bytes, content_type: str | None, query: str = "") -> tuple[int, dict]:
        headers = {"Content-Type": content_type} if content_type else {}
        status, answer = self.request("POST", "/predict" + query, body, headers)
        return status, json.loads(answer)

    def post_files(self, files: list[tuple[str, bytes]], query: str = "") -> tuple[int, dict]:
        return self.post(*multipart(files), query=query)


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@contextmanager
def running_server(ckpt: Path, run_dir: Path, overrides: list[str] = ()) -> Iterator[tuple[Client, subprocess.Popen]]:
    """``python -m src.serve`` on a free port until the block ends; then stopped (its whole process group)."""
    with running(["src.serve", f"ckpt_path={ckpt}", "log_level=warning", *overrides], run_dir) as started:
        yield started


@contextmanager
def running(command: list[str], run_dir: Path) -> Iterator[tuple[Client, subprocess.Popen]]:
    """``python -m COMMAND...`` serving on a free 127.0.0.1 port (``port=``) until the block ends; then stopped."""
    port = free_port()
    run_dir.mkdir(parents=True, exist_ok=True)
    log = (run_dir / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", *command, f"port={port}", f"hydra.run.dir={run_dir}"],
        cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    client = Client(port)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"the server exited: {(run_dir / 'server.log').read_text()[-3000:]}"
            try:
                if client.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no /health in {START_TIMEOUT_S} s: {(run_dir / 'server.log').read_text()[-3000:]}"
            time.sleep(0.5)
        yield client, process
    finally:
        try:
            os.killpg(process.pid, signal.SIGINT)  # LitServe's graceful shutdown: workers, then the HTTP servers
            process.wait(timeout=60)
        except ProcessLookupError:  # already stopped, by a test
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


# Small limits, so each refusal is quick to provoke.
LIMITS = ["max_upload_mb=1", "max_files=3", "upload_timeout_s=3", "max_batch_size=8", "batch_timeout=0.5"]


@pytest.fixture(scope="module")
def server(trained, module_tmp_path) -> Iterator[tuple[Client, subprocess.Popen]]:
    with running_server(trained, module_tmp_path / "serve", LIMITS) as started:
        yield started


def predictor_probabilities(ckpt: Path, paths: list[Path], precision: str | None = None) -> torch.Tensor:
    from src import Predictor

    predictor = Predictor.from_checkpoint(ckpt, device="cpu", precision=precision)
    return torch.stack([p.probabilities for p in predictor.predict_batch([Image.open(p) for p in paths])])


def test_predictions_equal_the_predictors_with_the_model_named(server, trained, photos):
    from src import Predictor

    client, _ = server
    assert client.request("GET", "/health") == (200, b"ok")
    info = client.get_json("/info")["model"]
    classes = info["classes"]
    assert len(classes) == CLASSES and info["topk"] == CLASSES and info["cam"] is True

    status, one = client.post(photos[0].read_bytes(), "image/png")  # raw bytes
    assert status == 200, one
    status, several = client.post_files([(p.name, p.read_bytes()) for p in photos[:3]], query="?topk=2")
    assert status == 200, several

    predictor = Predictor.from_checkpoint(trained, device="cpu")
    assert one["model"] == {"name": "resnet18", "checkpoint": str(trained), "backend": "torch",
                            "precision": predictor.precision}
    for answer, paths in ((one, photos[:1]), (several, photos[:3])):
        expected = predictor_probabilities(trained, paths)
        got = torch.tensor([p["probabilities"] for p in answer["predictions"]])
        assert (got - expected).abs().max() < 1e-5
        for prediction, probabilities in zip(answer["predictions"], expected):
            assert prediction["label"] == classes[int(probabilities.argmax())]
            assert prediction["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)
            assert [t["label"] for t in prediction["top"]] == [classes[i] for i in
                                                               probabilities.topk(len(prediction["top"])).indices]
    assert [len(p["top"]) for p in several["predictions"]] == [2, 2, 2] and len(one["predictions"][0]["top"]) == CLASSES
    assert [p["file"] for p in several["predictions"]] == [p.name for p in photos[:3]]


def test_a_photo_in_any_encoding_is_served_as_its_8_bit_version(server, photos, tmp_path):
    """Uploads are read by the reader of training, decoded once: a 16-bit PNG, a big-endian 16-bit RGB TIFF, a
    float TIFF, an EXIF-rotated PNG and a Display P3 PNG of a photo answer what their 8-bit RGB versions answer."""
    import numpy as np

    from tests.image_encodings import LOSSLESS, in_srgb, with_profile

    client, _ = server
    rgb = np.asarray(Image.open(photos[1]).convert("RGB"))
    chosen = ("16-bit gray PNG", "16-bit RGB TIFF big-endian", "32-bit float gray TIFF little-endian",
              "EXIF orientation 6 PNG")
    pairs = []
    for encoding in (e for e in LOSSLESS if e.name in chosen):
        reference = tmp_path / f"{encoding.name} 8-bit.png"
        Image.fromarray(encoding.expected(rgb)).save(reference)
        pairs.append((encoding.file(rgb, tmp_path), reference))
    p3 = with_profile(rgb, "Display P3", tmp_path / "p3.png")
    Image.fromarray(in_srgb(rgb, "Display P3")).save(tmp_path / "p3 in srgb.png")
    pairs.append((p3, tmp_path / "p3 in srgb.png"))
    for encoded, reference in pairs:
        answers = [client.post(path.read_bytes(), "application/octet-stream") for path in (encoded, reference)]
        assert [status for status, _ in answers] == [200, 200], answers
        got, expected = (torch.tensor(answer["predictions"][0]["probabilities"]) for _, answer in answers)
        assert (got - expected).abs().max() < 1e-5, encoded.name
    # the 16-bit photo clipped at 255 (what the served model saw before) is a different picture
    clipped = tmp_path / "clipped.png"
    Image.fromarray(np.minimum(rgb[..., 0].astype(np.uint32) * 257, 255).astype(np.uint8)).save(clipped)
    assert client.post(clipped.read_bytes(), "image/png")[1]["predictions"][0]["probabilities"] != \
        client.post(pairs[0][1].read_bytes(), "image/png")[1]["predictions"][0]["probabilities"]


def test_concurrent_requests_share_forward_passes(server, trained, photos):
    client, _ = server
    requests = [photos[i % len(photos)] for i in range(8)]
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda p: client.post(p.read_bytes(), "image/png"), requests))
    assert all(status == 200 for status, _ in answers), answers
    passes = {answer["batch"]["forward_pass"] for _, answer in answers}
    assert len(passes) < len(requests), "every request had its own forward pass: no batching"
    assert max(answer["batch"]["requests"] for _, answer in answers) > 1
    # each request still gets its own image's answer
    classes = client.get_json("/info")["model"]["classes"]
    for path, (_, answer) in zip(requests, answers):
        expected = predictor_probabilities(trained, [path])[0]
        assert answer["predictions"][0]["label"] == classes[int(expected.argmax())]


def test_the_grad_cam_map_comes_with_the_answer(server, photos):
    client, _ = server
    status, answer = client.post(photos[1].read_bytes(), "image/png", query="?cam=true")
    assert status == 200, answer
    cam = answer["predictions"][0]["cam"]
    assert cam["class"] == answer["predictions"][0]["label"]
    png = Image.open(io.BytesIO(base64.b64decode(cam["png"].split(",", 1)[1])))
    assert png.size == (32, 32)  # the training size: the map covers what the network sees
    # the network is left as it was (in eval mode): a single image still predicts
    assert client.post(photos[1].read_bytes(), "image/png")[0] == 200


def first_conv_as_served(image: torch.Tensor, weight: torch.Tensor, precision: str) -> torch.Tensor:
    """conv1's output channels for ``image`` as the served network computes them: under bf16 autocast
    when it serves ``bf16-mixed`` (the tiny run's ``auto`` on a CPU with native bf16), else in float32."""
    import torch.nn.functional as F

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        return F.conv2d(image.unsqueeze(0), weight, stride=2, padding=3)[0].float()


def test_the_inside_view_is_the_served_models_own_numbers(server, trained, photos):
    """?inside=true: one image's walk through the served network; its numbers equal the checkpoint's."""
    import numpy as np

    from src.optim.freezing import trainable_parameter_ids
    from src.models.loading import load_classifier, saved_stage_index

    client, _ = server
    assert client.get_json("/info")["model"]["inside"] is True
    status, answer = client.post(photos[2].read_bytes(), "image/png", query="?inside=true&kernel=3")
    assert status == 200, answer
    prediction = answer["predictions"][0]
    inside = prediction["inside"]
    expected = predictor_probabilities(trained, [photos[2]])[0]
    assert (torch.tensor(inside["probabilities"]) - expected).abs().max() < 1e-5
    assert (torch.tensor(prediction["probabilities"]) - expected).abs().max() < 1e-5  # from the same pass
    assert inside["classes"][0]["label"] == prediction["label"]

    loaded = load_classifier(trained)
    image = loaded.transform(Image.open(photos[2]).convert("RGB"))
    pixels = np.frombuffer(base64.b64decode(inside["input"]["pixels"]), dtype=np.uint8).reshape(3, 32, 32)
    assert torch.equal(torch.from_numpy(pixels.copy()), (image * torch.tensor(loaded.config.data.std).view(3, 1, 1)
                                                         + torch.tensor(loaded.config.data.mean).view(3, 1, 1))
                       .mul(255).round().to(torch.uint8))
    conv = loaded.net.backbone[0]
    channel = first_conv_as_served(image, conv.weight, client.get_json("/info")["model"]["precision"])[3]
    sent = np.frombuffer(base64.b64decode(inside["kernel"]["output"]["values"]), dtype="<f4").reshape(16, 16)
    assert inside["kernel"]["index"] == 3 and (torch.from_numpy(sent.copy()) - channel).abs().max() < 1e-4
    assert [s["shape"] for s in inside["stages"]] == [[64, 8, 8], [64, 8, 8], [128, 4, 4], [256, 2, 2], [512, 1, 1]]
    # trainable: the schedule's stage the checkpoint was saved in (the tiny run: 'head' or 'all')
    index = saved_stage_index(trained, loaded.config)
    stage = loaded.config.schedule.stages[index]
    ids = trainable_parameter_ids(loaded.net.layer_groups(), stage.freeze_to, loaded.config.schedule.train_bn)
    assert f"stage {index + 1}/2 '{stage.name}' (the stage the checkpoint was saved in)" in inside["state"]
    assert inside["stages"][-1]["trainable"] == sum(p.numel() for p in loaded.net.backbone[7].parameters()
                                                    if id(p) in ids)
    assert inside["cam_layer"] == "layer2"  # the backend's Grad-CAM stage at 32 px


def test_it_listens_on_loopback_only_and_documents_predict(server):
    client, _ = server
    listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    ours = [fields[1] for fields in listening if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == client.port]
    assert ours == [f"0100007F:{client.port:04X}"]  # 127.0.0.1, not 0.0.0.0
    schema = client.get_json("/openapi.json")
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/*" in body
    status, page = client.request("GET", "/")
    assert status == 200 and b"<title>Image classifier</title>" in page


def bad_requests(photo: bytes, tmp_path: Path) -> dict[str, tuple[tuple, int, str]]:
    """What to send (a ``Client.post`` call) -> the status and a phrase of the message."""
    big = io.BytesIO()
    Image.effect_noise((1200, 1200), 64).convert("RGB").save(big, format="PNG")  # ~1.4 MB of noise
    _bomb_png(tmp_path / "bomb.png")
    return {
        "not an image": ((b"plain text, not a picture\n", "image/png"), 415, "is not an image"),
        "truncated": ((photo[: len(photo) // 2], "image/png"), 400, "truncated or corrupt"),
        "empty body": ((b"", "image/png"), 400, "body is empty"),
        "wrong content type": ((photo, "application/json"), 415, "Content-Type 'application/json'"),
        "no content type": ((photo, None), 415, "is not accepted"),
        "over max_upload_mb": ((big.getvalue(), "image/png"), 413, "over max_upload_mb=1"),
        "decompression bomb": (((tmp_path / "bomb.png").read_bytes(), "image/png"), 413, "decompression-bomb"),
        "too many files": (multipart([(f"{i}.png", photo) for i in range(4)]), 413, "more than max_files=3"),
        "far too many files": (multipart([(f"{i}.png", photo) for i in range(9)]), 413, "more than max_files=3"),
        "no file in the form": ((b"--x--\r\n", "multipart/form-data; boundary=x"), 400, "holds no file"),
        "an empty file in the form": (multipart([("a.png", b"")]), 400, "'a.png' is empty"),
        "inside not a boolean": ((photo, "image/png", "?inside=maybe"), 400, "inside='maybe'; use inside=true"),
        "kernel past the first layer's": ((photo, "image/png", "?inside=true&kernel=64"), 400,
                                          "the first layer has 64 kernels, so use 0 to 63"),
        "kernel not a number": ((photo, "image/png", "?inside=true&kernel=x"), 400, "kernel='x'"),
        "kernel without inside": ((photo, "image/png", "?kernel=1"), 400, "add inside=true"),
        "inside with two images": ((*multipart([("a.png", photo), ("b.png", photo)]), "?inside=true"), 400,
                                   "looks into one image, and the request holds 2"),
    }


def test_every_bad_input_gets_a_4xx_naming_it_and_the_server_keeps_serving(server, photos, tmp_path):
    client, process = server
    photo = photos[0].read_bytes()
    for name, (call, status, phrase) in bad_requests(photo, tmp_path).items():
        got, answer = client.post(*call)
        assert (got, phrase in answer.get("detail", "")) == (status, True), (name, answer)
    got, answer = client.post(photo, "image/png", query="?topk=99")
    assert got == 400 and "use 1 to 4" in answer["detail"]
    assert client.post(photo, "image/png")[0] == 200
    assert process.poll() is None


def test_a_client_that_disconnects_or_stalls_mid_upload_leaves_the_server_serving(server, photos):
    client, process = server
    photo = photos[0].read_bytes()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(photo)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", client.port)) as gone:  # half the body, then gone
        gone.sendall(head + photo[: len(photo) // 2])
    with socket.create_connection(("127.0.0.1", client.port), timeout=30) as stalled:  # half, then nothing
        stalled.sendall(head + photo[: len(photo) // 2])
        started = time.monotonic()
        reply = b""
        while not reply.endswith(b"}") and (chunk := stalled.recv(4096)):  # the head, then the JSON body
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b"upload_timeout_s=3" in reply
        assert time.monotonic() - started < 20
    assert client.post(photo, "image/png")[0] == 200
    assert process.poll() is None


# slow (`make test-slow`): 26 s on a 2-core CPU without native bf16 (an ONNX export and a server); the ONNX
# export itself is checked in every run (tests/test_inference.py)
@pytest.mark.slow
def test_the_onnx_backend_serves_the_exported_model(trained, photos, tmp_path):
    require_extra("onnxruntime", "export")
    import psutil
    with running_server(trained, tmp_path, ["backend=onnx", "max_batch_size=4"]) as (client, process):
        assert client.get_json("/info")["model"]["cam"] is False
        status, answer = client.post_files([(p.name, p.read_bytes()) for p in photos])
        # SIGTERM to the main process alone (as `docker stop` sends it) stops every process of the server
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) is not None
        psutil.wait_procs(children, timeout=30)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert status == 200, answer
    assert answer["model"]["backend"] == "onnx" and answer["model"]["precision"] == "32-true"
    assert (tmp_path / "model.onnx").is_file()  # exported at start
    expected = predictor_probabilities(trained, photos, precision="32-true")
    assert (torch.tensor([p["probabilities"] for p in answer["predictions"]]) - expected).abs().max() < 1e-4


def test_bad_settings_are_named_before_anything_starts(trained, tmp_path):
    from src.serving.served_model import ServedModel
    from src.serving.server import build_server as build_for_settings

    def build_server(cfg):  # as src.serve builds it
        return build_for_settings(cfg, ServedModel.from_checkpoint(cfg.ckpt_path))

    def cfg(*overrides: str):
        composed = compose_config([f"ckpt_path={trained}", *overrides], config_name="serve")
        with open_dict(composed):
            composed.paths.output_dir = str(tmp_path)
        return composed

    with pytest.raises(ValueError, match=r"max_files=0; expected a number > 0.*upload_timeout_s=-1"):
        build_server(cfg("max_files=0", "upload_timeout_s=-1"))
    with pytest.raises(ValueError, match="topk=0"):
        build_server(cfg("topk=0"))
    with pytest.raises(FileNotFoundError, match="ckpt_path=.*missing"):
        build_server(cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}"))
    with pytest.raises(FileNotFoundError, match="backend.onnx_path"):
        build_server(cfg("backend=onnx", f"backend.onnx_path={tmp_path / 'nope.onnx'}"))
    server = build_server(cfg())  # built, not started: the page replaces LitServe's "/"
    assert [r.endpoint.__name__ for r in server.app.router.routes if getattr(r, "path", None) == "/"] == ["page"]


def mixed_uploads(photos: list[Path], tmp_path: Path) -> tuple[list[tuple], list[tuple]]:
    """Ten good requests (raw PNGs and JPEGs, multipart forms of two) and ten bad ones (each a 4xx at the default
    limits), as ``Client.post`` arguments."""
    jpeg = io.BytesIO()
    Image.open(photos[0]).convert("RGB").save(jpeg, format="JPEG")
    good = [(p.read_bytes(), "image/png") for p in photos] + [(jpeg.getvalue(), "image/jpeg")] * 3
    good += [multipart([(p.name, p.read_bytes()), ("copy.png", p.read_bytes())]) for p in photos[:3]]
    photo = photos[0].read_bytes()
    _bomb_png(tmp_path / "bomb.png")  # 100 MP: over the default max_image_pixels=50000000
    bad = [(b"plain text, not a picture\n", "image/png"), (photo[: len(photo) // 2], "image/png"),
           (b"", "image/png"), (photo, "application/json"), (photo, None),
           ((tmp_path / "bomb.png").read_bytes(), "image/png"), multipart([("a.png", b"")]),
           (b"--x--\r\n", "multipart/form-data; boundary=x"), (photo, "image/png", "?inside=maybe"),
           (photo, "image/png", "?kernel=1")]
    return good[:10], bad


def test_twenty_concurrent_uploads_good_and_bad_then_sigterm_leaves_no_process(trained, photos, tmp_path):
    """At the default settings: every good upload answered with its prediction, every bad one a 4xx with a
    message, all twenty in flight at once; then SIGTERM stops the server and every process it started."""
    import psutil

    good, bad = mixed_uploads(photos, tmp_path)
    calls = [("good", call) for call in good] + [("bad", call) for call in bad]
    calls = calls[::2] + calls[1::2]  # good and bad interleaved
    with running_server(trained, tmp_path) as (client, process):
        classes = client.get_json("/info")["model"]["classes"]
        with ThreadPoolExecutor(len(calls)) as pool:  # each request bounded by the client's 60 s timeout
            answers = list(pool.map(lambda c: client.post(*c[1]), calls))
        for (kind, call), (status, answer) in zip(calls, answers):
            if kind == "good":
                files = 2 if call[1].startswith("multipart/") else 1
                assert status == 200, answer
                assert len(answer["predictions"]) == files and answer["predictions"][0]["label"] in classes
            else:
                assert 400 <= status < 500 and answer["detail"], (call[1:], status, answer)
        assert process.poll() is None
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)  # to the main process alone, as `docker stop` sends it
        assert process.wait(timeout=60) is not None
        psutil.wait_procs(children, timeout=30)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log  # each child's traceback, before


def test_an_upload_is_decoded_once_and_the_worker_gets_its_pixels(photos, monkeypatch):
    """The upload check decodes each image (with the reader of training) and hands the worker the decoded
    pixels: no second decode in the worker, and the pixels it predicts on are the ones the check read."""
    import asyncio

    from src.data.files.image_reader import load_rgb
    from src.serving import uploads
    from src.serving.api import ClassifierAPI

    decodes = []
    monkeypatch.setattr(uploads, "load_rgb", lambda *args, **kwargs: decodes.append(1) or load_rgb(*args, **kwargs))
    forwarded = {}

    async def app(scope, receive, send):  # stands in for LitServe: keeps the JSON the guard hands on
        forwarded["body"] = (await receive())["body"]

    guard = uploads.UploadGuard(app, path="/predict", limits=uploads.UploadLimits(10, 4, 50_000_000, 30),
                                classes=CLASSES, min_size=32)
    photo = photos[0].read_bytes()
    scope = {"type": "http", "path": "/predict", "method": "POST", "query_string": b"",
             "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(photo)).encode())]}
    messages = iter([{"type": "http.request", "body": photo, "more_body": False}])

    async def receive():
        return next(messages)

    async def send(message):
        raise AssertionError(f"the guard answered instead of handing the upload on: {message}")

    asyncio.run(guard(scope, receive, send))
    request = ClassifierAPI(backend={}, served=None, model={}, topk=1).decode_request(json.loads(forwarded["body"]))
    assert len(decodes) == 1
    assert request.images[0].tobytes() == load_rgb(photos[0], min_size=32).tobytes()


def test_inspect_serve_true_serves_the_untrained_network_it_inspects(tmp_path):
    """``python -m src.inspect serve=true`` before training: src.serve's page and inside view, of the seeded network
    built from the config (its classes from the data folder); SIGTERM stops it and every process it started."""
    import numpy as np

    from src.data.files.image_reader import load_rgb
    from src.inspect import load_subject
    from src.models.loading import eval_transform_for

    import psutil

    root = copy_sample(tmp_path / "images", classes=CLASSES, per_class=4)
    overrides = ["model.backbone.name=resnet18", "model.backbone.weights=null", f"data.root={root}", "data.size=32",
                 "seed=7"]
    photo = sorted((root / sorted(p.name for p in root.iterdir())[1]).iterdir())[0]
    with running(["src.inspect", "serve=true", *overrides], tmp_path / "run") as (client, process):
        info = client.get_json("/info")["model"]
        status, page = client.request("GET", "/")
        status_inside, answer = client.post(photo.read_bytes(), "image/png", query="?inside=true&kernel=5")
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)  # to the main process alone, as `docker stop` sends it
        assert process.wait(timeout=60) is not None
        psutil.wait_procs(children, timeout=30)
        assert children and not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert status == 200 and b"Inside the model" in page
    assert info["checkpoint"] is None and info["inside"] is True and info["backend"] == "torch"
    assert info["classes"] == sorted(p.name for p in root.iterdir()) and info["size"] == 32
    assert status_inside == 200, answer
    prediction = answer["predictions"][0]
    inside = prediction["inside"]

    # The inspected network, built here as inspect builds it: the same config and seed give the same weights.
    cfg = compose_config(overrides, config_name="inspect")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "here")
    torch.manual_seed(cfg.seed)
    net = load_subject(cfg).net.eval()
    image = eval_transform_for(cfg)(load_rgb(photo))
    with torch.no_grad():
        logits = net(image.unsqueeze(0))[0]
    weights = np.frombuffer(base64.b64decode(inside["kernel"]["weights"]), dtype="<f4").reshape(64, 3, 7, 7)
    assert torch.equal(torch.from_numpy(weights.copy()), net.backbone[0].weight.detach())
    assert inside["classes"] and all(c["logit"] == pytest.approx(float(logits[c["index"]]), abs=1e-5)
                                     for c in inside["classes"])
    assert (torch.tensor(inside["probabilities"]) - logits.softmax(0)).abs().max() < 1e-6
    assert (torch.tensor(prediction["probabilities"]) - logits.softmax(0)).abs().max() < 1e-6  # the same pass
    assert "(before training: the first stage of schedule.stages)" in inside["state"]
    assert "Traceback" not in (tmp_path / "run" / "server.log").read_text()


def test_the_monitors_traceback_of_a_manager_gone_at_shutdown_is_dropped_and_its_other_errors_kept():
    import logging

    from src.serving.server import ManagerGoneAtShutdown

    def record(error: BaseException) -> logging.LogRecord:
        return logging.LogRecord("litserve.server", logging.ERROR, "server.py", 1, "Monitoring worker crashed", (),
                                 (type(error), error, None))

    quiet = ManagerGoneAtShutdown()
    assert not quiet.filter(record(ConnectionResetError(104, "Connection reset by peer")))
    assert not quiet.filter(record(EOFError()))
    assert quiet.filter(record(RuntimeError("a bug in the monitor")))
