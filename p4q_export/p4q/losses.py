"""P4Q's loss: cross-entropy on the labels + λ · distillation against the FP teacher.

Student logits: logit_scale · cos(adapted quantized image feature, learned-prompt text feature).
Teacher logits: logit_scale · cos(FP image feature, FP zero-shot template classifier) — the same
CLIP with quantization switched off.

Two distillation forms:

* ``official`` (default) reproduces the official P4Q code (HuixinSun/P4Q_official,
  models/dq_qadapt_coop.py): ``F.cross_entropy(t_probs, s_probs)`` with
  ``t_probs = softmax(t_logits)``, ``s_probs = softmax(s_logits)``. The teacher's *probabilities*
  are passed as logits and the student's probabilities as the soft target, i.e.
  ``-Σ_c s_probs_c · log_softmax(t_probs)_c``. Since t_probs lies in [0, 1] its log-softmax is
  nearly flat; the term mostly pushes the student's mass towards the teacher's top class, and the
  gradient flows through the *target*. No temperature.
* ``kl`` is the textbook form (a documented deviation): ``T² · KL(softmax(t/T) ‖ softmax(s/T))``.
* ``none`` drops the distillation term.

All terms are summed over the batch and divided by ``batch_size`` (the *global* batch size under
torchrun), so per-rank losses add up to the one-process mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError

DISTILL_FORMS = ("official", "kl", "none")


def distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, form: str, temperature: float = 1.0) -> torch.Tensor:
    """Per-batch *sum* of the distillation term."""
    teacher_logits = teacher_logits.detach()
    if form == "official":
        t_probs = teacher_logits.softmax(dim=-1)
        s_probs = student_logits.softmax(dim=-1)
        return F.cross_entropy(t_probs, s_probs, reduction="sum")
    if form == "kl":
        t = temperature
        return F.kl_div(
            F.log_softmax(student_logits / t, dim=-1),
            F.log_softmax(teacher_logits / t, dim=-1),
            reduction="sum",
            log_target=True,
        ) * (t * t)
    if form == "none":
        return student_logits.sum() * 0.0
    raise UserError(f"distill must be one of {', '.join(DISTILL_FORMS)}, got '{form}'")


def p4q_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    form: str = "official",
    weight: float = 1.0,
    temperature: float = 1.0,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, {"ce": ..., "distill": ...}); all normalized by `batch_size` (default: this batch)."""
    n = batch_size if batch_size is not None else len(labels)
    ce = F.cross_entropy(student_logits, labels, reduction="sum") / n
    if teacher_logits is None or form == "none" or weight == 0:
        dis = ce.detach() * 0.0
        return ce, {"ce": ce.detach(), "distill": dis}
    dis = distillation(student_logits, teacher_logits, form, temperature) / n
    return ce + weight * dis, {"ce": ce.detach(), "distill": dis.detach()}
