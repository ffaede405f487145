"""``python -m dyrelu``: the same as the ``dyrelu`` command."""

import sys

from dyrelu.cli import main

if __name__ == "__main__":
    sys.exit(main())
