{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['connection_id', 'order_external_id'],
        indexes=[{'columns': ['connection_id', 'order_external_id']}, {'columns': ['landed_at']}],
        on_schema_change='append_new_columns',
        pre_hook="{{ delete_orders_without_raw_record() }}"
    )
}}
{#- Every order of both sources in one shape, with its money under the revenue rule (macros/revenue.sql)
    and the reason it will not sync (null = it syncs, see order_exclusion_reasons()): an archived order,
    a failed or cancelled payment, an unknown status, no customer account, no valid email, a currency the
    CRM cannot take, money or dates that were sent but cannot be read, a missing or negative total.
    A Square "order" in the CRM is a payment (S12), joined to the Square order it paid for.
    Incremental (macros/incremental.sql): landed_at is the latest landing of the order, its refunds, its
    Square order and its customer, so a scheduled run rebuilds exactly the orders whose order, refund,
    Square order or customer (email, consent) landed since the cutoff. -#}
with
{% if is_incremental() %}
-- The orders to rebuild: their order, refund or Square order landed since the cutoff, or their customer
-- (int_customers_unioned, built before this model) did — a changed customer changes its orders' email.
-- Change detection reads the raw tables' keys and loaded_at (and a refund's order_id), never a staging
-- view's parsed JSON: the scan touches the heap rows, not their TOASTed payloads.
cutoff as (

    select {{ incremental_cutoff() }} as landed_after

),

changed_customers as (

    select source, connection_id, customer_external_id
    from {{ ref('int_customers_unioned') }}
    where landed_at >= (select landed_after from cutoff)

),

-- the orders (BigCommerce orders, Square payments) of those customers, as the last build left them
orders_of_changed_customers as (

    select previous.source, previous.connection_id, previous.order_external_id
    from {{ this }} as previous
    inner join changed_customers
        on changed_customers.source = previous.source
        and changed_customers.connection_id = previous.connection_id
        and changed_customers.customer_external_id = previous.customer_external_id

),

changed_bigcommerce_orders as (

    select connection_id, pk as order_id
    from {{ source('bigcommerce', 'orders') }}
    where loaded_at >= (select landed_after from cutoff)

    {%- if source_exists('bigcommerce', 'refunds') %}

    union

    select connection_id, nullif(trim(payload ->> 'order_id'), '')
    from {{ source('bigcommerce', 'refunds') }}
    where loaded_at >= (select landed_after from cutoff)
      and nullif(trim(payload ->> 'order_id'), '') is not null
    {%- endif %}

    union

    select connection_id, order_external_id from orders_of_changed_customers where source = 'bigcommerce'

),

changed_square_orders as (

    select pk as order_id
    from {{ source('square', 'orders') }}
    where loaded_at >= (select landed_after from cutoff)

),

changed_square_payments as (

    select connection_id, pk as payment_id
    from {{ source('square', 'payments') }}
    where loaded_at >= (select landed_after from cutoff)

    union

    select previous.connection_id, previous.order_external_id
    from {{ this }} as previous
    where previous.source = 'square'
      and previous.source_order_id in (select order_id from changed_square_orders)

    union

    select connection_id, order_external_id from orders_of_changed_customers where source = 'square'

),
{% endif %}

bigcommerce_orders as (

    {%- if is_incremental() %}
    {{ lookup_rows(ref('stg_bigcommerce__orders'), 'changed_bigcommerce_orders',
                   {'connection_id': 'connection_id', 'order_id': 'order_id'}) }}
    {%- else %}
    select * from {{ ref('stg_bigcommerce__orders') }}
    {%- endif %}

),

bigcommerce_refunds as (

    select * from {{ ref('stg_bigcommerce__refunds') }}
    {%- if is_incremental() %}
    where (connection_id, order_id) in (select connection_id, order_id from changed_bigcommerce_orders)
    {%- endif %}

),

bigcommerce_line_items as (

    {%- if is_incremental() %}
    {{ lookup_rows(ref('stg_bigcommerce__order_line_items'), 'changed_bigcommerce_orders',
                   {'connection_id': 'connection_id', 'order_id': 'order_id'}) }}
    {%- else %}
    select * from {{ ref('stg_bigcommerce__order_line_items') }}
    {%- endif %}

),

bigcommerce_line_discounts as (

    {%- if is_incremental() %}
    {{ lookup_rows(ref('stg_bigcommerce__order_line_discounts'), 'changed_bigcommerce_orders',
                   {'connection_id': 'connection_id', 'order_id': 'order_id'}) }}
    {%- else %}
    select * from {{ ref('stg_bigcommerce__order_line_discounts') }}
    {%- endif %}

),

square_payments as (

    {%- if is_incremental() %}
    {{ lookup_rows(ref('stg_square__payments'), 'changed_square_payments',
                   {'connection_id': 'connection_id', 'payment_id': 'payment_id'}) }}
    {%- else %}
    select * from {{ ref('stg_square__payments') }}
    {%- endif %}

),
{%- if is_incremental() %}

-- the raw keys of the batch's Square orders (every connection they were landed under): a scan of keys only
square_order_keys as (

    select connection_id, pk as order_id
    from {{ source('square', 'orders') }}
    where pk in (select order_id from square_payments)

),
{%- endif %}

-- Orders belong to the merchant; keep the latest landing of each whatever its connection.
square_orders as (

    select distinct on (order_id) *
    from (
        {%- if is_incremental() %}
        {{ lookup_rows(ref('stg_square__orders'), 'square_order_keys',
                       {'connection_id': 'connection_id', 'order_id': 'order_id'}) }}
        {%- else %}
        select * from {{ ref('stg_square__orders') }}
        {%- endif %}
    ) as landed_square_orders
    order by order_id, loaded_at desc, connection_id

),

square_line_items as (

    {%- if is_incremental() %}
    {{ lookup_rows(ref('stg_square__order_line_items'), 'square_order_keys',
                   {'connection_id': 'connection_id', 'order_id': 'order_id'}) }}
    {%- else %}
    select * from {{ ref('stg_square__order_line_items') }}
    {%- endif %}

),

-- One import CTE per source, each read once: Postgres inlines it, so the joins below are planned on
-- int_customers_unioned's own statistics. A CTE read twice is materialized, and a filter on its scan is
-- estimated blindly (0.5 % of the rows): the planner took 50,000 customers for 190 and merged them with the
-- orders on connection_id alone, comparing every order with every customer of its store (quadratic).
bigcommerce_customers as (

    select * from {{ ref('int_customers_unioned') }}
    where source = 'bigcommerce'

),

square_customers as (

    select * from {{ ref('int_customers_unioned') }}
    where source = 'square'

),

refunds_per_order as (

    select
        connection_id,
        order_id,
        sum(refunded_amount) as refunded_amount,
        max(loaded_at) as loaded_at,
        bool_or(has_unreadable_amount) as has_unreadable_refund
    from bigcommerce_refunds
    where order_id is not null
    group by connection_id, order_id

),

bigcommerce_unreadable_lines as (

    select connection_id, order_id from bigcommerce_line_items where has_unreadable_value
    union
    select connection_id, order_id from bigcommerce_line_discounts where has_unreadable_amount

),

square_unreadable_lines as (

    select distinct connection_id, order_id from square_line_items where has_unreadable_value

),

bigcommerce as (

    select
        'bigcommerce' as source,
        orders.connection_id,
        orders.order_id as order_external_id,
        orders.connection_id as source_order_connection_id,
        orders.order_id as source_order_id,
        orders.customer_id as customer_external_id,
        case when orders.is_guest_checkout then orders.billing_email else customers.email end as email,
        case
            when orders.is_archived then 'archived_order'
            when {{ bigcommerce_money_state('orders.status_id') }} is null then 'unknown_status'
            when orders.is_guest_checkout then 'guest_checkout'
            when customers.email_status = 'invalid' then 'invalid_email'
            when customers.email_status is distinct from 'valid' then 'missing_email'
            when not {{ is_known_currency('orders.currency_code') }} then 'unknown_currency'
            when orders.has_unreadable_money
                or coalesce(refunds.has_unreadable_refund, false)
                or refunds.refunded_amount < 0
                or (refunds.refunded_amount is not null
                    and {{ to_minor_units('refunds.refunded_amount', 'orders.currency_code') }} is null)
                then 'invalid_amount'
            when orders.total_inc_tax_cents is null or orders.total_inc_tax_cents < 0 then 'invalid_total'
            when orders.created_at is null or orders.has_unreadable_date then 'invalid_date'
            when unreadable_lines.order_id is not null then 'invalid_line_item'
        end as exclusion_reason,
        orders.status_id_text as source_status,
        orders.order_id as order_number,
        'https://store-' || split_part(orders.connection_id, ':', 2) || '.mybigcommerce.com/manage/orders/'
            || orders.order_id as order_url,
        {{ bigcommerce_status_name('orders.status_id') }} as status,
        {{ bigcommerce_status_group('orders.status_id') }} as status_group,
        {{ bigcommerce_money_state('orders.status_id') }} as money_state,
        not orders.is_archived as is_live,
        orders.total_inc_tax_cents as gross_price_cents,
        coalesce({{ to_minor_units('refunds.refunded_amount', 'orders.currency_code') }}, 0) as refunded_cents,
        orders.shipping_cost_inc_tax_cents as shipping_amount_cents,
        orders.total_tax_cents as tax_amount_cents,
        coalesce(orders.manual_discount_cents, 0) + coalesce(orders.coupon_discount_cents, 0) as discount_amount_cents,
        orders.currency_code as currency,
        orders.shipping_method,
        orders.created_at as external_created_at,
        coalesce(orders.updated_at, orders.created_at) as external_updated_at,
        orders.sync_mode,
        greatest(orders.loaded_at, refunds.loaded_at, customers.landed_at) as landed_at
    from bigcommerce_orders as orders
    left join bigcommerce_customers as customers
        on customers.connection_id = orders.connection_id
        and customers.customer_external_id = orders.customer_id
    left join refunds_per_order as refunds
        on refunds.connection_id = orders.connection_id
        and refunds.order_id = orders.order_id
    left join bigcommerce_unreadable_lines as unreadable_lines
        on unreadable_lines.connection_id = orders.connection_id
        and unreadable_lines.order_id = orders.order_id

),

square as (

    select
        'square' as source,
        payments.connection_id,
        payments.payment_id as order_external_id,
        square_orders.connection_id as source_order_connection_id,
        payments.order_id as source_order_id,
        payments.customer_id as customer_external_id,
        customers.email,
        case
            when payments.status = 'FAILED' then 'payment_failed'
            when payments.status = 'CANCELED' then 'payment_canceled'
            when {{ square_money_state('payments.status', 'square_orders.state') }} is null then 'unknown_status'
            when payments.customer_id is null then 'guest_checkout'
            when customers.email_status = 'invalid' then 'invalid_email'
            when customers.email_status is distinct from 'valid' then 'missing_email'
            when not {{ is_known_currency('payments.currency') }} then 'unknown_currency'
            when payments.has_unreadable_money
                or coalesce(square_orders.has_unreadable_money, false)
                or payments.refunded_cents < 0
                then 'invalid_amount'
            when payments.amount_cents is null or payments.amount_cents < 0 then 'invalid_total'
            when payments.created_at is null or payments.has_unreadable_date then 'invalid_date'
            when unreadable_lines.order_id is not null then 'invalid_line_item'
        end as exclusion_reason,
        payments.status as source_status,
        coalesce(payments.receipt_number, payments.order_id, payments.payment_id) as order_number,
        coalesce(
            payments.receipt_url,
            'https://squareup.com/dashboard/sales/transactions/' || coalesce(payments.order_id, payments.payment_id)
        ) as order_url,
        {{ square_payment_status('payments.status', 'payments.amount_cents', 'payments.refunded_cents', 'square_orders.state') }}
            as status,
        -- the family name of each Square status is its name in snake case ('Partially Refunded' → partially_refunded)
        lower(replace(
            {{ square_payment_status('payments.status', 'payments.amount_cents', 'payments.refunded_cents', 'square_orders.state') }},
            ' ', '_'
        )) as status_group,
        {{ square_money_state('payments.status', 'square_orders.state') }} as money_state,
        true as is_live,
        -- S12: the payment's amount is the order total; its time is the order date
        payments.amount_cents as gross_price_cents,
        payments.refunded_cents,
        -- Square orders carry no shipping cost (delivery fees are service charges)
        0::bigint as shipping_amount_cents,
        coalesce(square_orders.total_tax_cents, 0) as tax_amount_cents,
        coalesce(square_orders.total_discount_cents, 0) as discount_amount_cents,
        payments.currency,
        square_orders.fulfillment_type as shipping_method,
        payments.created_at as external_created_at,
        greatest(coalesce(payments.updated_at, payments.created_at), square_orders.updated_at) as external_updated_at,
        payments.sync_mode,
        greatest(payments.loaded_at, square_orders.loaded_at, customers.landed_at) as landed_at
    from square_payments as payments
    left join square_orders
        on square_orders.order_id = payments.order_id
    left join square_customers as customers
        on customers.connection_id = payments.connection_id
        and customers.customer_external_id = payments.customer_id
    left join square_unreadable_lines as unreadable_lines
        on unreadable_lines.connection_id = square_orders.connection_id
        and unreadable_lines.order_id = payments.order_id

),

unioned as (

    select *, status_group = 'incomplete' as is_incomplete from bigcommerce
    union all
    select *, false as is_incomplete from square

),

-- the revenue rule, once for both sources
final as (

    select
        unioned.*,
        {{ net_revenue_cents('money_state', 'is_live and not is_incomplete', 'gross_price_cents', 'refunded_cents') }}
            as net_revenue_cents,
        {{ is_purchase('money_state', 'is_live and not is_incomplete') }} as is_purchase
    from unioned

)

select * from final
