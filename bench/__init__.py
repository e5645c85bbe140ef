"""The benchmark harness (issue 8): each pipeline stage measured against its physical ceiling.

``make bench ARGS="--scale 0.05 --stages landing,dbt"``; see bench/README.md.
"""
