"""Gunicorn settings for the dashboard: ``gunicorn -c gunicorn.conf.py config.wsgi:application``.

Bind address, workers, threads and timeout come from the environment (``GUNICORN_*``, see the README's
Configuration table); the rest is fixed for the documented deployment behind a TLS-terminating proxy.
"""

import os

# The proxy forwards here; PORT is honoured as gunicorn does without a config file.
bind = [os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")]

# Threaded workers: a streamed audit export may run for minutes while the worker's main loop keeps
# beating, so the arbiter never kills a worker for a long download (a sync worker would be killed
# after `timeout`). `timeout` then only catches a worker whose main loop is stuck.
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# On a deploy or SIGTERM, requests in flight (exports included) get this long to finish.
graceful_timeout = 300
keepalive = 5

# Recycle workers now and then, so a slow leak never grows without bound.
max_requests = 2000
max_requests_jitter = 200

# Request-line and header limits (bytes, count): a bounded cost per request before Django runs.
# 8190 is gunicorn's maximum for the request line: long filter query strings fit.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# X-Forwarded-* only from the proxy (loopback by default); Django reads X-Forwarded-Proto itself
# (SECURE_PROXY_SSL_HEADER).
forwarded_allow_ips = "127.0.0.1,::1"

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
