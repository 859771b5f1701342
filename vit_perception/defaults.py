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
        # see models/builder.py: type vit (patch_size, embed_dim, depth, num_heads, mlp_ratio,
        # num_registers, layer_scale, drop_path, stem) or swin (variant); pretrained: weights
        # file path; stem (vit): patch (the 16x16 projection), conv (3x3 stride-2 convolutions,
        # Xiao et al. 2021) or cnn (a small ResNet-like network: a hybrid ViT)
        "backbone": {"type": "vit", "pretrained": None, "drop_path": 0.0, "stem": "patch"},
        "head": {
            "hidden_dim": 256,
            "num_queries": 100,
            "enc_layers": 1,
            "dec_layers": 6,
            "nheads": 8,
            "ffn_dim": 1024,
            "dropout": 0.0,
            "two_stage": True,  # top-N encoder proposals seed the decoder queries
            "anchor_size": 0.1,  # side of the per-cell proposal box (fraction of the input)
        },
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
    "postprocess": {
        "score_threshold": 0.5,
        "max_detections": 100,
    },
    "train": {},
}
