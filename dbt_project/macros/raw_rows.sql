{#- The rows of a raw table (plugins/ecomsync/warehouse.py RAW_DDL: connection_id, pk, payload,
    source_updated_at, loaded_at, run_id, sync_mode, flag) with each payload read from storage ONCE.

    Postgres stores a large jsonb compressed, out of line (TOAST) or in line, and every operator that reads it
    (`payload ->> 'status'`, `payload #>> '{billing_address,email}'`) decompresses the whole value again: a
    staging view reading 30 fields of an order fetched and decompressed that order 30 times (bench at scale 0.25,
    reading stg_bigcommerce__orders whole: 9.6 million buffer reads, 13.9 s; read once: 145 thousand, 1.9 s).
    `payload #> '{}'` (the value at the empty path: the whole document, value for value) returns the decompressed
    copy, and the OFFSET 0 keeps the lateral subquery from being inlined, so it is computed once per row and the
    fields are then read from memory. A filter on connection_id, pk or loaded_at still reaches the raw table's
    primary key or scan (the lateral subquery depends on the row; it does not hide the table). -#}
{% macro raw_rows(relation) -%}
    select
        raw_row.connection_id,
        raw_row.pk,
        payload_read_once.payload,
        raw_row.source_updated_at,
        raw_row.loaded_at,
        raw_row.run_id,
        raw_row.sync_mode,
        raw_row.flag
    from {{ relation }} as raw_row
    cross join lateral (  -- noqa: ST05
        select raw_row.payload #> '{}' as payload
        offset 0
    ) as payload_read_once
{%- endmacro %}
