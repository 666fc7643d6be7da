# skyphot: the API (`skyphot serve`) and the job worker (`skyphot worker`) in one image.
# Build: docker build -t skyphot .      Run the distributed setup: docker compose up

# --- build: a virtualenv with skyphot and its service dependencies ---------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml ./
COPY app ./app
# editable, so the package stays at /app/app beside migrations/ (found relative to it)
RUN pip install --upgrade pip && pip install -e ".[service]"

# --- runtime: the virtualenv and the sources, run as an unprivileged user --------------------
FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SKYPHOT_STORAGE_URL=/data/storage \
    SKYPHOT_DATABASE_URL=sqlite:////data/skyphot.sqlite3
RUN groupadd --system --gid 10001 skyphot \
    && useradd --system --uid 10001 --gid skyphot --home-dir /app --shell /usr/sbin/nologin skyphot \
    && mkdir -p /data/storage && chown -R skyphot:skyphot /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /app /app
COPY migrations ./migrations
COPY alembic.ini ./
USER skyphot
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["skyphot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
