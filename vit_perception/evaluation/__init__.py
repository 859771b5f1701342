"""COCO box metrics, replay of bags through the predictor, and evaluation plots."""
