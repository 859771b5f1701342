"""Defaults every model config is merged over (see ``config.load_config``)."""

DEFAULTS: dict = {
    "name": None,
    "classes": [],
    "input": {
        "width": 640,
        "height": 480,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "resize": "letterbox",
    },
    "model": {
        "backbone": {},
        "head": {},
    },
    "loss": {
        "cost_class": 1.0,
        "cost_bbox": 5.0,
        "cost_giou": 2.0,
        "loss_ce": 1.0,
        "loss_bbox": 5.0,
        "loss_giou": 2.0,
        "eos_coef": 0.1,
        "aux_loss": True,
    },
    "train": {},
}
