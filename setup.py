"""The package list, for setuptools; everything else is in pyproject.toml.

Sub-packages of ``polypviewer/`` are discovered, so a new one is installed without editing
anything. ``resources/`` and ``models/`` sit at the top of the repository but install as
``polypviewer.resources`` and ``polypviewer.models`` (``[tool.setuptools.package-dir]``), so
code finds them with importlib.resources wherever it is installed; discovery cannot see a
mapped folder, hence the two names added here.
"""

from setuptools import find_packages, setup

MAPPED = ["polypviewer.resources", "polypviewer.models"]  # package-dir in pyproject.toml

setup(packages=find_packages(include=["polypviewer", "polypviewer.*"]) + MAPPED)
