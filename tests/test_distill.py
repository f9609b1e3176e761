"""Distillation through Task.fit: the KL term is right, and a student pulled toward its teacher gets closer."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from common.compress.distill import agreement, distillation_loss, soft_kl
from common.task import FitContext

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("shape", [(6,), (6, 1, 4, 4), (6, 5), (6, 3, 4)])
def test_soft_kl_is_zero_only_for_equal_logits(shape):
    torch.manual_seed(0)
    logits = torch.randn(*shape)
    assert float(soft_kl(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(*shape, requires_grad=True)
    kl = soft_kl(student, logits, 4.0)
    assert float(kl) > 0
    kl.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_temperature_scaling_keeps_gradients_comparable():
    """The T^2 factor: gradient size stays of the same order as T grows (Hinton et al.)."""
    torch.manual_seed(0)
    teacher = torch.randn(32, 5) * 3
    sizes = []
    for t in (2.0, 8.0):
        student = torch.zeros(32, 5, requires_grad=True)
        soft_kl(student, teacher, t).backward()
        sizes.append(float(student.grad.abs().mean()))
    assert 0.2 < sizes[1] / sizes[0] < 5


def test_student_distilled_through_task_fit_moves_toward_teacher(reference_registered, tmp_path):
    torch.manual_seed(0)
    task = reference_registered
    cfg = task.tiny_config()
    source = task.synthesize(tmp_path / "data", seed=0, scale="tiny")
    train = task.load_data(cfg, source, "train")
    teacher = task.build_model(cfg)
    task.fit(teacher, train, cfg, epochs=4)
    student_cfg = dataclasses.replace(cfg, channels=2)
    student = task.build_model(student_cfg)
    control = copy.deepcopy(student)  # same start, trained without the teacher
    batches = [(train.x[i : i + 16],) for i in range(0, 64, 16)]
    gap_before = agreement(student, teacher, batches)
    extra = distillation_loss(teacher, temperature=2.0, weight=2.0)
    losses = [
        task.fit(student, train, student_cfg, epochs=1, context=FitContext(extra_loss=extra))["loss"] for _ in range(3)
    ]
    task.fit(control, train, student_cfg, epochs=3)
    assert losses[-1] < losses[0], f"student loss did not fall: {losses}"
    gap_after = agreement(student, teacher, batches)
    assert gap_after < gap_before and gap_after < agreement(control, teacher, batches)
    assert all(not p.requires_grad for p in teacher.parameters())  # the teacher stays frozen
