import pytest
import torch
from omegaconf import OmegaConf

from src.optim.one_cycle import StagedOneCycleLR, one_cycle_value
from src.optim.param_groups import layer_group_param_groups
from src.optim.stages import Stage, StageSchedule, layer_group_lrs
from src.core.problems import ConfigError
from tests.conftest import CONFIG_DIR

# The one-cycle settings as the config writes them (fastai's fit_one_cycle defaults).
FASTAI = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "schedule" / "fastai.yaml"))
ONE_CYCLE = {key: FASTAI[key] for key in ("div_factor", "final_div_factor", "pct_start", "moms")}


def fastai_schedule(stages: list) -> StageSchedule:
    return StageSchedule(stages, **ONE_CYCLE, train_bn=FASTAI["train_bn"])


def test_slice_pair_is_geometric_over_layer_groups():
    assert layer_group_lrs([1e-6, 1e-4], 3) == pytest.approx([1e-6, 1e-5, 1e-4])


def test_single_value_slice_gives_tenth_to_the_body():
    assert layer_group_lrs([3e-3], 3) == pytest.approx([3e-4, 3e-4, 3e-3])


def test_plain_number_is_the_same_for_every_group():
    assert layer_group_lrs(1e-3, 3) == [1e-3, 1e-3, 1e-3]


def test_pair_in_the_wrong_order_says_how_to_write_it():
    with pytest.raises(ConfigError, match=r"lr=\[0\.0001, 1e-06\].*wrong order: write \[1e-06, 0\.0001\]"):
        layer_group_lrs([1e-4, 1e-6], 3)


@pytest.mark.parametrize("bad", [0, -1e-3, [0.0, 1e-3], [1e-3, 2e-3, 3e-3]])
def test_bad_learning_rates_are_refused(bad):
    with pytest.raises(ValueError):
        layer_group_lrs(bad, 3)


def test_empty_stage_list_is_refused_with_an_example():
    with pytest.raises(ConfigError, match=r"schedule.stages=\[\]: expected at least one stage; "
                                          r"schedule.stages is empty: add one, e.g."):
        fastai_schedule([])


def test_the_constructor_raises_every_problem_the_schedule_lists():
    stages = [{"epochs": 0, "lr": [1e-3, 1e-4], "freeze_to": 1.5}, {"epochs": 1, "lr": "fast"}]
    settings = dict(div_factor=0, final_div_factor=1e4, pct_start=1.0, moms=[0.9, 0.8])
    listed = StageSchedule.problems(stages, **settings)
    assert [p.key for p in listed] == ["schedule.stages[0].lr", "schedule.stages[0].epochs",
                                       "schedule.stages[0].freeze_to", "schedule.stages[1].lr", "schedule.pct_start",
                                       "schedule.div_factor", "schedule.moms"]
    with pytest.raises(ConfigError) as raised:
        StageSchedule(stages, **settings, train_bn=True)
    assert raised.value.problems == listed


def test_a_stage_with_an_unknown_key_is_a_problem_not_a_crash():
    problems = StageSchedule.problems([{"epoch": 1, "lr": 1e-3}], 25.0, 1e4, 0.3, [0.95, 0.85, 0.95])
    assert [p.key for p in problems] == ["schedule.stages[0]"] and "epoch" in problems[0].fix


def test_stage_at_epoch_and_total():
    schedule = fastai_schedule([{"epochs": 4, "lr": [3e-3], "freeze_to": -1}, Stage(epochs=2, lr=[1e-6, 1e-4])])
    assert schedule.total_epochs == 6
    assert [schedule.stage_index_at_epoch(e) for e in range(6)] == [0, 0, 0, 0, 1, 1]
    assert schedule.first_epoch_of(1) == 4


def test_freeze_target_outside_the_model_is_refused():
    schedule = fastai_schedule([{"epochs": 1, "lr": 1e-3, "freeze_to": 5}])
    with pytest.raises(ConfigError, match=r"schedule.stages\[0\].freeze_to=5: expected a layer group of the model, "
                                          r"which has 3: -2 to 2"):
        schedule.check_freeze_targets(3)


def test_one_cycle_matches_fastai_shape():
    peak, total = 1e-3, 100
    start, end = peak / 25, peak / 25 / 1e4
    assert one_cycle_value(0, total, start, peak, end, 0.3) == pytest.approx(start)
    assert one_cycle_value(30, total, start, peak, end, 0.3) == pytest.approx(peak)
    assert one_cycle_value(15, total, start, peak, end, 0.3) == pytest.approx((start + peak) / 2)
    assert one_cycle_value(100, total, start, peak, end, 0.3) == pytest.approx(end)


def _two_layer_optimizer():
    layers = [torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 2)]
    groups = layer_group_param_groups([layers[0], torch.nn.Sequential(layers[1], layers[2])], bn_weight_decay=False)
    return torch.optim.AdamW(groups, betas=(0.9, 0.99), weight_decay=0.01), groups


def test_param_groups_split_decay_and_keep_every_parameter_once():
    optimizer, groups = _two_layer_optimizer()
    assert [g["name"] for g in groups] == ["group0", "group0_bn_bias", "group1", "group1_bn_bias"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0, 0.01, 0.0]
    assert [len(g["params"]) for g in groups] == [1, 1, 1, 3]  # weight | bias | weight | bn w, bn b, bias


def test_every_batch_norm_of_torch_is_recognised_without_its_private_base():
    # BATCH_NORMS replaces torch's private _BatchNorm base: every concrete subclass torch.nn has
    # must be one of them, or (a lazy one) become one on its first forward.
    from torch.nn.modules.batchnorm import _BatchNorm

    from src.optim.param_groups import BATCH_NORMS

    subclasses = [c for c in vars(torch.nn).values() if isinstance(c, type) and issubclass(c, _BatchNorm)]
    assert len(subclasses) >= 7  # BatchNorm1d/2d/3d, their Lazy versions, SyncBatchNorm
    for cls in subclasses:
        assert issubclass(getattr(cls, "cls_to_become", None) or cls, BATCH_NORMS), cls
    lazy = torch.nn.LazyBatchNorm2d()
    lazy(torch.randn(2, 3, 4, 4))
    groups = layer_group_param_groups([lazy], bn_weight_decay=False)
    assert [len(g["params"]) for g in groups] == [0, 2]  # both BN parameters decay-free


def test_staged_scheduler_restarts_the_cycle_and_moves_beta1():
    optimizer, _ = _two_layer_optimizer()
    scheduler = StagedOneCycleLR(optimizer, stage_steps=[10, 10], stage_lrs=[[1e-3, 1e-2], [1e-5, 1e-4]],
                                 **ONE_CYCLE)
    lrs, betas = [], []
    for _ in range(20):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        betas.append(optimizer.param_groups[0]["betas"][0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx([1e-3 / 25, 1e-3 / 25, 1e-2 / 25, 1e-2 / 25])
    assert lrs[3] == pytest.approx([1e-3, 1e-3, 1e-2, 1e-2])  # warm-up is round(0.3 * 10) steps
    assert lrs[10] == pytest.approx([1e-5 / 25, 1e-5 / 25, 1e-4 / 25, 1e-4 / 25])  # second cycle starts
    assert betas[0] == pytest.approx(0.95) and betas[3] == pytest.approx(0.85)
    assert betas[10] == pytest.approx(0.95)
    # the state is one integer: a new scheduler loaded from it continues exactly
    resumed_optimizer, _ = _two_layer_optimizer()
    resumed = StagedOneCycleLR(resumed_optimizer, stage_steps=[10, 10], stage_lrs=[[1e-3, 1e-2], [1e-5, 1e-4]],
                               **ONE_CYCLE)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.get_lr() == pytest.approx(scheduler.get_lr())


def _record(optimizer, scheduler, steps: int) -> tuple[list[list[float]], list[float]]:
    """Each param group's learning rate and the first group's beta1 at each of ``steps`` optimizer steps."""
    lrs, betas = [], []
    for step in range(steps):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        betas.append(optimizer.param_groups[0]["betas"][0])
        if step < steps - 1:
            optimizer.step()
            scheduler.step()
    return lrs, betas


def test_each_stage_is_torchs_one_cycle_lr():
    # A stage of n steps warms up over round(pct_start * n) steps and would reach its end value at
    # step n, fastai's count (the next stage starts there instead). torch's OneCycleLR over T steps
    # peaks at step pct_start * T - 1 and ends at step T - 1. So a 19-step stage warming up over
    # round(0.2 * 19) = 4 steps is torch's cycle of T = 20 with pct_start = 5 / 20, less its last step.
    stage_lrs = [[1e-3, 1e-2], [1e-5, 1e-4]]
    optimizer, _ = _two_layer_optimizer()
    staged = StagedOneCycleLR(optimizer, stage_steps=[19, 19], stage_lrs=stage_lrs, div_factor=25.0,
                              final_div_factor=1e4, pct_start=0.2, moms=(0.95, 0.85, 0.95))
    lrs, betas = _record(optimizer, staged, 2 * 19 + 1)  # and one step past the end: the final value holds
    for index, peaks in enumerate(stage_lrs):
        reference_optimizer, _ = _two_layer_optimizer()
        reference = torch.optim.lr_scheduler.OneCycleLR(
            reference_optimizer, max_lr=[peaks[0], peaks[0], peaks[1], peaks[1]],  # two param groups per layer group
            total_steps=20, pct_start=0.25, anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4,
            three_phase=False, cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
        )
        expected_lrs, expected_betas = _record(reference_optimizer, reference, 20)
        stage = slice(19 * index, 19 * index + 19)
        assert lrs[stage] == [pytest.approx(row, rel=1e-9, abs=0) for row in expected_lrs[:19]], f"stage {index}"
        assert betas[stage] == pytest.approx(expected_betas[:19], rel=1e-9, abs=0), f"stage {index}"
    assert lrs[-1] == pytest.approx(expected_lrs[-1], rel=1e-9, abs=0) and betas[-1] == pytest.approx(0.95)
