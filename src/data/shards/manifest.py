"""What a folder of LitData shards holds (``manifest.json``), read from a local folder or ``s3://``.

``python -m src.prepare`` writes the manifest last, so a folder with one is complete; training
(``data.format=litdata``) and evaluation read it first and refuse shards that cannot serve the
config: another format version, a ``data.size`` larger than the images were stored at, or other
classes than a checkpoint was trained on. Each refusal names what differs and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from src.core.extras import extra_problems
from src.core.problems import Problem

MANIFEST = "manifest.json"
# Bumped when the layout of the shards or of the manifest changes; older shards are refused.
FORMAT_VERSION = 1
SUBSETS = ("train", "valid", "test")
PREPARE_HINT = "python -m src.prepare data.root=FOLDER output=DIR"


def is_remote(root: str | Path) -> bool:
    """An object-store URL (``s3://bucket/prefix``) rather than a local folder."""
    return "://" in str(root)


def join(root: str | Path, *parts: str) -> str:
    """``root/part/...`` for a local folder or a URL (``os.path.join`` would not keep ``s3://``)."""
    return "/".join([str(root).rstrip("/"), *parts])


def read_bytes(root: str | Path, name: str) -> bytes:
    """The file ``name`` of the shard folder ``root``; ``s3://`` through boto3, which reads the
    endpoint and credentials of the environment (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``...), as litdata does."""
    if not is_remote(root):
        return (Path(root).expanduser() / name).read_bytes()
    scheme, _, rest = str(root).partition("://")
    if scheme != "s3":
        raise ValueError(f"data.root={str(root)!r}: shards are read from a local folder or s3://bucket/prefix, "
                         f"not {scheme}://; copy them to S3 or to a local folder")
    import boto3  # a dependency of litdata; imported here so local folders do not need it
    from botocore.exceptions import ClientError

    bucket, _, prefix = rest.partition("/")
    key = "/".join(p for p in (prefix.strip("/"), name) if p)
    try:
        return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(f"s3://{bucket}/{key} does not exist") from error
        raise


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of the shards at ``root``; a clear error where there is none or it is of another version."""
    try:
        manifest = json.loads(read_bytes(root, MANIFEST))
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"data.root={str(root)!r} has no {MANIFEST}: it is not a folder of shards written by src.prepare, or "
            f"src.prepare did not finish there. Write them with `{PREPARE_HINT}` (run it again with the same "
            "settings to finish an interrupted one), or use data.format=folder for a folder of images"
        ) from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{join(root, MANIFEST)} is not valid JSON ({error}); write the shards again with "
                         f"`{PREPARE_HINT}` into a new folder") from error
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"the shards at data.root={str(root)!r} have format_version={version!r}; this version of the project "
            f"reads format_version={FORMAT_VERSION}. Write them again with `{PREPARE_HINT}` into a new folder"
        )
    return manifest


def size_problems(manifest: dict[str, Any], root: str | Path, size: Any) -> list[Problem]:
    """``data.size`` must not exceed the side the images were stored at (their shorter side is at most
    ``max_side``): a larger size would upsample what the folder would have given in full."""
    max_side = manifest["max_side"]
    if isinstance(size, int) and size > max_side:
        return [Problem("data.size", size, f"at most {max_side}: the shards at {root} store images with the "
                        f"shorter side at most max_side={max_side}",
                        f"set data.size<={max_side}, or write the shards again with `{PREPARE_HINT} "
                        f"max_side={size}` into a new folder")]
    return []


def litdata_problems(key: str = "data.format", value: Any = "litdata",
                     alternative: str = "or use data.format=folder") -> list[Problem]:
    """Reading shards (``data.format=litdata``) or writing them (``src.prepare``, ``key="output"``) needs the
    ``litdata`` extra; ``alternative``: what else the user may do, after the install command."""
    return [Problem(p.key, p.value, p.expected, p.fix + (f", {alternative}" if alternative else ""))
            for p in extra_problems("litdata", key, value)]


def local_shards_problems(root: str | Path, size: Any) -> list[Problem]:
    """A local ``data.root`` of shards: a folder with a manifest this version reads, images stored large enough."""
    try:
        manifest = read_manifest(root)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        return [Problem("data.root", str(root), "a folder of shards written by src.prepare, or s3://bucket/prefix",
                        str(error))]
    return size_problems(manifest, root, size)


def class_differences(expected: list[str], found: list[str]) -> str:
    """In words, how ``found`` differs from ``expected`` (missing, added, or reordered classes); "" if equal."""
    if list(expected) == list(found):
        return ""
    missing = [c for c in expected if c not in found]
    added = [c for c in found if c not in expected]
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"added {', '.join(added)}"] if added else [])
    return "; ".join(parts) or f"the same names in another order ({', '.join(found)})"


def check_classes(manifest: dict[str, Any], root: str | Path, expected: list[str], expected_from: str) -> None:
    """Refuse shards whose class list is not ``expected`` (the classes of ``expected_from``, e.g. a checkpoint)."""
    differences = class_differences(expected, manifest["classes"])
    if differences:
        raise ValueError(
            f"the shards at data.root={str(root)!r} were written for other classes than {expected_from}: "
            f"{differences} (the shards have {len(manifest['classes'])}: {', '.join(manifest['classes'])}; "
            f"it has {len(expected)}: {', '.join(expected)}). Use the shards it was trained on, or write shards "
            f"of a folder with its classes (`{PREPARE_HINT}`)"
        )
