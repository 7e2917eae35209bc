"""``python -m bt_lstm.cli``: the same as the ``bt-lstm`` command."""
import sys

from bt_lstm.cli import main

sys.exit(main())
