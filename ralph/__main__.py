from ralph.cli import main

raise SystemExit(main())
