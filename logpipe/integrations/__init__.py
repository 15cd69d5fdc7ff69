"""Servers that configure logging themselves, made to write logpipe records: one call each.

Each lives in its own module, imported only when used (``import logpipe`` loads none of them, nor
the servers): :mod:`~logpipe.integrations.asgi` (an access-log middleware for uvicorn or any ASGI
server), :mod:`~logpipe.integrations.gunicorn` (a ``--logger-class``),
:mod:`~logpipe.integrations.celery` (per-task bindings, the worker's root logger left to logpipe).
"""
