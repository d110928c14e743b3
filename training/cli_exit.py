"""How the training and export CLIs end on a user error: one line on stderr, exit status 2.

A missing or malformed data folder, an unregistered model or a bad flag value is the caller's to
fix, so it gets the message (which says what to do), not a traceback; 2 is argparse's status
for a bad command line, so scripts can tell "you asked for something wrong" (2) from a crash (1).
"""

from __future__ import annotations

import sys
from typing import NoReturn

USAGE_ERROR = 2


def exit_user_error(prog: str, message: object) -> NoReturn:
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)
