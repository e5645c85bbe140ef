# The pipeline's Airflow image: the official base plus this project's requirements, every package pinned.
# requirements.txt names what the pipeline needs (apache-airflow[postgres,celery], the Celery provider, redis,
# dbt, …); constraints.txt pins the whole resolved set (celery, kombu, the providers, their dependencies),
# so the image holds exactly what CI tested. `pip check` fails the build on a broken set.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt constraints.txt /opt/ecomsync/
RUN pip install --no-cache-dir -r /opt/ecomsync/requirements.txt -c /opt/ecomsync/constraints.txt \
 && pip check
