"""polypviewer: review, correct and fine-tune polyp segmentation on colonoscopy video.

Packages (imports point one way, ``ui -> engine -> (nets, io) -> core``):
``core`` numpy-only domain code, ``nets`` the networks, ``io`` sources/export/project
files, ``engine`` inference and training, ``ui`` the Qt application, ``cli`` the
headless commands.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # the one version is pyproject.toml's, read from the installed metadata
    __version__ = version("polypviewer")
except PackageNotFoundError:  # a source tree that was never installed (pip install -e .)
    __version__ = "0+unknown"
