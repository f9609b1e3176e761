"""Knowledge distillation as an `extra_loss`: teacher -> student through the Task's own `fit`.

Hinton et al. (2015): the student matches the teacher's temperature-softened outputs, and the KL
term is scaled by T^2 so its gradients stay comparable to the hard-label loss as T changes. The
Task's own loss (whatever the vertical trains with) stays in place; `fit` adds this term through
`common.task.added_loss`, so compression never needs to know the vertical's loss.

Output kinds, decided by the logits' shape: `[N, C, ...]` with C > 1 is a softmax over C (classes),
anything else (a `[N]` or `[N, 1, ...]` map) is an independent sigmoid per element (binary scores,
heat maps, objectness), whose softened distributions are Bernoulli.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.task import ExtraLoss, first_output


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), averaged over items (softmax or Bernoulli by shape)."""
    t = temperature
    if student_logits.dim() >= 2 and student_logits.shape[1] > 1:
        log_p_student = F.log_softmax(student_logits / t, dim=1)
        p_teacher = F.softmax(teacher_logits / t, dim=1)
        kl = (p_teacher * (torch.log(p_teacher.clamp_min(1e-12)) - log_p_student)).sum(dim=1)
    else:
        s, q = student_logits / t, teacher_logits / t
        p = torch.sigmoid(q)
        # KL(Bern(p) || Bern(sigmoid(s))), written with logsigmoid for stability
        kl = p * (F.logsigmoid(q) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-q) - F.logsigmoid(-s))
    return kl.mean() * t * t


def distillation_loss(teacher: nn.Module, *, temperature: float = 4.0, weight: float = 0.5) -> ExtraLoss:
    """An `extra_loss(model, inputs, outputs)` pulling the student toward a frozen `teacher`.

    `weight` mixes the KL term with the Task's own loss (total = task loss + weight * T^2 * KL).
    """
    teacher = teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def term(model: nn.Module, inputs: Sequence[torch.Tensor], outputs: Any) -> torch.Tensor:
        student_logits = first_output(outputs)
        device = student_logits.device
        teacher.to(device)
        with torch.no_grad():
            teacher_logits = first_output(teacher(*[x.to(device) for x in inputs]))
        return weight * soft_kl(student_logits, teacher_logits.to(student_logits.dtype), temperature)

    return term


def agreement(
    student: nn.Module, teacher: nn.Module, batches: Sequence[Sequence[torch.Tensor]], t: float = 1.0
) -> float:
    """Mean KL between teacher and student on `batches` (lower is closer), for reports and tests."""
    student.eval()
    teacher.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            total += float(soft_kl(first_output(student(*batch)), first_output(teacher(*batch)), t))
            n += 1
    return total / max(n, 1)
