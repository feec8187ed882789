import sys

from medrobust.cli import main

sys.exit(main())
