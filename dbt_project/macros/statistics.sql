{#- Post-hook of every model (dbt_project.yml): ANALYZE a table this build created whole — a table model, or an
    incremental one on its first build or a --full-refresh — so the models built after it in the same run are
    planned on its real row counts and value frequencies. A table made by CREATE TABLE AS has no statistics until
    autovacuum gets to it (PostgreSQL 15 docs, "Updating Planner Statistics"), and a plan on the defaults can be
    quadratic: int_orders_unioned joined int_customers_unioned, estimated at 750 BigCommerce customers instead of
    50,000, by a merge join on connection_id alone with the customer id as a filter — every order compared with
    every customer of its store (584 s of a 755 s full refresh at 200,000 orders). An incremental run's few
    changed rows leave the statistics of its table about right (and autovacuum analyses a table once enough of it
    changed): it does not analyze. Views have nothing to analyze. -#}
{% macro analyze_new_table() -%}
    {%- if model.config.materialized in ('table', 'incremental') and not is_incremental() -%}
    analyze {{ this }}
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}
