import sys

from earnings_sync.cli import main

sys.exit(main())
