with

orders as (

    select * from {{ ref('int_orders_enriched') }}

),

final as (

    select
        connection_id || '|' || order_external_id as order_key,
        connection_id,
        order_external_id as external_id,
        customer_external_id,
        email,
        order_number,
        order_url,
        status,
        total_price_cents,
        shipping_amount_cents,
        tax_amount_cents,
        discount_amount_cents,
        currency,
        shipping_method,
        external_created_at,
        external_updated_at,
        order_products,
        order_discounts,
        sync_mode,
        landed_at
    from orders
    -- B4: every status syncs except incomplete checkouts (those are abandoned carts);
    -- B5/S1: guests and customers without a valid email are in excluded_records instead
    where exclusion_reason is null
      and not is_incomplete
      and {{ is_enabled_connection('connection_id') }}

)

select * from final
