"""The torch runner's command-line switches, shared by ``bench``, ``eval`` and ``demo``.

``--cuda-graphs`` / ``--no-cuda-graphs`` (default: on for a CUDA device, off on the CPU) and
``--compile`` (torch.compile; the first forward of each input shape compiles, tens of seconds to
minutes, cached under the engine cache's ``inductor`` folder for later runs). The node's
parameters ``cuda_graphs`` and ``compile`` mean the same.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_torch_runner_arguments(parser: argparse.ArgumentParser | Any,
                               with_compile: bool = True, with_cast: bool = False) -> None:
    """Add ``--cuda-graphs/--no-cuda-graphs``, ``--compile`` and (``with_cast``) ``--cast``."""
    parser.add_argument(
        "--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
        help="torch backend: capture and replay CUDA graphs, one per input shape and batch "
             "size (default: on for a CUDA device; off on the CPU, where it is an error)")
    if with_compile:
        parser.add_argument(
            "--compile", action="store_true",
            help="torch backend: torch.compile the model (the first frame of each input shape "
                 "compiles for tens of seconds or more; the compiled code is cached)")
    if with_cast:
        parser.add_argument(
            "--cast", choices=("autocast", "half"), default=None,
            help="torch fp16/bf16: autocast, or the whole model in that dtype (default: half "
                 "for fp16 on CUDA, else autocast)")


def torch_runner_options(args: argparse.Namespace, backend: str = "torch") -> dict[str, Any]:
    """Keyword options for ``Predictor.load`` from the parsed switches (only for torch)."""
    if backend != "torch":
        return {}
    options: dict[str, Any] = {}
    if getattr(args, "cuda_graphs", None) is not None:
        options["cuda_graphs"] = bool(args.cuda_graphs)
    if getattr(args, "compile", False):
        options["compile"] = True
    if getattr(args, "cast", None) is not None:
        options["cast"] = args.cast
    return options
