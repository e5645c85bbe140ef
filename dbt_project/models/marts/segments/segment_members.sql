{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='email',
        indexes=[{'columns': ['email']}, {'columns': ['evaluated_at']}],
        on_schema_change='append_new_columns',
        pre_hook="{{ prepare_segment_rebuild() }}",
        post_hook="{{ record_segment_catalogue() }}"
    )
}}
{#- Who is in which e-commerce segment (G1, B13), per connection and across all of them: the catalogue of
    macros/segment_catalogue.sql. Incremental (delete+insert on email, macros/segments.sql
    prepare_segment_rebuild): a scheduled build rebuilds the emails its sources changed and those the
    clock moved in or out of a within_days window since its previous build. -#}
{%- set segments = segment_catalogue() -%}
{%- set part = 'rebuild_sql' if is_incremental() else 'sql' -%}

with
{%- if is_incremental() %}
{%- for source in segments | map(attribute='from') | unique %}

-- the rows of the rebuilt emails, read once for all the segments over {{ source }}
rebuilt_{{ source }} as materialized (

    select * from {{ ref(source) }}
    where email in (select email from {{ segment_rebuild_relation() }})

),
{%- endfor %}
{%- endif %}

members as (

    {{ segments | map(attribute=part) | join('\n\n    union all\n\n    ') }}

),

final as (

    select
        email,
        connection_id,
        segment_key,
        since,
        '{{ run_started_at.isoformat() }}'::timestamptz as evaluated_at
    from members

)

select * from final
