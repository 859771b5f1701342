"""DINO self-distillation (Caron et al., 2021) with an optional iBOT masked-patch objective.

The algorithm in small pieces, none importing rclpy: ``multicrop`` (2 global + N local views
of uint8 frames), ``head`` (projection head over K prototypes), ``loss`` (teacher centring and
sharpening, cross-entropy between views), ``network`` (backbone + heads, the student/teacher
pair with the EMA update), ``masking`` (iBOT patch masks), ``collapse`` (entropy / KL monitor),
``schedules`` (cosine and warm-up values), ``frames`` (unlabelled frames from bags). The run
directory side is ``training.pretrain`` (a ``RunTrainer``).
"""
