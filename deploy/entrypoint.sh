#!/bin/bash
# The platform image's commands. Configuration comes from the environment only (README,
# Settings); nothing here writes a secret anywhere.
#   web      uvicorn, WEB_CONCURRENCY workers on PORT (default)
#   worker   a Celery worker (run as many as needed)
#   beat     Celery beat: exactly one in the whole install, or every periodic task runs twice
#   migrate  apply database migrations, then exit (a one-shot job before web starts)
#   manage   any manage.py command, e.g. `manage create_org --slug acme --name Acme`
set -euo pipefail
cd /app
command="${1:-web}"
[ "$#" -gt 0 ] && shift
case "$command" in
  web)
    exec uvicorn bonito.asgi:application --host 0.0.0.0 --port "${PORT:-8000}" \
      --workers "${WEB_CONCURRENCY:-2}" --lifespan on --no-access-log --loop uvloop \
      --http gateway.dataplane.http_protocol:HeadDeadlineProtocol --timeout-graceful-shutdown "${GRACEFUL_SHUTDOWN_S:-30}" "$@"
    ;;
  worker) exec celery -A bonito worker --loglevel="${CELERY_LOG_LEVEL:-info}" "$@" ;;
  beat) exec celery -A bonito beat --loglevel="${CELERY_LOG_LEVEL:-info}" "$@" ;;
  migrate) exec python manage.py migrate --noinput "$@" ;;
  manage) exec python manage.py "$@" ;;
  *) exec "$command" "$@" ;;
esac
