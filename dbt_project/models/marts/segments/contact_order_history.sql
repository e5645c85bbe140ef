-- depends_on: {{ ref('int_orders_enriched') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='email',
        indexes=[{'columns': ['email']}, {'columns': ['landed_at']}],
        on_schema_change='append_new_columns',
        pre_hook="{{ prepare_order_history_rebuild() }}",
        post_hook="{{ order_history_cleanup() }}"
    )
}}
{#- Every synced order of a contact with running totals, once per connection and once across all
    connections (connection_id = 'all'): the n-th order, revenue and products so far. Revenue follows
    the revenue rule (macros/revenue.sql): it is crm.ecom_orders.total_price_cents, what the CRM sums;
    the gross (what the order was worth before refunds and failures) is its own column.
    Incremental (macros/segments.sql, prepare_order_history_rebuild): a scheduled run rebuilds every row
    of the emails whose orders changed; the running totals are per email and scope. -#}
with

orders as (

    select * from {{ ref('ecom_orders') }}
    {%- if is_incremental() %}
    where email in (select email from {{ order_history_rebuild_relation() }})
    {%- endif %}

),

order_money as (

    select connection_id, order_external_id, gross_price_cents
    from {{ ref('int_orders_unioned') }}

),

scoped as (

    select
        orders.*,
        order_money.gross_price_cents,
        scope.connection_id as connection_scope,
        (
            select coalesce(sum((products.product ->> 'quantity')::integer), 0)
            from jsonb_array_elements(orders.order_products) as products (product)
        ) as product_quantity
    from orders
    inner join order_money
        on order_money.connection_id = orders.connection_id
        and order_money.order_external_id = orders.external_id
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
        gross_price_cents,
        is_purchase,
        product_quantity,
        landed_at,
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
