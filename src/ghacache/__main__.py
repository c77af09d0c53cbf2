import sys

from ghacache.cli.main import main

sys.exit(main())
