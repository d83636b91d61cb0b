import sys

from earnings_sync_cli.main import main

sys.exit(main())
