"""Distillation hyper-parameters: the config's ``distill:`` section merged over these defaults.

``vit-perception distill`` trains a student detector (its ``train:`` section as for ``train``)
against a teacher checkpoint. Every key can be set with ``--set distill.KEY=VALUE``;
``--temperature`` writes ``distill.temperature``. The resolved ``RUN_DIR/config.yaml`` holds
what the run used.
"""

from __future__ import annotations

import copy

DISTILL_DEFAULTS: dict = {
    "teacher": None,  # the teacher checkpoint (--teacher; a resumed run reads it from here)
    "temperature": 2.0,  # T: softmax(logits / T) for teacher and student; KL scaled by T^2
    "teacher_threshold": 0.5,  # teacher predictions with max class prob >= this become targets
    # teacher predictions scoring in [this, teacher_threshold) are "unsure": an unmatched student
    # query overlapping one (IoU >= 0.5) is not taught "no object" (null: off), on the
    # distillation terms' frames and, with pseudo_labels, in the set loss of unlabelled frames
    "teacher_ignore_threshold": None,
    # a teacher prediction overlapping a higher-scoring one of the same class by more than this
    # IoU is a duplicate and no target (class-wise NMS; an under-trained DETR repeats objects,
    # and a student taught the repeats repeats them too); null: off
    "teacher_nms_iou": None,
    # loss weights (each term is logged separately under its own name)
    "loss_gt": 1.0,  # the ordinary set loss (model config's loss: section) on labelled frames
    "loss_kd_ce": 1.0,  # T^2 * KL(teacher || student) on queries matched to teacher targets
    # true: a matched query's target is the teacher's distribution over the classes alone (its
    # "no object" probability dropped and the rest renormalised): matched means "an object"
    "kd_object_targets": False,
    # true: a matched query learns the teacher's best class by cross-entropy (hard pseudo-labels,
    # the set criterion's class loss) instead of the softened KL; temperature is then unused
    "kd_hard_targets": False,
    "loss_kd_noobj": 1.0,  # cross-entropy to "no object" of the unmatched student queries
    "kd_noobj_coef": 0.1,  # per-query weight of unmatched vs matched queries (DETR's eos_coef)
    "loss_kd_bbox": 5.0,  # L1 between matched student boxes and teacher boxes
    "loss_kd_giou": 2.0,  # 1 - GIoU between the same pairs
    "loss_feat_cos": 1.0,  # 1 - cosine between translated student and teacher patch features
    "loss_feat_l1": 1.0,  # smooth-L1 between the same (teacher features standardised per cell)
    "kd_aux": True,  # distil every decoder layer's predictions (aux_outputs), not only the last
    "translator": {
        "hidden_dim": 256,  # 1x1 conv student channels -> hidden, GELU, 3x3 conv -> teacher's
        "kernel_size": 3,
    },
    "teacher_amp": "auto",  # auto (bf16 on CUDA where supported, fp16 other CUDA; off on CPU)
    #                         | bf16 (also on CPU) | fp16 (CUDA) | off
    "kd_labelled": True,  # false: detection distillation on unlabelled frames only (frames
    #                       with labels learn from their ground truth alone)
    # true: the set loss and the detection-distillation terms are each weighted by the share of
    # the batch's frames they cover, so every frame counts the same (false: each part is a mean
    # over its own frames, and with kd_labelled=false the few labelled frames of a batch weigh
    # as much as all its unlabelled ones)
    "weight_by_frames": False,
    # true: an unlabelled frame's targets are the teacher's confident detections (boxes and best
    # class), trained with the ordinary set loss together with the labelled frames, as `train`
    # on a bag the teacher labelled; the detection-distillation terms then leave those frames
    "pseudo_labels": False,
    "teacher_cache": False,  # true: the teacher's detections are computed once per frame before
    #   training and moved with each augmentation (teacher_cache.py), its feature maps too: a
    #   step costs what a plain step costs (plus the translator), for targets that skip the
    #   colour jitter
    "unlabelled_repeat": 1,  # how many times each unlabelled frame is sampled per epoch
}


def distill_options(cfg: dict) -> dict:
    """``cfg["distill"]`` merged over ``DISTILL_DEFAULTS`` (nested ``translator`` merged too)."""
    from vit_perception.config import deep_merge

    return deep_merge(copy.deepcopy(DISTILL_DEFAULTS), cfg.get("distill") or {})
