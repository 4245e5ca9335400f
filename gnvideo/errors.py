"""Errors every layer may raise; imports nothing, so any module can use it without an import cycle."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work, found before or during setup; the CLI prints it as one line.

    Attributes:
        key: the config key at fault, as the CLI spells it (``data.train_annotation``).
        message: what is wrong with it.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")

    def __reduce__(self):
        return type(self), (self.key, self.message)


__all__ = ["ConfigError"]
