"""Subcommand dispatch for the entry modules."""
import sys


def dispatch(commands, argv=None):
    """Run commands[argv[1]](argv[1:]) and return its result.

    The subcommand sees its own name as argv[0], so argv[1:] are its
    arguments, as sys.argv[1:] were for the shell heredoc it replaces.
    """
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or argv[1] not in commands:
        sys.exit("usage: %s {%s} ARGS..." % (argv[0], ",".join(sorted(commands))))
    return commands[argv[1]](argv[1:])


def run(commands):
    """The `if __name__ == "__main__"` body of an entry module."""
    sys.exit(dispatch(commands))
