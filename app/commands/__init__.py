"""One module per `thoughtscope` subcommand; each exposes `register(subparsers)`."""
