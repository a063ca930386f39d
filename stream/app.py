"""``faust -A stream.app worker``: the worker app of ``defacto worker $DEFACTO_WORKER_ARGS``
(Faust runs the process and the web pages; ingest is the app's batch service, not a Faust agent:
:mod:`stream.worker.faust_app`)."""

from stream.cli.live import worker_app_from_env

app = worker_app_from_env()
