{{ config(post_hook="{{ record_clock_due(next_abandoned_cart_at()) }}") }}
{#- BigCommerce cannot list carts; an incomplete order (status 0) is the listable trace of an
    abandoned checkout. Idle for var('abandoned_cart_after_minutes') it counts as abandoned
    (macros/abandoned_carts.sql); the post-hook records when the next one will (macros/clock.sql). -#}
{%- set idle = abandoned_cart_idle() -%}
with

orders as (

    select * from {{ ref('int_orders_enriched') }}

),

final as (

    select
        connection_id || '|' || order_external_id as cart_key,
        connection_id,
        order_external_id as external_checkout_id,
        customer_external_id,
        email,
        -- the cart's value: nothing was taken, so its revenue is 0, but the CRM shows what was left behind
        gross_price_cents as total_price_cents,
        currency,
        external_updated_at + {{ idle }} as abandoned_at,
        external_created_at,
        external_updated_at,
        order_products,
        sync_mode
    from orders
    where {{ is_checkout_left_open() }}
      and external_updated_at <= now() - {{ idle }}

)

select * from final
