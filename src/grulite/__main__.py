"""Command line: python -m grulite (full CLI in _cli)."""
import sys


def main(argv=None) -> int:
    from grulite._cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
