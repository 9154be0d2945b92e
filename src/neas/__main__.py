import sys

from neas.cli import main

sys.exit(main())
