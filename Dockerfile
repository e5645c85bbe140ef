# The pipeline's Airflow image: the official base plus this project's pinned requirements.
# The Celery provider is only needed by the distributed deployment (the local stack runs `dags test`).
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt constraints.txt /opt/ecomsync/
RUN pip install --no-cache-dir -r /opt/ecomsync/requirements.txt -c /opt/ecomsync/constraints.txt \
        apache-airflow-providers-celery==3.26.0
