{#- Every synced order of a contact with running totals, once per connection and once across all
    connections (connection_id = 'all'): the n-th order, revenue and products so far. -#}
with

orders as (

    select * from {{ ref('ecom_orders') }}

),

scoped as (

    select
        orders.*,
        scope.connection_id as connection_scope,
        (
            select coalesce(sum((product ->> 'quantity')::integer), 0)
            from jsonb_array_elements(orders.order_products) as product
        ) as product_quantity
    from orders
    cross join lateral (values (orders.connection_id), ('all')) as scope (connection_id)

),

final as (

    select
        email,
        connection_scope as connection_id,
        order_key,
        connection_id as order_connection_id,
        external_id as order_external_id,
        external_created_at as ordered_at,
        status,
        currency,
        total_price_cents,
        product_quantity,
        row_number() over contact_orders as order_sequence,
        sum(product_quantity) over contact_orders as running_product_count,
        sum(total_price_cents) over (
            partition by email, connection_scope, currency
            order by external_created_at, order_key
            rows between unbounded preceding and current row
        ) as running_revenue_cents
    from scoped
    window contact_orders as (
        partition by email, connection_scope
        order by external_created_at, order_key
        rows between unbounded preceding and current row
    )

)

select * from final
