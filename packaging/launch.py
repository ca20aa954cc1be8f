"""Entry point of the desktop bundle (PyInstaller runs this as the app's main script)."""

import sys

from polypviewer.cli import main

if __name__ == "__main__":
    sys.exit(main())
