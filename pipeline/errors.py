"""Errors a user can fix: the CLI prints them as one line and exits with status 2.

The message names the problem and says what to do about it; no traceback, because the
cause is in the user's input, settings or surroundings, not in tierwatch.

>>> str(UserError("baseline.json: no such file", "pass the file `baseline fit` wrote"))
'baseline.json: no such file; pass the file `baseline fit` wrote'
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix, and (optionally) what to do about it."""

    def __init__(self, problem: str, remedy: str = "") -> None:
        self.problem = problem
        self.remedy = remedy
        super().__init__(f"{problem}; {remedy}" if remedy else problem)
