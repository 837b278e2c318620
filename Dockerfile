# Minimal image; the production-grade one (multi-stage, non-root, healthcheck)
# is completed by the operations work.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY alembic ./alembic
RUN pip install --no-cache-dir .
EXPOSE 8000
ENTRYPOINT ["action-links"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
