"""User-facing errors (defined in the runtime, which imports nothing from the rest of the package)."""

from humanliff.runtime.errors import HumanLiffError, InputFileError

__all__ = ["HumanLiffError", "InputFileError"]
