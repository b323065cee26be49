"""What a check found: one `RuleResult` per rule, collected into a `CheckReport`.

Rule failures are data, not exceptions: a rule that finds problems records the first
`MAX_PROBLEMS` of them (and how many there were in all), so a badly broken image still
gives a short, readable report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_PROBLEMS = 20

RULES = ("manifest", "bootstrap", "filesystem", "data")  # in report order


class Problems:
    """Collects problem lines, keeping the first `limit` and counting the rest."""

    def __init__(self, limit: int = MAX_PROBLEMS) -> None:
        self.limit = limit
        self.lines: list[str] = []
        self.count = 0

    def add(self, line: str) -> None:
        self.count += 1
        if len(self.lines) < self.limit:
            self.lines.append(line)

    def __bool__(self) -> bool:
        return self.count > 0

    def __len__(self) -> int:
        return self.count


@dataclass
class RuleResult:
    """One rule's verdict. A skipped rule passes (`passed=True`) and says why in `detail`."""

    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    total_problems: int = 0
    skipped: bool = False
    detail: str = ""  # what was checked (e.g. "1234 paths"), or why the rule was skipped

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else ("passed" if self.passed else "failed")

    @classmethod
    def from_problems(cls, name: str, problems: Problems, detail: str = "") -> "RuleResult":
        return cls(name, not problems, list(problems.lines), problems.count, detail=detail)

    @classmethod
    def skip(cls, name: str, reason: str) -> "RuleResult":
        return cls(name, True, skipped=True, detail=reason)

    @classmethod
    def blocked(cls, name: str, reason: str) -> "RuleResult":
        """Could not run because an earlier rule found the image unusable: a failure."""
        return cls(name, False, [reason], 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "passed": self.passed,
            "detail": self.detail,
            "problems": list(self.problems),
            "total_problems": self.total_problems,
        }

    def render(self) -> list[str]:
        """Human-readable lines: one verdict line, then the first problems indented."""
        head = f"{self.status.upper():<7} {self.name}"
        if self.detail:
            head += f": {self.detail}"
        lines = [head]
        lines.extend(f"    - {p}" for p in self.problems)
        if self.total_problems > len(self.problems):
            lines.append(f"    ... and {self.total_problems - len(self.problems)} more")
        return lines


@dataclass
class CheckReport:
    """The outcome of `check`: `ok` only when every rule passed (skipped rules count as passed)."""

    target: str
    source: str | None = None
    platform: str = ""
    rules: list[RuleResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    work_dir: str = ""

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.rules)

    def rule(self, name: str) -> RuleResult:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "target": self.target,
            "source": self.source,
            "platform": self.platform,
            "work_dir": self.work_dir,
            "rules": [r.to_json() for r in self.rules],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def render(self) -> str:
        lines: list[str] = []
        for r in self.rules:
            lines.extend(r.render())
        failed = [r.name for r in self.rules if not r.passed]
        lines.append(f"check of {self.target}: " + ("OK" if not failed else f"FAILED ({', '.join(failed)})"))
        return "\n".join(lines)
