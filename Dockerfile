# The inforank service image: queries and ingests with vectors, no torch (add the clip extra
# with --build-arg EXTRAS=service,clip to encode texts/images inside the container).
FROM python:3.11-slim
ARG EXTRAS=service
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY indexer ./indexer
COPY retrieval ./retrieval
COPY migrations ./migrations
RUN pip install --no-cache-dir ".[${EXTRAS}]" && useradd --uid 10001 inforank
USER inforank
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["inforank", "serve", "--host", "0.0.0.0", "--port", "8000"]
