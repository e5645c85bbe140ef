-- depends_on: {{ ref('ecom_customers') }}
-- depends_on: {{ ref('int_customers_unioned') }}
-- depends_on: {{ ref('abandoned_carts') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='email',
        indexes=[{'columns': ['email']}, {'columns': ['abandoned_cart_count']}, {'columns': ['last_landed_at']}],
        on_schema_change='append_new_columns',
        pre_hook="{{ prepare_profile_rebuild() }}",
        post_hook="{{ profile_cleanup() }}"
    )
}}
{#- One row per contact and connection, plus one per contact across all connections ('all').
    Revenue is a map per currency ({"USD": 12345}): amounts in different currencies are never added.
    Revenue follows the revenue rule (macros/revenue.sql), as the CRM's totals do; gross beside it.
    Incremental (macros/segments.sql, prepare_profile_rebuild): a scheduled run rebuilds every row of
    the emails whose order history was rebuilt or whose customer / abandoned-cart columns differ from a
    fresh aggregate of those (small) tables. -#}
with

{% if is_incremental() %}
rebuild as (

    select email from {{ profile_rebuild_relation() }}

),

scopes as (

    select * from {{ profile_rebuild_relation('scopes') }}
    where email in (select rebuild.email from rebuild)

),
{% else %}
ecom_customers as (

    select * from {{ ref('ecom_customers') }}

),

customers as (

    select * from {{ ref('int_customers_unioned') }}

),

abandoned_carts as (

    select * from {{ ref('abandoned_carts') }}

),

scopes as (

    {{ profile_customer_scopes() }}

),
{% endif %}

order_history as (

    select * from {{ ref('contact_order_history') }}
    {%- if is_incremental() %}
    where email in (select rebuild.email from rebuild)
    {%- endif %}

),

orders as (

    select * from {{ ref('ecom_orders') }}
    {%- if is_incremental() %}
    where email in (select rebuild.email from rebuild)
    {%- endif %}

),

order_totals as (

    select
        email,
        connection_id,
        count(*) as order_count,
        count(*) filter (where is_purchase) as purchase_count,
        sum(product_quantity) as product_count,
        min(ordered_at) as first_order_at,
        max(ordered_at) as last_order_at,
        max(landed_at) as orders_landed_at,
        bool_or(status in ('Refunded', 'Partially Refunded')) as has_refunded_order
    from order_history
    group by email, connection_id

),

revenue as (

    select
        email,
        connection_id,
        jsonb_object_agg(currency, revenue_cents order by currency) as revenue_cents_by_currency,
        jsonb_object_agg(currency, gross_revenue_cents order by currency) as gross_revenue_cents_by_currency
    from (
        select
            email,
            connection_id,
            currency,
            sum(total_price_cents) as revenue_cents,
            sum(gross_price_cents) as gross_revenue_cents
        from order_history
        group by email, connection_id, currency
    ) as per_currency
    group by email, connection_id

),

distinct_products as (

    select
        orders.email,
        coalesce(orders.connection_id, 'all') as connection_id,
        count(distinct orders.connection_id || '|' || (product ->> 'externalid')) as distinct_product_count
    from orders
    cross join lateral jsonb_array_elements(orders.order_products) as product
    group by grouping sets ((orders.email, orders.connection_id), (orders.email))

),

last_orders as (

    select distinct on (order_history.email, order_history.connection_id)
        order_history.email,
        order_history.connection_id,
        order_history.order_key as last_order_key,
        order_history.total_price_cents as last_order_total_cents,
        order_history.currency as last_order_currency,
        orders.order_products as last_order_products
    from order_history
    inner join orders on orders.order_key = order_history.order_key
    order by order_history.email, order_history.connection_id, order_history.ordered_at desc, order_history.order_key desc

),

final as (

    select
        scopes.email,
        scopes.connection_id,
        scopes.accepts_marketing,
        scopes.customer_since,
        coalesce(revenue.revenue_cents_by_currency, '{}'::jsonb) as revenue_cents_by_currency,
        coalesce(revenue.gross_revenue_cents_by_currency, '{}'::jsonb) as gross_revenue_cents_by_currency,
        coalesce(order_totals.order_count, 0) as order_count,
        coalesce(order_totals.purchase_count, 0) as purchase_count,
        coalesce(order_totals.product_count, 0) as product_count,
        coalesce(distinct_products.distinct_product_count, 0) as distinct_product_count,
        order_totals.first_order_at,
        order_totals.last_order_at,
        last_orders.last_order_key,
        last_orders.last_order_total_cents,
        last_orders.last_order_currency,
        last_orders.last_order_products,
        coalesce(order_totals.has_refunded_order, false) as has_refunded_order,
        scopes.abandoned_cart_count > 0 as has_abandoned_cart,
        scopes.abandoned_cart_count,
        scopes.first_abandoned_at,
        scopes.customer_landed_at,
        greatest(scopes.customer_landed_at, order_totals.orders_landed_at) as last_landed_at
    from scopes
    left join order_totals using (email, connection_id)
    left join revenue using (email, connection_id)
    left join distinct_products using (email, connection_id)
    left join last_orders using (email, connection_id)

)

select * from final
