"""Shared fixtures: small real image folders on disk and the real Hydra config, shrunk."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

# Under pytest-xdist (`make test`: two processes) each process gets its share of the cores for torch and
# for the commands it starts: two processes of two threads each on two cores, spinning for each other,
# made the training tests several times slower.
_TEST_PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _TEST_PROCESSES > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _TEST_PROCESSES)))

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from src.optim.fine_tune import register_resolvers

register_resolvers()  # the tests compose the configs themselves, as the entry points do before Hydra composes
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "conf"
SAMPLE = PROJECT_ROOT / "data" / "fashion-mnist-sample"
# The normalisation the data config gives (ImageNet's), for DataModules built without the config.
IMAGENET_STATS = {key: list(OmegaConf.load(CONFIG_DIR / "data" / "image_folder.yaml")[key]) for key in ("mean", "std")}


def copy_sample(dest: Path, classes: int = 3, per_class: int = 12) -> Path:
    """Copy ``per_class`` real Fashion-MNIST PNGs of the first ``classes`` classes into ``dest``."""
    for folder in sorted(p for p in SAMPLE.iterdir() if p.is_dir())[:classes]:
        (dest / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            shutil.copy(image, dest / folder.name / image.name)
    return dest


def in_ci() -> bool:
    """Whether the suite runs in CI (``CI=true``, as CI services and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require_extra(module: str, extra: str) -> ModuleType:
    """``module``, imported; where it is missing, the test skips naming the extra and its install command,
    except in CI, where every dev extra is installed (``make install``): there a missing one fails the test
    instead of letting it vanish from the run."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        from src.core.extras import install_command

        message = f"{module} is missing ({error}): the {extra} extra, {install_command(extra)} (make install adds every extra)"
        if in_ci():
            pytest.fail(f"CI=true: {message}; CI installs every dev extra, so this test must run", pytrace=False)
        pytest.skip(message, allow_module_level=True)


def require_programs(*names: str) -> list[str]:
    """The paths of the system programs ``names``; where one is missing, skip naming it, or fail in CI
    (.ci/run installs them)."""
    paths = [shutil.which(name) for name in names]
    missing = [name for name, path in zip(names, paths) if path is None]
    if missing:
        message = f"needs {', '.join(missing)} (Debian's chromium and chromium-driver; .ci/run installs them)"
        if in_ci():
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return paths


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """Three classes of twelve real 28x28 product photos."""
    return copy_sample(tmp_path / "images")


def compose_config(
    overrides: list[str] | None = None, config_name: str = "train", return_hydra_config: bool = False
) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [], return_hydra_config=return_hydra_config)


# The smallest run that still exercises every part: ResNet18 at 32 px, random weights,
# two stages (frozen body, then everything), a few batches each.
TINY_OVERRIDES = [
    "model.backbone.name=resnet18",
    "model.backbone.weights=null",
    "data.size=32",
    "data.batch_size=8",
    # Loader workers off: each worker process costs ~1 s to start, on every loader of the ~200 tiny runs.
    # Runs with workers: test_resume.py (the default num_workers=auto, persistent, killed and resumed),
    # test_scaling.py (DDP with one worker per process), test_progressive_resizing.py (two workers);
    # test_samplers.py compares auto's first batch with no workers'.
    "data.num_workers=0",
    "schedule.stages=[{name:head,epochs:1,lr:[3e-3],freeze_to:-1},{name:all,epochs:1,lr:[1e-6,1e-4],freeze_to:0}]",
    "trainer.accelerator=cpu",
    "trainer.limit_train_batches=3",
    "trainer.log_every_n_steps=1",
    # Terminal output only (no files, no state): off to keep the captured logs readable; test_resume.py
    # runs with every callback (the other subprocess runs, DDP and test-subset, drop these two too).
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
]


@pytest.fixture
def tiny_cfg(tmp_path: Path, image_root: Path) -> DictConfig:
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={image_root}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def train_tiny_run(base: Path, overrides: list[str], classes: int = 3, per_class: int = 10) -> Path:
    """Train the tiny run on ``classes`` x ``per_class`` real images copied under ``base``; its run directory."""
    from src.runs.training import train

    root = copy_sample(base / "images", classes=classes, per_class=per_class)
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={root}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(base / "run")
    train(cfg)
    return base / "run"


@contextlib.contextmanager
def conv_output_dtypes() -> Iterator[list]:
    """The dtype of every convolution's output while inside: what the forward passes really computed in."""
    from torch import nn

    seen, forward = [], nn.Conv2d.forward

    def recording(self, x):
        out = forward(self, x)
        seen.append(out.dtype)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn.Conv2d, "forward", recording)
        yield seen


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run without overrides (3 classes x 10 images, under ``images/`` beside it), trained once for
    the tests that only read it (its checkpoints, its images): its run directory. Copy what a test changes."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny-run"), [])


def _bomb_png(path: Path, side: int = 10_001) -> None:
    """A valid 1-bit PNG of ``side`` x ``side`` pixels (100 MP) that is ~15 kB on disk: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


# What make_messy_folder plants, by how the scan reports it (kind in bad_files.csv).
MESSY_UNREADABLE = {"truncated or corrupt": 1, "empty file": 1, "not an image": 1, "too large": 1,
                    "broken symlink": 1, "symlink loop": 2}
MESSY_IGNORED = {"hidden": 2, "not an image file name": 2, "symlinked folder": 1}


def make_messy_folder(dest: Path) -> Path:
    """Real Fashion-MNIST photos in class folders with spaces and non-ASCII names, mixed with every
    kind of file a scraped folder holds: good-but-odd images (16-bit PNG, CMYK JPEG, palette GIF,
    RGBA WebP, 1x1, EXIF-rotated, duplicates, a symlink to an image), bad ones (truncated JPEG,
    zero bytes, text named .jpg, a 100 MP bomb, a dangling symlink, a symlink loop), files that are
    not images (.txt, Thumbs.db, .DS_Store, ._x.jpg), a folder symlink loop and an empty class."""
    from PIL import Image

    copy_sample(dest, classes=3, per_class=12)
    names = sorted(p.name for p in dest.iterdir())
    boots, bags, coats = (dest / n for n in ("ankle boot", "sacs à main", "Mäntel 外套"))
    for old, new in zip(names, (boots, bags, coats)):
        (dest / old).rename(new)
    (dest / "empty class").mkdir()
    photo = Image.open(next(boots.glob("*.png"))).convert("L")
    rgb = photo.convert("RGB").resize((40, 30))
    # good, odd images
    Image.fromarray((__import__("numpy").asarray(photo, dtype="uint16") * 257)).save(boots / "sixteen bit.png")
    rgb.convert("CMYK").save(boots / "cmyk.jpg")
    rgb.convert("P").save(bags / "palette.gif")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(coats / "alpha.webp")
    rgb.resize((1, 1)).save(coats / "one pixel.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    rgb.save(bags / "rotated.jpg", exif=exif)
    shutil.copy(next(bags.glob("train_*.png")), bags / "duplicate.png")
    (coats / "link to a boot.png").symlink_to(next(boots.glob("train_*.png")))
    # bad files
    rgb.resize((200, 200)).save(boots / "whole.jpg")
    (boots / "truncated.jpg").write_bytes((boots / "whole.jpg").read_bytes()[:600])
    (boots / "whole.jpg").unlink()
    (bags / "zero bytes.png").write_bytes(b"")
    (bags / "notes.jpg").write_text("this is a text file with an image extension\n")
    _bomb_png(coats / "bomb.png")
    (coats / "gone.png").symlink_to(dest / "deleted.png")
    (coats / "loop a.png").symlink_to(coats / "loop b.png")
    (coats / "loop b.png").symlink_to(coats / "loop a.png")
    (coats / "again").symlink_to(coats, target_is_directory=True)
    # not images
    (boots / "readme.txt").write_text("scraped 2024\n")
    (bags / "Thumbs.db").write_bytes(b"\0" * 64)
    (bags / ".DS_Store").write_bytes(b"\0" * 64)
    (coats / "._alpha.jpg").write_bytes(b"\0" * 64)
    return dest


@pytest.fixture
def messy_root(tmp_path: Path) -> Path:
    return make_messy_folder(tmp_path / "messy")


@pytest.fixture
def started(monkeypatch) -> list[str]:
    """What a run did before it stopped: ``image <name>`` for each image file opened, ``trainer``
    when a Lightning Trainer was built (the test of "failed at start-up", without a clock)."""
    import lightning as L
    from PIL import Image

    events = []
    open_image, build_trainer = Image.open, L.Trainer.__init__

    def opened(fp, *args, **kwargs):
        events.append(f"image {Path(str(fp)).name}")
        return open_image(fp, *args, **kwargs)

    def built(self, *args, **kwargs):
        events.append("trainer")
        return build_trainer(self, *args, **kwargs)

    monkeypatch.setattr(Image, "open", opened)
    monkeypatch.setattr(L.Trainer, "__init__", built)
    return events


def headless_chromium(profile: Path):
    """Debian's Chromium, headless, driven by Selenium (the serving page's and the audit report's tests)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))


@pytest.fixture(autouse=True, scope="session")
def _scan_cache_under_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Scan caches (``paths.cache_dir``, from $XDG_CACHE_HOME) go under pytest's temporary folder, not ~/.cache;
    the runs the tests start as subprocesses inherit it."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def module_tmp_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for what one test module trains once and shares (a run, shards), removed when the module's
    tests are done unless one of them failed (kept to look at, as pytest keeps a failed test's ``tmp_path``).
    A tiny run's checkpoints take ~190 MB: kept to the end, the suite's runs took 12 GB and filled a CI
    machine's disk. Function-scoped ``tmp_path`` folders go when their test passes
    (``tmp_path_retention_policy`` in pyproject.toml)."""
    failed_before = request.session.testsfailed
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path)
