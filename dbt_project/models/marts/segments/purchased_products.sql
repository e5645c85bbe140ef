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
        product_external_id,
        (array_agg(product_name order by ordered_at desc, order_key desc))[1] as product_name,
        (array_agg(category_name order by ordered_at desc, order_key desc)
            filter (where category_name is not null))[1] as category_name,
        min(ordered_at) as first_purchased_at,
        max(ordered_at) as last_purchased_at,
        count(distinct order_key) as order_count,
        sum(quantity) as quantity,
        max(landed_at) as last_landed_at
    from order_lines
    group by email, connection_id, product_external_id

)

select * from final
