"""BottleFit's training stages: what each stage freezes, its losses, determinism, the teacher cache."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fedsim.config import Experiment
from fedsim.data import make_dataset
from fedsim.edge.bottlefit import SplitClassifier, inject_bottleneck, teacher_stages
from fedsim.edge.resnet import small_resnet
from fedsim.edge.stages import TeacherOutputs, ghnd_loss, kd_loss, run_epoch, setup_stage
from fedsim.edge.teacher import obtain_teacher, teacher_key

EXP = Experiment.model_validate(
    {
        "name": "t",
        "seed": 5,
        "stage1": {"epochs": 1, "batch_size": 16},
        "stage2": {"epochs": 1, "batch_size": 16, "mode": "kd"},
    }
)


def tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (batch-norm statistics included), cloned."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_identical(before: dict[str, torch.Tensor], module: nn.Module) -> None:
    after = module.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(v, module.state_dict()[k]) for k, v in before.items())


@pytest.fixture(scope="module")
def setup() -> tuple[TeacherOutputs, SplitClassifier, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    teacher = small_resnet(4, 3, width=8).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics in the teacher
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    student = inject_bottleneck(teacher, "layer2", channels=2, input_size=16)
    x = torch.randn(48, 3, 16, 16)
    y = torch.randint(0, 4, (48,))
    return TeacherOutputs(teacher, x, "layer2"), student, x, y


def test_stage1_trains_encoder_decoder_and_leaves_kept_layers_bit_identical(setup) -> None:
    teacher, student, x, y = setup
    student = copy.deepcopy(student)
    kept, enc, dec, t = (
        tensors(student.kept),
        tensors(student.encoder),
        tensors(student.decoder),
        tensors(teacher.teacher),
    )
    stage = setup_stage(1, student, teacher, EXP)
    assert isinstance(stage.optimizer, torch.optim.Adam) and stage.optimizer.param_groups[0]["lr"] == 1e-3
    trained = {id(p) for g in stage.optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in [*student.encoder.parameters(), *student.decoder.parameters()]}
    stats = run_epoch(stage, x, y, seed=0, channels=2, epoch=0)
    assert stats.num_examples == 48 and stats.loss > 0
    assert_identical(kept, student.kept)  # weights and running statistics
    assert_identical(t, teacher.teacher)
    assert changed(enc, student.encoder) and changed(dec, student.decoder)


def test_stage2_trains_the_tail_and_leaves_the_encoder_bit_identical(setup) -> None:
    teacher, student, x, y = setup
    student = copy.deepcopy(student)
    enc, dec, kept = tensors(student.encoder), tensors(student.decoder), tensors(student.kept)
    stage = setup_stage(2, student, teacher, EXP)
    opt = stage.optimizer
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-3, 0.9, 5e-4)
    run_epoch(stage, x, y, seed=0, channels=2, epoch=0)
    assert_identical(enc, student.encoder)
    assert changed(dec, student.decoder) and changed(kept, student.kept)


def test_stage1_after_stage2_setup_unfreezes_what_it_trains(setup) -> None:
    teacher, student, x, y = setup
    student = copy.deepcopy(student)
    setup_stage(2, student, teacher, EXP)
    enc = tensors(student.encoder)
    run_epoch(setup_stage(1, student, teacher, EXP), x, y, seed=0, channels=2, epoch=0)
    assert changed(enc, student.encoder)


def test_ghnd_loss_sums_mse_at_every_boundary(setup) -> None:
    teacher, student, x, y = setup
    view = setup_stage(1, copy.deepcopy(student), teacher, EXP).view
    view.eval()
    idx = torch.tensor([3, 0, 7, 41])
    with torch.no_grad():
        outs = view.student.forward_stages(x[idx])
        targets = teacher_stages(teacher.teacher, x[idx], "layer2")
    assert len(outs) == 4  # decoder (layer2's place), layer3, layer4, logits
    expected = sum(nn.functional.mse_loss(s, t) for s, t in zip(outs, targets, strict=True))
    on_the_fly = TeacherOutputs(teacher.teacher, x, "layer2", budget_bytes=0)
    assert teacher.cached is not None and on_the_fly.cached is None
    for outputs in (teacher, on_the_fly):  # precomputed or not: the same loss
        loss, logits = ghnd_loss(outputs)(view, x[idx], y[idx], idx)
        assert torch.allclose(loss, expected, rtol=1e-5) and torch.equal(logits, outs[-1])


def test_kd_loss_is_half_ce_plus_half_t2_kl() -> None:
    torch.manual_seed(1)
    t_logits, s_logits = torch.randn(6, 5), torch.randn(6, 5)
    y = torch.randint(0, 5, (6,))
    idx = torch.arange(6)

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return s_logits

    class Logits:
        def __init__(self, logits: torch.Tensor) -> None:
            self.value = logits

        def logits(self, x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            return self.value[i]

    for temp in (1.0, 2.0):
        loss, _ = kd_loss(Logits(t_logits), temp)(Fixed(), t_logits, y, idx)
        p_t = torch.softmax(t_logits / temp, 1)
        kl = (p_t * (p_t.log() - torch.log_softmax(s_logits / temp, 1))).sum(1).mean()
        ce = nn.functional.cross_entropy(s_logits, y)
        assert torch.allclose(loss, 0.5 * ce + 0.5 * temp**2 * kl, atol=1e-6)
    same, _ = kd_loss(Logits(s_logits))(Fixed(), s_logits, y, idx)  # student == teacher: KL vanishes
    assert torch.allclose(same, 0.5 * nn.functional.cross_entropy(s_logits, y), atol=1e-6)


def test_epochs_are_deterministic_for_a_seed(setup) -> None:
    teacher, student, x, y = setup

    def one(seed: int) -> dict[str, torch.Tensor]:
        s = copy.deepcopy(student)
        run_epoch(setup_stage(1, s, teacher, EXP), x, y, seed=seed, channels=2, epoch=0)
        return tensors(s)

    a, b, c = one(3), one(3), one(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed: another batch order


def _tiny_data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(40, 3, 16, 16, generator=gen).numpy()
    y = (torch.arange(40) % 4).numpy()
    return make_dataset("tiny", x, y, x[:8], y[:8], ("a", "b", "c", "d"))


def test_teacher_trained_once_then_cached(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    exp = Experiment.model_validate({"name": "t", "teacher": {"width": 4, "train": {"epochs": 1}}})
    data = _tiny_data()
    epochs: list[int] = []
    first, info = obtain_teacher(exp, data, on_epoch=lambda e, s: epochs.append(e))
    assert info.source == "trained" and epochs == [0]
    assert (tmp_path / "teachers" / f"{info.key}.pt").is_file()
    second, info2 = obtain_teacher(exp, data, on_epoch=lambda e, s: epochs.append(e))
    assert info2.source == "cache" and info2.key == info.key and epochs == [0]
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # everything that determines the teacher is in the key
    for change in ({"seed": 1}, {"teacher": {"width": 4, "train": {"epochs": 2}}}, {"teacher": {"width": 8}}):
        other = Experiment.model_validate({**exp.model_dump(mode="json"), **change})
        assert teacher_key(other, data) != info.key
    retrained, _ = obtain_teacher(exp.model_copy(), data)  # cache hit: same weights again
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), retrained.parameters(), strict=True))


def test_teacher_from_a_torchvision_style_checkpoint(tmp_path) -> None:
    from fedsim.errors import UserError

    data = _tiny_data()
    source = small_resnet(4, 3, width=4)
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    exp = Experiment.model_validate({"name": "t", "teacher": {"width": 4, "path": str(path)}})
    teacher, info = obtain_teacher(exp, data)
    assert info.source == "checkpoint" and info.path == str(path) and not teacher.training
    for (k, a), b in zip(source.state_dict().items(), teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    wrong = Experiment.model_validate({"name": "t", "teacher": {"width": 8, "path": str(path)}})
    with pytest.raises(UserError, match="does not fit the model: misshapen key"):
        obtain_teacher(wrong, data)
