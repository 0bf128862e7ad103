from migweaver.cli import main

raise SystemExit(main())
