-- depends_on: {{ ref('int_orders_enriched') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['email', 'connection_id'],
        indexes=[{'columns': ['email', 'connection_id']}, {'columns': ['last_landed_at']}],
        on_schema_change='append_new_columns',
        pre_hook="{{ purchased_bridge_cleanup() }}"
    )
}}

with

order_lines as (

    {{ purchased_order_lines() }}

),

final as (

    select
        email,
        connection_id,
        category_name,
        min(ordered_at) as first_purchased_at,
        max(ordered_at) as last_purchased_at,
        count(distinct order_key) as order_count,
        sum(quantity) as quantity,
        max(landed_at) as last_landed_at
    from order_lines
    where category_name is not null
    group by email, connection_id, category_name

)

select * from final
