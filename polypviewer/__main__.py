from polypviewer.cli import main

raise SystemExit(main())
