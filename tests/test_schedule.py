import pytest
import torch
from omegaconf import OmegaConf

from src.optim.one_cycle import StagedOneCycleLR, one_cycle_value
from src.optim.param_groups import layer_group_param_groups
from src.optim.stages import Stage, StageSchedule, layer_group_lrs
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
    with pytest.raises(ValueError, match=r"wrong order.*\[0\.0001, 1e-06\]"):
        layer_group_lrs([1e-4, 1e-6], 3)


@pytest.mark.parametrize("bad", [0, -1e-3, [0.0, 1e-3], [1e-3, 2e-3, 3e-3]])
def test_bad_learning_rates_are_refused(bad):
    with pytest.raises(ValueError):
        layer_group_lrs(bad, 3)


def test_empty_stage_list_is_refused_with_an_example():
    with pytest.raises(ValueError, match="schedule.stages is empty"):
        fastai_schedule([])


def test_stage_at_epoch_and_total():
    schedule = fastai_schedule([{"epochs": 4, "lr": [3e-3], "freeze_to": -1}, Stage(epochs=2, lr=[1e-6, 1e-4])])
    assert schedule.total_epochs == 6
    assert [schedule.stage_index_at_epoch(e) for e in range(6)] == [0, 0, 0, 0, 1, 1]
    assert schedule.first_epoch_of(1) == 4


def test_freeze_target_outside_the_model_is_refused():
    schedule = fastai_schedule([{"epochs": 1, "lr": 1e-3, "freeze_to": 5}])
    with pytest.raises(ValueError, match="freeze_to=5 but the model has 3 layer groups"):
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
