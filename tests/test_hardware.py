"""`auto` settings: precision, memory format and loader workers chosen from the hardware."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from src.core import hardware
from src.data.files.image_reader import load_rgb

# Not marked `precision`: unit tests of the hardware rules, each setting IFC_NATIVE_BF16 or the probe it tests.


@pytest.mark.parametrize("native, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_is_bf16_only_on_native_bf16_hardware(monkeypatch, native, expected):
    monkeypatch.setattr(hardware, "has_native_bf16", lambda device: native)
    assert hardware.resolve_precision("auto", "cpu") == expected


def test_explicit_precision_is_kept(monkeypatch):
    monkeypatch.setattr(hardware, "has_native_bf16", lambda device: True)
    assert hardware.resolve_precision("32-true", "auto") == "32-true"


@pytest.mark.parametrize("precision", ["16-mixed", "16", 16])
def test_fp16_mixed_on_the_cpu_is_recorded_as_the_bf16_mixed_lightning_runs(monkeypatch, tmp_path, precision):
    import lightning as L

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for accelerator in ("cpu", "auto"):
        resolved = hardware.resolve_precision(precision, accelerator)
        assert resolved == "bf16-mixed"
        trainer = L.Trainer(accelerator=accelerator, precision=precision, logger=False, default_root_dir=tmp_path)
        assert trainer.precision == resolved  # what Lightning runs
    assert hardware.resolve_precision("16-true", "cpu") == "16-true"  # Lightning runs it as given


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (False, False, False),  # AVX2 only (the build machine): bf16 is emulated
    (True, False, True),  # AMX tiles (Xeon Sapphire Rapids+)
    (False, True, True),  # AVX512-BF16 (Cooper Lake, Zen 4)
    (True, True, True),
])
def test_cpu_has_native_bf16_with_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.delenv("IFC_NATIVE_BF16", raising=False)  # the probe itself, not an override from the environment
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_tile": amx, "avx512_bf16": avx512_bf16})
    assert hardware.has_native_bf16("cpu") is expected


def test_public_cpu_capabilities_agree_with_torchs_private_probes():
    # has_native_bf16 reads torch's public torch.cpu.get_capabilities(); torch's own private probes
    # (which it used before) must give the same answers on this machine
    capabilities = torch.cpu.get_capabilities()
    assert bool(capabilities.get("amx_tile")) == torch.cpu._is_amx_tile_supported()
    assert bool(capabilities.get("avx512_bf16")) == torch.cpu._is_avx512_bf16_supported()


@pytest.mark.parametrize("native", [True, False])
def test_cuda_bf16_probe_does_not_count_emulation(monkeypatch, native):
    monkeypatch.delenv("IFC_NATIVE_BF16", raising=False)
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert hardware.has_native_bf16("cuda") is native
    assert asked == [False]  # a pre-Ampere GPU emulates bf16: that must not count


@pytest.mark.parametrize("value, precision, expected", [
    ("auto", "bf16-mixed", True), ("auto", "16-mixed", True), ("auto", "32-true", False),
    (True, "32-true", True), (False, "bf16-mixed", False),
])
def test_channels_last_auto_follows_precision(value, precision, expected):
    assert hardware.resolve_channels_last(value, precision) is expected


def test_bad_channels_last_names_the_key():
    with pytest.raises(ValueError, match="model.channels_last='yes'; expected true, false or auto"):
        hardware.resolve_channels_last("yes", "32-true")


def test_auto_workers_are_one_per_core_up_to_eight(monkeypatch):
    for cores, expected in [(1, 1), (2, 2), (4, 4), (64, 8)]:
        monkeypatch.setattr(hardware, "available_cores", lambda cores=cores: cores)
        assert hardware.resolve_num_workers("auto") == expected
    assert hardware.resolve_num_workers(0) == 0
    with pytest.raises(ValueError, match="data.num_workers=-1"):
        hardware.resolve_num_workers(-1)


def test_jpeg_decodes_at_reduced_scale_but_never_below_the_size(tmp_path):
    big = tmp_path / "photo.jpg"
    Image.new("RGB", (1000, 800), (200, 30, 30)).save(big, quality=90)
    assert load_rgb(big).size == (1000, 800)
    assert load_rgb(big, min_size=224).size == (500, 400)  # 1/4 would be 250x200: below 224
    assert load_rgb(big, min_size=64).size == (125, 100)  # 1/8, the smallest scale
    png = tmp_path / "photo.png"
    Image.new("RGB", (1000, 800)).save(png)
    assert load_rgb(png, min_size=64).size == (1000, 800)  # only JPEG decoders scale


@pytest.mark.parametrize("value, expected", [("0", "32-true"), ("1", "bf16-mixed")])
def test_the_environment_forces_how_auto_resolves(monkeypatch, value, expected):
    """IFC_NATIVE_BF16 makes this machine resolve `auto` as the other kind of CPU would (.ci/run uses it)."""
    monkeypatch.setenv("IFC_NATIVE_BF16", value)
    assert hardware.resolve_precision("auto", "cpu") == expected


def test_a_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("IFC_NATIVE_BF16", "yes")
    with pytest.raises(ValueError, match=r"IFC_NATIVE_BF16='yes'; expected 1 .* 0 .* or unset"):
        hardware.resolve_precision("auto", "cpu")


CPU = torch.device("cpu")


@pytest.mark.parametrize("native, recorded, override, expected", [
    (True, "bf16-mixed", None, "bf16-mixed"),  # the training precision, where the CPU has it
    (False, "bf16-mixed", None, "32-true"),  # bf16 emulated: falls back (with a warning)
    (False, "bf16-mixed", "bf16-mixed", "bf16-mixed"),  # asked for explicitly: runs as asked
    (True, "bf16-mixed", "32-true", "32-true"),
    (True, "16-mixed", None, "32-true"),  # fp16 is for GPUs
    (True, "32-true", None, "32-true"),
    (True, 32, None, "32-true"),  # Lightning's short spellings
    (True, "bf16", None, "bf16-mixed"),
    (True, None, None, "32-true"),  # a checkpoint that recorded none
])
def test_inference_runs_at_the_trained_precision_where_the_device_has_it(monkeypatch, native, recorded, override,
                                                                        expected):
    monkeypatch.setenv("IFC_NATIVE_BF16", "1" if native else "0")
    assert hardware.inference_precision(recorded, override, CPU) == expected


def test_the_fallback_warning_names_both_precisions(monkeypatch, caplog):
    monkeypatch.setenv("IFC_NATIVE_BF16", "0")
    with caplog.at_level("WARNING", logger="src.core.hardware"):
        hardware.inference_precision("bf16-mixed", None, CPU)
    [record] = caplog.records
    assert "trained at bf16-mixed" in record.message and "running at 32-true instead" in record.message


@pytest.mark.parametrize("cuda, expected", [(True, True), (False, False)])
def test_sync_batchnorm_auto_is_on_only_where_syncbatchnorm_runs(monkeypatch, caplog, cuda, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    with caplog.at_level("INFO"):
        assert hardware.resolve_sync_batchnorm("auto", "auto") is expected
    assert f"trainer.sync_batchnorm=auto: {expected}" in caplog.text  # the decision is logged once, here
    assert hardware.resolve_sync_batchnorm(False, "auto") is False


def test_sync_batchnorm_true_on_a_cpu_names_the_key_and_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"trainer.sync_batchnorm=true with trainer.accelerator=cpu.*=auto"):
        hardware.resolve_sync_batchnorm(True, "cpu")
    with pytest.raises(ValueError, match="expected auto, true or false"):
        hardware.resolve_sync_batchnorm("yes", "cpu")
