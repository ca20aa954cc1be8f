"""polypviewer: review, correct and fine-tune polyp segmentation on colonoscopy video.

Packages (imports point one way, ``ui -> engine -> (nets, io) -> core``):
``core`` numpy-only domain code, ``nets`` the networks, ``io`` sources/export/project
files, ``engine`` inference and training, ``ui`` the Qt application, ``cli`` the
headless commands.
"""

__version__ = "0.1.0"
