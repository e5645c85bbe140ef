"""Webhooks: orders reach the CRM as they occur (issue 17).

- ``events``: what a delivery means (source, event key, store/location) and the ``raw.webhook_events`` store.
- ``signatures``: the two senders' proofs of origin (Square HMAC, BigCommerce shared-secret header).
- ``receiver``: the FastAPI app the Airflow plugin (``plugins/ecomsync_webhooks.py``) mounts on the API server.
- ``airflow_backend``: the receiver's secrets (Airflow connections) and its hand-off (an Asset event).
- ``registration``: the pipeline registers, repairs and removes the hooks on each store and on Square.
- ``microbatch``: what an event-triggered run extracts (the claimed events' stores and locations).
"""
