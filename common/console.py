"""What reaches the user's terminal from the libraries fedsite drives: their own messages, not noise.

Flower, Ray, pydicom, OpenCV and the ML stack warn about their own deprecations and future changes.
Those are notes to fedsite's developers, not to a radiologist reading a log, so they are filtered
unless `fedsite --debug` is given. Flower's logger also colours its level names with raw ANSI codes
whatever its stream is; in a log file or a pipe those are garbage, so its handlers lose their colour
when they do not write to a terminal (debug or not). Nothing here imports the libraries: the filters
are installed by name, so `fedsite --help` stays fast.
"""

from __future__ import annotations

import logging
import os
import warnings

# Packages whose warnings are for fedsite's developers (module names as `warnings` sees them).
THIRD_PARTY = (
    "flwr",
    "ray",
    "pydicom",
    "cv2",
    "torch",
    "torch_geometric",
    "pytorch_tcn",
    "monai",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "sklearn",
    "grpc",
    "google",
)
# Loggers that print their own WARNING lines on the console (Flower's deprecation notices).
CHATTY_LOGGERS = ("flwr",)
# Inherited by subprocesses (Ray workers, Flower's SuperLink/SuperNode), whose warnings reach our stderr.
CHILD_WARNINGS = "ignore::DeprecationWarning,ignore::FutureWarning,ignore::UserWarning"
# Native libraries that print their own warnings from C++ (read when they load, so set before any import);
# OPENCV_FFMPEG_LOGLEVEL -8 (AV_LOG_QUIET): FFmpeg inside OpenCV prints "moov atom not found" and the like.
NATIVE_LOG_LEVELS = {"OPENCV_LOG_LEVEL": "ERROR", "OPENCV_FFMPEG_LOGLEVEL": "-8", "GRPC_VERBOSITY": "ERROR"}


class _LibraryLogFilter(logging.Filter):
    """Drop a library's records below ERROR (unless debugging) and strip colour off non-terminal handlers."""

    def __init__(self, logger: logging.Logger, debug: bool) -> None:
        super().__init__()
        self.logger = logger
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        for handler in self.logger.handlers:  # the library adds its handler at import, after us
            stream = getattr(handler, "stream", None)
            if hasattr(handler, "colored") and not _is_terminal(stream):
                handler.colored = False
        return self.debug or record.levelno >= logging.ERROR


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def configure(debug: bool) -> None:
    """Install the filters for this process and its children; idempotent (later calls replace earlier)."""
    if not debug:
        pattern = r"(" + "|".join(THIRD_PARTY) + r")(\..*)?$"
        warnings.filterwarnings("ignore", module=pattern)
        for category in (DeprecationWarning, FutureWarning):  # whoever triggers them, they are not the user's
            warnings.filterwarnings("ignore", category=category)
        os.environ.setdefault("PYTHONWARNINGS", CHILD_WARNINGS)
        for name, level in NATIVE_LOG_LEVELS.items():
            os.environ.setdefault(name, level)
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _LibraryLogFilter)]:
            logger.removeFilter(old)
        logger.addFilter(_LibraryLogFilter(logger, debug))
