"""The backend-neutral runner interface (activate, infer named tensors, deactivate)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType

import torch

from vit_perception.runtime import INPUT_NAME, OUTPUT_NAMES


class RunnerError(RuntimeError):
    """A backend cannot be created or run; the message says which and why."""


class Runner(abc.ABC):
    """One model behind one backend.

    ``infer({"images": [B,3,H,W] float}) -> {"pred_logits": [B,N,K+1], "pred_boxes": [B,N,4],
    "features": [B,C,h,w], "embedding": [B,C], "attention": [B,heads,h,w]}``; the same names in
    every backend so outputs can be compared one to one. Use as a context manager or call
    ``activate()`` / ``deactivate()`` yourself; ``infer`` on an inactive runner activates it.
    """

    name = "runner"

    def __init__(
        self,
        input_names: Sequence[str] = (INPUT_NAME,),
        output_names: Sequence[str] = OUTPUT_NAMES,
    ) -> None:
        self.input_names: list[str] = list(input_names)
        self.output_names: list[str] = list(output_names)
        self.is_active = False

    @property
    def device(self) -> torch.device:
        """Where ``infer`` wants its inputs (and returns its outputs)."""
        return torch.device("cpu")

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float32

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def infer(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise RunnerError(f"{self.name}: missing inputs {missing}; expects {self.input_names}")
        if not self.is_active:
            self.activate()
        return self._infer(inputs)

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def _deactivate(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device}, active={self.is_active})"
