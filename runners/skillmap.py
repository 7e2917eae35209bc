"""`bt-lstm skillmap` as a script; --help lists its flags and examples."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

from bt_lstm.cli.skillmap import build_parser, main  # noqa: E402,F401 (tests call both)

if __name__ == "__main__":
    sys.exit(main())
