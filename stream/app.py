"""``faust -A stream.app worker``: the worker app of ``defacto worker $DEFACTO_WORKER_ARGS``."""

from stream.cli.live import worker_app_from_env

app = worker_app_from_env()
