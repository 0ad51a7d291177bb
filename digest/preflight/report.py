"""One check's verdict, and a run of them: what `digest doctor` prints and a refused send lists."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from digest.errors import DigestError

Status = Literal["ok", "warn", "fail"]

# `digest send`, `digest worker` and a schedule firing refused by a failed preflight check.
EXIT_PREFLIGHT = 6


@dataclass(frozen=True)
class Check:
    """`name` is stable (scripts match on it, e.g. `dns.spf-multiple`); `setting` is the
    variable to change, when one is; `saw` is what was found; `fix` what to do about it."""

    name: str
    status: Status
    saw: str
    fix: str = ""
    setting: str = ""

    def line(self) -> str:
        where = f"{self.setting}: " if self.setting else ""
        fix = f" Fix: {self.fix}" if self.fix and self.status != "ok" else ""
        return f"[{self.status}] {self.name}: {where}{self.saw}.{fix}"


def ok(name: str, saw: str, *, setting: str = "") -> Check:
    return Check(name, "ok", saw, setting=setting)


def warn(name: str, saw: str, fix: str, *, setting: str = "") -> Check:
    return Check(name, "warn", saw, fix, setting)


def fail(name: str, saw: str, fix: str, *, setting: str = "") -> Check:
    return Check(name, "fail", saw, fix, setting)


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @classmethod
    def of(cls, *groups: Iterable[Check]) -> Report:
        return cls(tuple(c for group in groups for c in group))

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def as_dict(self) -> dict:
        return {"ok": not self.failures, "failures": len(self.failures),
                "warnings": len(self.warnings), "checks": [asdict(c) for c in self.checks]}


class PreflightRefused(DigestError):
    """A real send refused before anything was composed or planned: every failed check, each
    naming its setting and the fix."""

    exit_code = EXIT_PREFLIGHT

    def __init__(self, failures: list[Check]) -> None:
        self.failures = failures
        super().__init__(refusal_text(failures))


def refusal_reason(failures: list[Check]) -> str:
    """The same on one line, as stored on a `blocked` week and logged by the scheduler."""
    return ("preflight refused the send: "
            + "; ".join(f"{c.setting or c.name}: {c.saw} (fix: {c.fix})" for c in failures))


def refusal_text(failures: list[Check]) -> str:
    """The reason stored on a blocked week and printed by a refused send."""
    lines = [f"- {c.setting or c.name}: {c.saw}. Fix: {c.fix}" for c in failures]
    return (f"refusing to send real mail: {len(failures)} preflight check(s) failed "
            "(`digest doctor` shows every check)\n" + "\n".join(lines))
