import sys

from sitekit.cli import main

sys.exit(main())
