from tidelog.cli import main

raise SystemExit(main())
