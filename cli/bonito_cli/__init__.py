"""The bonito command-line tool: talks to a Bonito server's REST API (/api) and /v1 only."""

__version__ = "0.1.0"
