# syntax=docker/dockerfile:1
# Build wheels in one stage, run as a non-root user in a slim one.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.txt .
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /tmp/prometheus && chown app:app /tmp/prometheus
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/* \
    && rm -rf /wheels
COPY --chown=app:app . .
# Static files collected into the image, served by WhiteNoise from the web
# process (content-hashed names, gzip copies): no web server in front needed.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput
# Numeric, so the runtime can tell it is not root without reading /etc/passwd.
USER 10001
EXPOSE 8000
CMD ["gunicorn", "webhooks_project.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4"]
