"""What a client may send to ``POST /predict``, checked before anything reaches the model.

LitServe batches requests in its inference worker and fails a whole batch when one request's
``decode_request`` raises, so a bad upload must never get that far: :class:`UploadGuard` (a plain
ASGI middleware in the HTTP process) reads the body with a size limit and a deadline, parses it
(one raw image, or multipart files), decodes every image and answers a 4xx JSON ``{"detail": ...}``
naming the problem. A good request goes on to LitServe as JSON holding the decoded pixels (base64), so
each upload is decoded once.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.data.files.image_reader import UNREADABLE_IMAGE_ERRORS, UnfaithfulImageError, load_rgb

log = logging.getLogger(__name__)

MULTIPART = "multipart/form-data"
RAW_TYPES = ("image/", "application/octet-stream")  # a raw body: one image
MEGABYTE = 1024 * 1024
FIELD_EXAMPLES = {"max_upload_mb": 10, "max_files": 16, "max_image_pixels": 50_000_000, "upload_timeout_s": 30}


class UploadError(Exception):
    """A request the server refuses: the HTTP status and a message naming the problem and the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UploadLimits:
    """What one request may hold: its body size, files, pixels per image, and how long its upload may take."""

    max_upload_mb: float
    max_files: int
    max_image_pixels: int
    upload_timeout_s: float

    def problems(self) -> list[str]:
        """Each setting that is not a positive number, named with the fix."""
        values = {"max_upload_mb": self.max_upload_mb, "max_files": self.max_files,
                  "max_image_pixels": self.max_image_pixels, "upload_timeout_s": self.upload_timeout_s}
        return [f"{key}={value!r}; expected a number > 0 (e.g. {key}={FIELD_EXAMPLES[key]})"
                for key, value in values.items() if isinstance(value, bool) or not isinstance(value, (int, float))
                or value <= 0]

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * MEGABYTE)


def decode_image(data: bytes, name: str, max_pixels: int, min_size: int | None = None) -> Image.Image:
    """``data`` as an RGB image, read as the data pipeline reads files (:func:`load_rgb`, one decode), or an
    UploadError: 413 for an image over ``max_pixels`` (a decompression bomb, refused before decoding), 415 for
    bytes that are no image format or an image that cannot be read faithfully, 400 for a truncated or corrupt one."""
    if not data:
        raise UploadError(400, f"{name} is empty (0 bytes); send the image file's contents")
    try:
        return load_rgb(io.BytesIO(data), max_pixels=max_pixels, min_size=min_size, limit_key="max_image_pixels")
    except Image.DecompressionBombError as error:
        raise UploadError(413, f"{name} is {error}") from None
    except UnidentifiedImageError as error:
        raise UploadError(415, f"{name} is not an image ({len(data)} bytes that PIL cannot identify: {error}); "
                               "send a JPEG, PNG, WebP, AVIF, HEIC, GIF, BMP or TIFF file") from None
    except UnfaithfulImageError as error:
        raise UploadError(415, f"{name} cannot be read as the picture it holds: {error}") from None
    except UNREADABLE_IMAGE_ERRORS as error:
        raise UploadError(400, f"{name} is a truncated or corrupt image ({type(error).__name__}: {error}); "
                               "send the whole file") from None


def pixels_payload(name: str, image: Image.Image) -> dict[str, Any]:
    """A decoded RGB image as the JSON LitServe hands its worker (:func:`image_from_payload` reads it back),
    so each upload is decoded once, in the check."""
    return {"name": name, "size": list(image.size), "rgb": base64.b64encode(image.tobytes()).decode("ascii")}


def image_from_payload(item: dict[str, Any]) -> Image.Image:
    """The RGB image of :func:`pixels_payload`."""
    return Image.frombytes("RGB", tuple(item["size"]), base64.b64decode(item["rgb"]))


async def read_body(receive: Receive, limits: UploadLimits, declared: int | None) -> bytes:
    """The whole request body, or an UploadError: 413 over ``max_upload_mb``, 408 past ``upload_timeout_s``,
    400 if the client disconnects. An oversized body is read to its end (and dropped) before the 413, so
    clients that send the whole body before reading the answer see it instead of a reset connection."""
    deadline = time.monotonic() + limits.upload_timeout_s
    chunks, size, too_large = [], 0, declared is not None and declared > limits.max_bytes
    while True:
        try:
            message = await asyncio.wait_for(receive(), timeout=max(deadline - time.monotonic(), 0.0))
        except asyncio.TimeoutError:
            raise UploadError(408, f"the upload took longer than upload_timeout_s={limits.upload_timeout_s:g} s "
                                   f"({size:,} bytes arrived); send the file again on a faster connection") from None
        if message["type"] == "http.disconnect":
            raise UploadError(400, f"the client disconnected after {size:,} bytes of the upload")
        size += len(message.get("body", b""))
        too_large = too_large or size > limits.max_bytes
        if not too_large:
            chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    if too_large:
        raise UploadError(413, f"the request body is {size / MEGABYTE:.1f} MB, over max_upload_mb="
                               f"{limits.max_upload_mb:g}; send smaller images or fewer per request")
    return b"".join(chunks)


async def uploaded_files(scope: Scope, body: bytes, limits: UploadLimits) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each image in the body: the body itself for a raw image, else each multipart file."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if not body:
        raise UploadError(400, "the request body is empty; send an image (raw bytes with Content-Type image/..., "
                               "or multipart/form-data files)")
    if content_type.startswith(RAW_TYPES):
        return [("the uploaded image", body)]
    if content_type != MULTIPART:
        raise UploadError(415, f"Content-Type {content_type or '(none)'!r} is not accepted; send multipart/form-data "
                               "files, or one image's raw bytes with Content-Type image/jpeg, image/png ... or "
                               "application/octet-stream")

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    too_many = UploadError(413, f"more than max_files={limits.max_files} files in one request; send them in "
                                "several requests")
    try:
        # the parser stops at max_files + 1 files (Starlette spools each to a temporary file)
        form = await Request(scope, replay).form(max_files=limits.max_files + 1, max_fields=1000)
    except (MultiPartException, HTTPException) as error:  # Starlette raises the latter inside an app
        message = str(getattr(error, "detail", error))
        if message.startswith("Too many files"):
            raise too_many from None
        raise UploadError(400, f"the multipart body cannot be parsed ({message}); "
                               "send files as multipart/form-data fields") from None
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise UploadError(400, "the multipart body holds no file; send the image as a file field "
                                   "(curl -F file=@photo.jpg)")
        if len(files) > limits.max_files:
            raise too_many
        return [(repr(f.filename or f"file {i + 1}"), await f.read()) for i, f in enumerate(files)]
    finally:
        await form.close()


def _flag(params: dict[str, list[str]], key: str, what: str) -> bool:
    value = params.get(key, ["false"])[-1].lower()
    if value not in ("true", "false", "1", "0"):
        raise UploadError(400, f"{key}={value!r}; use {key}=true for {what}, or {key}=false")
    return value in ("true", "1")


class UploadGuard:
    """ASGI middleware: checks each ``POST`` to ``path`` (see the module docstring) and hands LitServe
    ``{"images": [{"name", "size", "rgb" (the decoded pixels, base64)}], "topk": k, "cam": bool,
    "inside": null or {"kernel": k or null}}``.

    ``inside`` says whether the backend can answer ``?inside=true`` (the "Inside the model" view of one
    image) and ``kernels`` how many kernels its first layer has (``?kernel=`` is checked against it).
    """

    def __init__(self, app: ASGIApp, *, path: str, limits: UploadLimits, classes: int, min_size: int | None,
                 inside: bool = False, kernels: int | None = None) -> None:
        self.app = app
        self.path = path
        self.limits = limits
        self.classes = classes
        self.min_size = min_size
        self.inside = inside
        self.kernels = kernels

    def _options(self, query: bytes) -> tuple[int | None, bool, dict | None]:
        params = parse_qs(query.decode("latin-1"))
        topk = params.get("topk", [None])[-1]
        if topk is not None and not (topk.isdigit() and 1 <= int(topk) <= self.classes):
            raise UploadError(400, f"topk={topk!r}; the model has {self.classes} classes, so use 1 to {self.classes}")
        cam = _flag(params, "cam", "a Grad-CAM map of the top class")
        inside = _flag(params, "inside", 'the "Inside the model" view of the image')
        kernel = params.get("kernel", [None])[-1]
        if kernel is not None and not inside:
            raise UploadError(400, f"kernel={kernel!r} is a setting of the inside view; add inside=true")
        if inside and not self.inside:
            raise UploadError(400, "inside=true needs the torch backend (the ONNX model has no layers to look into); "
                                   "serve with backend=torch")
        if kernel is not None and self.kernels is None:
            raise UploadError(400, f"kernel={kernel!r}, but the model's body has no convolution to follow; leave "
                                   "kernel out")
        if kernel is not None and not (kernel.isdigit() and int(kernel) < self.kernels):
            raise UploadError(400, f"kernel={kernel!r}; the first layer has {self.kernels} kernels, so use 0 to "
                                   f"{self.kernels - 1}")
        return (None if topk is None else int(topk)), cam, ({"kernel": None if kernel is None else int(kernel)}
                                                             if inside else None)

    async def _payload(self, scope: Scope, receive: Receive) -> bytes:
        topk, cam, inside = self._options(scope.get("query_string", b""))
        declared = dict(scope["headers"]).get(b"content-length")
        body = await read_body(receive, self.limits, int(declared) if declared and declared.isdigit() else None)
        files = await uploaded_files(scope, body, self.limits)
        if inside and len(files) > 1:
            raise UploadError(400, f"inside=true looks into one image, and the request holds {len(files)}; send one")
        images = []
        for name, data in files:
            image = await run_in_threadpool(decode_image, data, name, self.limits.max_image_pixels, self.min_size)
            images.append(pixels_payload(name, image))
        return json.dumps({"images": images, "topk": topk, "cam": cam, "inside": inside}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            payload = await self._payload(scope, receive)
        except UploadError as error:
            log.info("refused a request (%d): %s", error.status, error.message)
            await JSONResponse({"detail": error.message}, status_code=error.status)(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            return await receive()  # after the body: wait for the client to go away, as Starlette expects

        await self.app({**scope, "headers": headers}, replay, send)
