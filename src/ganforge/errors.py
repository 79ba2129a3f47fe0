"""The one exception type the CLI turns into a single line and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a message saying what is wrong and how to fix it."""


class DatasetMissing(UserError):
    """A torchvision data set whose files are not under data.root. `what` says what is missing and where,
    without the cure, so that a command other than `train` (eval's --data-root) can give its own."""

    def __init__(self, name: str, what: str) -> None:
        super().__init__(f"{what}; download it with --set data.download=true or point --set data.root=DIR at its "
                         "parent")
        self.name = name
        self.what = what
