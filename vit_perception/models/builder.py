"""Config -> (model, criterion, postprocessor). Each piece is built from plain values."""

from __future__ import annotations

from torch import nn

from vit_perception.models.criterion import SetCriterion
from vit_perception.models.detr import Detector, DETRHead
from vit_perception.models.matcher import HungarianMatcher
from vit_perception.models.postprocess import PostProcessor


def build_backbone(backbone: dict, input_size: tuple[int, int],
                   load_pretrained: bool = True) -> nn.Module:
    """``backbone`` is ``cfg["model"]["backbone"]``; ``input_size`` is (width, height).

    ``type: vit`` (patch_size, embed_dim, depth, num_heads, mlp_ratio, num_registers,
    layer_scale, drop_path, stem: patch | conv | cnn) or ``type: swin`` (variant t/s/b, drop_path);
    ``pretrained`` is an optional weights file path, loaded when ``load_pretrained``.
    """
    kind = backbone.get("type", "vit")
    if kind == "vit":
        from vit_perception.models.vit import ViTBackbone

        net = ViTBackbone(
            input_size=input_size, patch_size=int(backbone.get("patch_size", 16)),
            embed_dim=int(backbone.get("embed_dim", 384)), depth=int(backbone.get("depth", 12)),
            num_heads=int(backbone.get("num_heads", 6)),
            mlp_ratio=float(backbone.get("mlp_ratio", 4.0)),
            num_registers=int(backbone.get("num_registers", 0)),
            layer_scale=backbone.get("layer_scale"),
            drop_path=float(backbone.get("drop_path", 0.0)),
            stem=str(backbone.get("stem", "patch")))
    elif kind == "swin":
        from vit_perception.models.swin import SwinBackbone

        net = SwinBackbone(variant=str(backbone.get("variant", "t")),
                           drop_path=backbone.get("drop_path"))
    else:
        raise ValueError(f"unknown backbone type {kind!r} (vit or swin)")
    if load_pretrained and backbone.get("pretrained"):
        from vit_perception.models.weights import load_swin_weights, load_vit_weights

        (load_vit_weights if kind == "vit" else load_swin_weights)(net, backbone["pretrained"])
    return net


def build_head(head: dict, in_channels: int, num_classes: int) -> DETRHead:
    """``head`` is ``cfg["model"]["head"]``."""
    return DETRHead(
        in_channels=in_channels, num_classes=num_classes,
        hidden_dim=int(head.get("hidden_dim", 256)), num_queries=int(head.get("num_queries", 100)),
        enc_layers=int(head.get("enc_layers", 1)), dec_layers=int(head.get("dec_layers", 6)),
        nheads=int(head.get("nheads", 8)), ffn_dim=int(head.get("ffn_dim", 1024)),
        dropout=float(head.get("dropout", 0.0)), two_stage=bool(head.get("two_stage", True)),
        anchor_size=float(head.get("anchor_size", 0.1)))


def build(cfg: dict, *, load_pretrained: bool = True
          ) -> tuple[Detector, SetCriterion, PostProcessor]:
    """A resolved config (``config.load_config``) -> (model, criterion, postprocessor).

    ``load_pretrained=False`` skips ``model.backbone.pretrained`` (checkpoints carry weights).
    """
    classes = list(cfg.get("classes") or [])
    if not classes:
        raise ValueError("config has no classes (cfg['classes'] is empty)")
    size = (int(cfg["input"]["width"]), int(cfg["input"]["height"]))
    backbone = build_backbone(cfg["model"].get("backbone", {}), size, load_pretrained)
    head = build_head(cfg["model"].get("head", {}), backbone.out_channels, len(classes))
    loss = cfg.get("loss", {})
    matcher = HungarianMatcher(float(loss.get("cost_class", 1.0)),
                               float(loss.get("cost_bbox", 5.0)),
                               float(loss.get("cost_giou", 2.0)))
    criterion = SetCriterion(
        len(classes), matcher, loss_ce=float(loss.get("loss_ce", 1.0)),
        loss_bbox=float(loss.get("loss_bbox", 5.0)), loss_giou=float(loss.get("loss_giou", 2.0)),
        eos_coef=float(loss.get("eos_coef", 0.1)), aux_loss=bool(loss.get("aux_loss", True)))
    post = cfg.get("postprocess", {})
    postprocessor = PostProcessor(classes, float(post.get("score_threshold", 0.5)),
                                  int(post.get("max_detections", 100)))
    return Detector(backbone, head), criterion, postprocessor
