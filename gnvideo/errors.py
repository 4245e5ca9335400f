"""The one error type for a bad setting; imports nothing, so every layer can raise it.

A setting is checked where its value is used, and the error names the key in that place's own words
(``ConfigError("num_groups", ...)`` in the norm registry, ``ConfigError("crop_size", ...)`` in a transform). A caller
that exposes the setting under a longer name adds its part with :meth:`ConfigError.under` or :func:`config_prefix`:
the model builder puts norm options under ``norm_options.``, the LightningModule puts its settings under ``model.``,
the DataModule puts a split's transform options under ``data.<split>_``; the CLI prints the result as one line
(``gnvideo fit: error: model.norm_options.num_groups: ...``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ConfigError(ValueError):
    """A setting whose value cannot work, found before or during setup; the CLI prints it as one line.

    Attributes:
        key: the setting at fault, as the raising code calls it (``num_groups``); callers prefix it
            (``model.norm_options.num_groups``).
        message: what is wrong with it.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")

    def under(self, prefix: str) -> ConfigError:
        """The same error with ``prefix`` put before the key (``"model."``, ``"data.train_"``); same type."""
        err = type(self).__new__(type(self))
        ConfigError.__init__(err, prefix + self.key, self.message)
        return err

    def __reduce__(self):
        return _rebuild, (type(self), self.key, self.message)


def _rebuild(cls: type, key: str, message: str) -> ConfigError:
    err = cls.__new__(cls)
    ConfigError.__init__(err, key, message)
    return err


@contextmanager
def config_prefix(prefix: str) -> Iterator[None]:
    """Re-raise every :class:`ConfigError` from the block with ``prefix`` put before its key."""
    try:
        yield
    except ConfigError as err:
        raise err.under(prefix) from err


__all__ = ["ConfigError", "config_prefix"]
