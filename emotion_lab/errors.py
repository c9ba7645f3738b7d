"""User-facing errors: bad data, options or paths. Entry points print these as one message, no traceback."""


class UserInputError(Exception):
    """Something the user gave (a file, an option, a path) is wrong; the message says what and where."""


class ModelLoadError(UserInputError, ValueError):
    """A model or checkpoint path that is missing, corrupt or not an emotion_lab model."""


class ConfigError(UserInputError, ValueError):
    """An option outside its allowed values; the message names the option and what is allowed."""


class TrainingDivergedError(UserInputError, RuntimeError):
    """Training went non-finite and stayed so: the settings (learning rates, precision) cannot train."""


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line: user errors are reported in one line."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
