"""The sync status page (issue 19): what the pipeline did per store and location, read from the warehouse.

``report`` reads ``state.*``, ``sync.*`` and ``crm.excluded_records``; ``masking`` hides personal data;
``chart`` draws the 30-day chart as inline SVG; ``page`` renders the HTML; ``app`` is the FastAPI app the
Airflow plugin (``plugins/status_page_plugin.py``) mounts on the API server.
"""
