"""`python -m competitions [DOC]`: regenerate the generated tables of docs/competitions.md."""

import sys

from competitions.render import main

sys.exit(main())
