import sys

from jalign.cli import main

sys.exit(main())
