"""What the compose test measured and what it could not run, printed at the end of every pytest run
(tests/compose/conftest.py), so a skipped service or a stand-in image is never silent."""

from __future__ import annotations


class Report:
    """Loud notices first (NOT RUN, stand-ins), then the measured figures, in the order taken."""

    def __init__(self) -> None:
        self.notices: list[str] = []
        self.figures: list[str] = []

    def loud(self, line: str) -> None:
        """Something not run or not real: printed in red at the end of the run."""
        self.notices.append(line)

    def figure(self, step: str, text: str) -> None:
        """One measured step."""
        self.figures.append(f"{step}: {text}")

    def log(self, line: str) -> None:
        """Progress of the harness (stand-in builds): kept with the figures."""
        self.figures.append(line)


REPORT = Report()
