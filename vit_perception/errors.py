"""The command line's error boundary: which exceptions are the user's, their exit codes and text.

``cli.main`` passes whatever a command raises through ``describe``; the user sees one line,
``vit-perception CMD: error: MESSAGE``, and the exit code says whose move it is:

- 2: the command line itself is wrong (a bad value or flag combination, an unknown config key,
  a run folder that would be overwritten): ``UsageError``, ``ConfigError``;
- 1: a named file could not be read or written, or the run failed (corrupt checkpoint or bag,
  a backend that is not available, a full disk, ...).

The traceback is printed only with ``vit-perception --debug`` or ``VIT_PERCEPTION_DEBUG=1``.
"""

from __future__ import annotations

import os

USAGE = 2
FAILURE = 1
DEBUG_ENV = "VIT_PERCEPTION_DEBUG"


class UsageError(ValueError):
    """The arguments are wrong (exit code 2); the message names the flag or value."""


def debug_requested(flag: bool = False) -> bool:
    """``--debug`` given, or ``VIT_PERCEPTION_DEBUG`` set to anything but ``""``/``0``."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _os_message(exc: OSError) -> str:
    what = exc.strerror or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    if not names:
        return str(exc) or what
    return f"{' -> '.join(names)}: {what}"


def _known_failures() -> tuple[type[BaseException], ...]:
    """Error classes whose message is written for the user (exit 1)."""
    from vit_perception.data.bag_source import BagError
    from vit_perception.models.checkpoint import CheckpointError
    from vit_perception.models.weights import WeightsError
    from vit_perception.runtime.base import RunnerError

    classes: list[type[BaseException]] = [BagError, CheckpointError, WeightsError, RunnerError]
    try:
        from rosbags.rosbag1 import ReaderError as Reader1Error
        from rosbags.rosbag1 import WriterError as Writer1Error
        from rosbags.rosbag2 import ReaderError, WriterError

        classes += [ReaderError, WriterError, Reader1Error, Writer1Error]
    except ImportError:  # pragma: no cover - rosbags is a requirement
        pass
    return tuple(classes)


def describe(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that escaped a command."""
    from vit_perception.config import ConfigError

    if isinstance(exc, (UsageError, ConfigError)):
        return USAGE, str(exc)
    if isinstance(exc, OSError):
        return FAILURE, _os_message(exc)
    if isinstance(exc, _known_failures()) or type(exc).__module__.startswith("vit_perception."):
        return FAILURE, str(exc) or type(exc).__name__  # the package's own errors name things
    if type(exc).__name__ == "DecodeError":  # protobuf: a file that is not an ONNX model
        return FAILURE, f"not a valid ONNX/protobuf file ({exc})"
    try:
        import yaml

        if isinstance(exc, yaml.YAMLError):
            return USAGE, f"not valid YAML: {' '.join(str(exc).split())}"
    except ImportError:  # pragma: no cover - pyyaml is a requirement
        pass
    if isinstance(exc, ValueError) and str(exc):
        return FAILURE, str(exc)
    text = " ".join(str(exc).split())
    return FAILURE, (f"unexpected {type(exc).__name__}{': ' + text if text else ''} "
                     f"(run with --debug or {DEBUG_ENV}=1 for the traceback)")
