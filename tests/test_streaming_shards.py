"""LitData shards: ``src.prepare`` writes them (resumably), ``data.format=litdata`` trains and
evaluates from them, locally and from an S3-compatible server on loopback."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict
from PIL import Image

from src.core.problems import ConfigError
from src.data.files.image_reader import MAX_IMAGE_PIXELS
from src.evaluate import evaluate
from src.prepare import prepare
from src.runs.training import train
from tests.conftest import PROJECT_ROOT, TINY_OVERRIDES, compose_config, copy_sample

MAX_SIDE = 48


def prepare_cfg(root: Path, output: Path, overrides: list[str] | None = None) -> DictConfig:
    cfg = compose_config([f"data.root={root}", f"output={output}", f"max_side={MAX_SIDE}", *(overrides or [])],
                         config_name="prepare")
    with open_dict(cfg):
        cfg.paths.output_dir = str(output.parent / "prepare-run")
    return cfg


def train_cfg(run: Path, overrides: list[str]) -> DictConfig:
    cfg = compose_config([*TINY_OVERRIDES, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    return cfg


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def photo_folder(dest: Path, per_class: int = 10) -> Path:
    """Three classes of real 28x28 photos, and one large JPEG (to be stored resized) in the first class."""
    copy_sample(dest, classes=3, per_class=per_class)
    first = sorted(dest.iterdir())[0]
    photo = Image.open(next(first.glob("*.png"))).convert("RGB")
    photo.resize((160, 120)).save(first / "large.jpg", quality=90)
    return dest


@pytest.fixture(scope="module")
def shards(module_tmp_path) -> tuple[Path, Path]:
    """A tiny folder and its shards (written once for the module): ``(folder, shards)``."""
    base = module_tmp_path / "shards"
    folder = photo_folder(base / "images")
    prepare(prepare_cfg(folder, base / "shards"))
    return folder, base / "shards"


@pytest.fixture(scope="module")
def shard_run(shards, module_tmp_path) -> Path:
    """A tiny training run from the shards: its run directory."""
    run = module_tmp_path / "shard-run" / "run"
    train(train_cfg(run, ["data.format=litdata", f"data.root={shards[1]}"]))
    return run


def test_prepare_writes_every_subset_the_split_and_a_manifest(shards, tmp_path):
    folder, out = shards
    manifest = json.loads((out / "manifest.json").read_text())
    split = rows(out / "split.csv")
    assert manifest["format_version"] == 1
    assert manifest["classes"] == sorted(p.name for p in folder.iterdir())
    assert manifest["max_side"] == MAX_SIDE and manifest["seed"] == 42 and manifest["valid_pct"] == 0.2
    counts = {subset: sum(r["subset"] == subset for r in split) for subset in ("train", "valid")}
    assert manifest["subsets"] == {**counts, "test": 0} and counts["train"] + counts["valid"] == 31
    # The split is the one training from the folder makes with the same settings.
    folder_run = tmp_path / "folder-run"
    cfg = train_cfg(folder_run, [f"data.root={folder}"])
    from src.runs.builder import build_datamodule

    build_datamodule(cfg.data).setup()
    assert rows(folder_run / "split.csv") == split

    from litdata import StreamingDataset

    classes = manifest["classes"]
    for subset in ("train", "valid"):
        items = {item["path"]: item for item in StreamingDataset(str(out / subset))}
        expected = {r["path"]: r["label"] for r in split if r["subset"] == subset}
        assert {path: classes[item["label"]] for path, item in items.items()} == expected
        for path, item in items.items():
            image = Image.open(io.BytesIO(item["image"]))
            if path.endswith("large.jpg"):  # 160x120: the shorter side brought down to max_side, aspect kept
                assert (image.format, image.size) == ("JPEG", (64, MAX_SIDE))
            else:  # small PNGs are stored as they are
                assert item["image"] == (folder / path).read_bytes()
    assert any(p.endswith("large.jpg") for p in (r["path"] for r in split))
    # Stored in a seeded random order, not class by class as the split lists them: litdata shuffles
    # only within a window, so class-ordered chunks would give one-class batches.
    stored_labels = [item["label"] for item in StreamingDataset(str(out / "train"))]
    assert stored_labels != sorted(stored_labels)


def test_training_from_shards_checkpoints_the_loader_and_evaluates(shards, shard_run, tmp_path):
    _, out = shards
    metrics = json.loads((shard_run / "metrics.json").read_text())
    assert metrics["classes"] == json.loads((out / "manifest.json").read_text())["classes"]
    assert (shard_run / "split.csv").read_bytes() == (out / "split.csv").read_bytes()
    # Lightning saves the StreamingDataLoader's state (the place in the epoch) with the checkpoint.
    last = torch.load(shard_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    (loader_state,) = last["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state["num_samples_yielded"] == 3 * 8  # limit_train_batches=3 of batch_size=8
    assert loader_state["dataset"]["shuffle"] and loader_state["dataset"]["seed"] == 42
    # evaluate: the validation shards, the same error rate as training's best.
    cfg = compose_config([f"ckpt_path={shard_run / 'checkpoints' / 'best.ckpt'}"], config_name="evaluate")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "eval")
    result = evaluate(cfg)
    valid = [r for r in rows(out / "split.csv") if r["subset"] == "valid"]
    assert result["images"] == len(valid)
    assert result["error_rate"] == pytest.approx(metrics["best"]["val/error_rate"], abs=1e-6)
    predicted = rows(tmp_path / "eval" / "predictions.csv")
    assert sorted((r["path"], r["label"]) for r in predicted) == sorted((r["path"], r["label"]) for r in valid)


def test_ddp_ranks_each_stream_half_of_the_shards_and_validate_the_whole_subset(shards, tmp_path):
    """The ddp preset as written on two gloo processes, from shards: each rank reads its own half of the
    training items, and both validate (a one-chunk validation subset streamed gave one rank no batch).
    TINY_OVERRIDES' loader workers off (two processes each starting workers would double the test's time):
    shards with the default workers run in test_progressive_resizing_decodes_the_shards_at_each_stages_size."""
    _, out = shards
    run_dir = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "src.train", *TINY_OVERRIDES, "data.format=litdata",
                             f"data.root={out}", f"hydra.run.dir={run_dir}", "trainer=ddp", "trainer.devices=2"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads((out / "manifest.json").read_text())["subsets"]
    assert counts["train"] == 25 and counts["valid"] == 6
    # 12 of the 25 training items per rank: one batch of 8 per epoch (one process: three), two epochs
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 2)
    assert 0.0 <= json.loads((run_dir / "metrics.json").read_text())["final"]["val/error_rate"] <= 1.0
    assert result.stdout.count("final val/error_rate") == 1


def test_balanced_class_weights_come_from_the_counts_prepare_recorded(shards, tmp_path):
    from src.models.losses import balanced_class_weights
    from src.runs.builder import build_run

    _, out = shards
    classes = json.loads((out / "manifest.json").read_text())["classes"]
    train_rows = [r for r in rows(out / "split.csv") if r["subset"] == "train"]
    counts = [sum(r["label"] == name for r in train_rows) for name in classes]
    assert len(set(counts)) > 1  # the large JPEG makes one class larger: weights differ
    cfg = train_cfg(tmp_path / "run", ["data.format=litdata", f"data.root={out}", "model.class_weights=balanced"])
    build_run(cfg)  # resolves balanced into cfg, as config.yaml records it
    assert list(cfg.model.class_weights) == pytest.approx(balanced_class_weights(counts))


def test_a_loader_resumes_mid_epoch_from_its_state(shards):
    """The position Lightning stores: a new loader given the state yields the rest of the epoch."""
    from src.data.shards.streaming import ShardDataset, shard_loader
    from src.data.transforms.presets import EvalTransform
    from tests.conftest import IMAGENET_STATS

    def loader():
        dataset = ShardDataset(str(shards[1]), "train", EvalTransform(32, **IMAGENET_STATS), shuffle=True, seed=7)
        return shard_loader(dataset, batch_size=4, num_workers=2, pin_memory=False, drop_last=False)

    whole = [labels.tolist() for _, labels in loader()]
    first = loader()
    seen = []
    for i, (_, labels) in enumerate(first):
        seen.append(labels.tolist())
        if i == 1:
            state = first.state_dict()
            break
    resumed = loader()
    resumed.load_state_dict(state)
    rest = [labels.tolist() for _, labels in resumed]
    assert seen + rest == whole
    assert sum(map(len, whole)) == len(first.dataset)


def test_shards_refuse_a_larger_size_and_other_classes(shards, shard_run, tmp_path):
    from src.runs.config_checks import check_train_config

    _, out = shards
    with pytest.raises(ConfigError, match=rf"data.size=64: expected at most {MAX_SIDE}.*max_side=64"):
        check_train_config(train_cfg(tmp_path / "big", ["data.format=litdata", f"data.root={out}", "data.size=64"]))
    # The same shards with a class renamed (as if written again from a changed folder): resuming is refused.
    import shutil

    other = tmp_path / "other"
    shutil.copytree(out, other)
    manifest = json.loads((other / "manifest.json").read_text())
    renamed = manifest["classes"][1]
    manifest["classes"][1] = "renamed"
    (other / "manifest.json").write_text(json.dumps(manifest))
    cfg = train_cfg(tmp_path / "resume", ["data.format=litdata", f"data.root={other}",
                                          f"ckpt_path={shard_run / 'checkpoints' / 'last.ckpt'}",
                                          "schedule.stages=[{name:all,epochs:3,lr:1e-3,freeze_to:0}]"])
    with pytest.raises(ValueError, match=rf"other classes than ckpt_path=.*missing {renamed}; added renamed"):
        train(cfg)


def test_data_format_is_checked(tmp_path):
    from src.runs.config_checks import check_train_config

    with pytest.raises(ConfigError, match="data.format='shards': expected folder or litdata"):
        check_train_config(train_cfg(tmp_path, ["data.format=shards"]))
    with pytest.raises(ConfigError, match=r"data.root=.*no manifest.json.*src.prepare"):
        check_train_config(train_cfg(tmp_path, ["data.format=litdata", f"data.root={tmp_path}"]))


def test_prepare_without_litdata_names_the_extra_before_writing_anything(tmp_path, monkeypatch):
    from src.prepare import prepare

    monkeypatch.setitem(sys.modules, "litdata", None)  # hidden from the importer, as if not installed
    out = tmp_path / "shards"
    with pytest.raises(ConfigError, match=r"output=.*the litdata extra \(litdata not installed\).*pip install -e \"\.\[litdata\]\""):
        prepare(prepare_cfg(photo_folder(tmp_path / "images", per_class=2), out))
    assert not out.exists()  # no split.csv, no plan: nothing half-written


# slow (`make test-slow`): 33 s on a 2-core CPU without native bf16, where CI's whole run reached 20.5 minutes
@pytest.mark.slow
def test_prepare_finishes_after_being_killed_and_refuses_other_settings(tmp_path):
    folder = photo_folder(tmp_path / "images", per_class=40)
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "src.prepare", f"data.root={folder}", f"output={out}", f"max_side={MAX_SIDE}",
               f"hydra.run.dir={tmp_path / 'prepare-run'}"]
    log = tmp_path / "prepare.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, start_new_session=True, stdout=output,
                                   stderr=subprocess.STDOUT)
    started = out / "train" / ".checkpoints" / "config.json"  # litdata has begun the training subset
    deadline = time.monotonic() + 300
    while not started.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"src.prepare ended before it could be interrupted:\n{log.read_text()[-3000:]}"
    os.killpg(process.pid, signal.SIGKILL)  # the command and litdata's workers, mid-way
    process.wait()
    assert started.exists() and not (out / "manifest.json").exists()

    with pytest.raises(ValueError, match=rf"unfinished src.prepare written with other settings.*max_side: {MAX_SIDE} -> 64"):
        prepare(prepare_cfg(folder, out, ["max_side=64"]))
    manifest = prepare(prepare_cfg(folder, out))  # the same command again finishes it
    split = rows(out / "split.csv")
    assert manifest["subsets"]["train"] == sum(r["subset"] == "train" for r in split) > 0

    from litdata import StreamingDataset

    for subset in ("train", "valid"):
        paths = sorted(item["path"] for item in StreamingDataset(str(out / subset)))
        assert paths == sorted(r["path"] for r in split if r["subset"] == subset)


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away certificate authority and a certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, public_key, signing_key, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(hours=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    cert = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, key.public_key(),
                       ca_key, ca=False)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """moto's S3 server on 127.0.0.1 over TLS, and the environment boto3 and litdata read to reach it.

    moto's ThreadedMotoServer serves plain http; litdata downloads chunks with obstore, which refuses
    http endpoints (its allow_http option is not exposed), so this starts the same moto application
    with the same werkzeug server, plus TLS from a throw-away CA that the clients are told to trust.
    """
    import ssl
    import threading

    from moto.moto_server.threaded_moto_server import MotoRequestHandler
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    ca, cert, key = _tls_files(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True,
                         request_handler=MotoRequestHandler, ssl_context=context)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name, value in {"AWS_ENDPOINT_URL": f"https://127.0.0.1:{server.server_address[1]}",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CA_BUNDLE": str(ca), "SSL_CERT_FILE": str(ca)}.items():
        monkeypatch.setenv(name, value)
    yield server
    server.shutdown()


def test_training_streams_shards_from_an_s3_bucket(shards, s3_server, tmp_path):
    import boto3

    _, out = shards
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="datasets")
    for path in out.rglob("*"):
        if path.is_file() and ".checkpoints" not in path.parts:
            s3.upload_file(str(path), "datasets", f"photos/{path.relative_to(out).as_posix()}")
    run = tmp_path / "run"
    cache = tmp_path / "chunk-cache"
    train(train_cfg(run, ["data.format=litdata", "data.root=s3://datasets/photos", f"data.shard_cache_dir={cache}"]))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == json.loads((out / "manifest.json").read_text())["classes"]
    assert (run / "split.csv").read_bytes() == (out / "split.csv").read_bytes()
    assert any(cache.rglob("chunk-*.bin"))  # the chunks came from the bucket, through litdata's cache
    # A prefix without shards names what is missing and the fix.
    with pytest.raises(FileNotFoundError, match=r"data.root='s3://datasets/nothing' has no manifest.json.*src.prepare"):
        train(train_cfg(tmp_path / "none", ["data.format=litdata", "data.root=s3://datasets/nothing"]))


def test_multi_label_items_keep_their_labels(tmp_path):
    """A multi-label sample goes through litdata's JSON checkpoint as a list and comes back as the
    multi-hot target a folder's dataset gives."""
    from src.data.loading.dataset import ImageDataset
    from src.data.files.listing import Sample
    from src.data.shards.writer import EncodeImage, work_item
    from src.data.shards.streaming import DecodeItem
    from src.data.transforms.presets import EvalTransform

    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    sample = Sample(image, (0, 3))
    item = work_item(sample, tmp_path)
    assert item == [str(image), "a.png", [0, 3]] and json.loads(json.dumps(item)) == item
    stored = EncodeImage(max_side=MAX_SIDE, jpeg_quality=95, max_pixels=MAX_IMAGE_PIXELS)(item)
    transform = EvalTransform(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x, target = DecodeItem(transform, num_labels=5, decode_size=32)(stored)
    folder_x, folder_target = ImageDataset([sample], transform, num_labels=5, decode_size=32)[0]
    assert torch.equal(target, folder_target) and target.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert torch.equal(x, folder_x)


# slow (`make test-slow`): 55 s on a 2-core CPU without native bf16 (src.prepare, then two stages with
# loader workers), where CI's whole run reached 20.2 minutes
@pytest.mark.slow
def test_progressive_resizing_decodes_the_shards_at_each_stages_size(tmp_path):
    """A stage's size reaches the shard datasets (litdata's own transform is the decoder: a stage must not
    replace it with the image transform) and their loader workers."""
    from tests.test_progressive_resizing import resizing_cfg, shapes

    out = tmp_path / "shards"
    prepare(prepare_cfg(copy_sample(tmp_path / "images", classes=3, per_class=10), out, ["max_side=64"]))
    records = tmp_path / "steps.jsonl"
    train(resizing_cfg(out, tmp_path / "run", records, ["data.format=litdata"]))
    assert shapes(records, "train", 0) == {(4, 3, 32, 32)}
    assert shapes(records, "valid", 0) <= {(4, 3, 32, 32), (2, 3, 32, 32)}
    assert shapes(records, "train", 1) == {(6, 3, 64, 64)}
    assert shapes(records, "valid", 1) == {(6, 3, 64, 64)}


def test_prepare_reads_a_folder_of_images_not_shards(tmp_path):
    from src.prepare import prepare_problems

    problems = prepare_problems(prepare_cfg(tmp_path, tmp_path / "out", ["data.format=litdata"]))
    assert [p.key for p in problems if p.key == "data.format"] == ["data.format"]
    assert "src.prepare reads a folder of images" in str(next(p for p in problems if p.key == "data.format"))
    assert not [p for p in prepare_problems(prepare_cfg(tmp_path, tmp_path / "out")) if p.key == "data.format"]
