"""The project's own warning class (the test suite turns it into errors)."""


class MixmergeWarning(UserWarning):
    """Something works but is probably not what the caller meant."""
