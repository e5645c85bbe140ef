{#- Every order of both sources in one shape, with the reason it will not sync (null = it syncs):
    no customer account, no valid email, a currency the CRM cannot take, a missing or negative total.
    A Square "order" in the CRM is a payment (S12), joined to the Square order it paid for. -#}
with

bigcommerce_orders as (

    select * from {{ ref('stg_bigcommerce__orders') }}

),

square_payments as (

    select * from {{ ref('stg_square__payments') }}

),

-- Orders belong to the merchant; keep the latest landing of each whatever its connection.
square_orders as (

    select distinct on (order_id) *
    from {{ ref('stg_square__orders') }}
    order by order_id, loaded_at desc, connection_id

),

customers as (

    select * from {{ ref('int_customers_unioned') }}

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
            when orders.is_guest_checkout then 'guest_checkout'
            when customers.email_status = 'invalid' then 'invalid_email'
            when customers.email_status is distinct from 'valid' then 'missing_email'
            when not {{ is_known_currency('orders.currency_code') }} then 'unknown_currency'
            when orders.total_inc_tax_cents is null or orders.total_inc_tax_cents < 0 then 'invalid_total'
        end as exclusion_reason,
        orders.order_id as order_number,
        'https://store-' || split_part(orders.connection_id, ':', 2) || '.mybigcommerce.com/manage/orders/'
            || orders.order_id as order_url,
        {{ bigcommerce_status_name('orders.status_id') }} as status,
        {{ bigcommerce_status_group('orders.status_id') }} as status_group,
        orders.total_inc_tax_cents as total_price_cents,
        orders.shipping_cost_inc_tax_cents as shipping_amount_cents,
        orders.total_tax_cents as tax_amount_cents,
        coalesce(orders.manual_discount_cents, 0) + coalesce(orders.coupon_discount_cents, 0) as discount_amount_cents,
        orders.currency_code as currency,
        orders.shipping_method,
        orders.created_at as external_created_at,
        orders.updated_at as external_updated_at,
        orders.sync_mode,
        orders.loaded_at as landed_at
    from bigcommerce_orders as orders
    left join customers
        on customers.source = 'bigcommerce'
        and customers.connection_id = orders.connection_id
        and customers.customer_external_id = orders.customer_id

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
            when payments.customer_id is null then 'guest_checkout'
            when customers.email_status = 'invalid' then 'invalid_email'
            when customers.email_status is distinct from 'valid' then 'missing_email'
            when not {{ is_known_currency('payments.currency') }} then 'unknown_currency'
            when payments.amount_cents is null or payments.amount_cents < 0 then 'invalid_total'
        end as exclusion_reason,
        coalesce(payments.receipt_number, payments.order_id, payments.payment_id) as order_number,
        coalesce(
            payments.receipt_url,
            'https://squareup.com/dashboard/sales/transactions/' || coalesce(payments.order_id, payments.payment_id)
        ) as order_url,
        {{ square_payment_status('payments') }} as status,
        -- the family name of each Square status is its name in snake case ('Partially Refunded' → partially_refunded)
        lower(replace({{ square_payment_status('payments') }}, ' ', '_')) as status_group,
        -- S12: the payment's amount is the order total; its time is the order date
        payments.amount_cents as total_price_cents,
        -- Square orders carry no shipping cost (delivery fees are service charges)
        0::bigint as shipping_amount_cents,
        coalesce(square_orders.total_tax_cents, 0) as tax_amount_cents,
        coalesce(square_orders.total_discount_cents, 0) as discount_amount_cents,
        payments.currency,
        square_orders.fulfillment_type as shipping_method,
        payments.created_at as external_created_at,
        greatest(payments.updated_at, square_orders.updated_at) as external_updated_at,
        payments.sync_mode,
        greatest(payments.loaded_at, square_orders.loaded_at) as landed_at
    from square_payments as payments
    left join square_orders
        on square_orders.order_id = payments.order_id
    left join customers
        on customers.source = 'square'
        and customers.connection_id = payments.connection_id
        and customers.customer_external_id = payments.customer_id

),

final as (

    select *, status_group = 'incomplete' as is_incomplete from bigcommerce
    union all
    select *, false as is_incomplete from square

)

select * from final
