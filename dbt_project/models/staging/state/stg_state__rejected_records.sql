{#- Records the extract could not land, one row per (connection_id, raw_table, record_key). The table is
    created by the first extract; a warehouse that has none yet (dbt run before any extract) reads no rows. -#}
{%- set rejected = adapter.get_relation(database=source('state', 'rejected_records').database,
                                        schema=source('state', 'rejected_records').schema,
                                        identifier=source('state', 'rejected_records').identifier) -%}
with

source as (

    {% if rejected is not none %}
    select * from {{ source('state', 'rejected_records') }}
    {% else %}
    select
        null::text as connection_id,
        null::text as raw_table,
        null::text as record_key,
        null::text as pk,
        null::text as reason,
        null::timestamptz as last_rejected_at
    where false
    {% endif %}

),

renamed as (

    select
        connection_id,
        raw_table,
        record_key,
        pk,
        reason,
        last_rejected_at

    from source

)

select * from renamed
