"""Entry point of the desktop bundle (PyInstaller runs this as the app's main script)."""

import multiprocessing
import sys

from polypviewer.cli import main

if __name__ == "__main__":
    # A frozen app re-runs itself for multiprocessing children (data loader workers).
    multiprocessing.freeze_support()
    sys.exit(main())
