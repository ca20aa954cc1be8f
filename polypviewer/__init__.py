"""polypviewer: review, correct and fine-tune polyp segmentation on colonoscopy video.

Packages (imports point one way, ``ui -> engine -> (nets, io) -> core``):
``core`` numpy-only domain code, ``nets`` the networks, ``io`` sources/export/project
files, ``engine`` inference and training, ``ui`` the Qt application, ``cli`` the
headless commands.
"""

import sys
from importlib.metadata import PackageNotFoundError, version

# No usage data leaves this app. OpenVINO's converter and NNCF send anonymous telemetry to
# Google Analytics by default (openvino_telemetry, opt-out), write ~/intel, and fork a process
# from a worker thread per event (in a Qt app with live threads). Both fall back to their own
# no-op stub when the package cannot be imported; a None entry makes every import of it fail.
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]

try:  # the one version is pyproject.toml's, read from the installed metadata
    __version__ = version("polypviewer")
except PackageNotFoundError:  # a source tree that was never installed (pip install -e .)
    __version__ = "0+unknown"
