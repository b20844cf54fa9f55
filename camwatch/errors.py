"""The small exception hierarchy of camwatch.

Every message says where (file, YAML path or row and column), what was expected and what was
found. Camera-side failures are *not* exceptions: probes return a :class:`ProbeResult` with a
reason instead.
"""

from __future__ import annotations

from dataclasses import dataclass


class CamwatchError(Exception):
    """Base class of every error camwatch raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, located precisely.

    ``where`` is a file name, ``path`` a YAML path such as ``$.probing.timeout`` or a row and
    column such as ``row 57, column 设备编码``.
    """

    where: str
    path: str
    message: str

    def __str__(self) -> str:
        if self.path:
            return f"{self.where}: {self.path}: {self.message}"
        return f"{self.where}: {self.message}"


class InputError(CamwatchError):
    """Bad input (config, inventory, exemptions), with every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(InputError):
    """The configuration file is invalid."""


class InventoryError(InputError):
    """The inventory (台账) has rows that cannot be used."""


class StoreError(CamwatchError):
    """The state store cannot be opened, migrated or written."""


def short_error(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short text for a log field or a health problem."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
