{#- Every record that will not reach the CRM and why (B5, S1): counted and reported, never silently dropped. -#}
with

customers as (

    select * from {{ ref('int_customers_unioned') }}

),

orders as (

    select * from {{ ref('int_orders_unioned') }}

),

excluded_customers as (

    select
        connection_id,
        'customer' as record_type,
        customer_external_id as external_id,
        email_status || '_email' as reason,
        case email_status
            when 'invalid' then 'email ' || quote_literal(email) || ' is not a valid address'
            else 'the customer has no email address'
        end as detail
    from customers
    where email_status <> 'valid'

),

excluded_orders as (

    select
        connection_id,
        case when is_incomplete then 'abandoned_cart' else 'order' end as record_type,
        order_external_id as external_id,
        exclusion_reason as reason,
        case exclusion_reason
            when 'guest_checkout' then 'checkout without a customer account'
            when 'unknown_currency' then 'currency ' || coalesce(quote_literal(currency), 'missing')
                || ' is not an ISO 4217 code'
            when 'invalid_total' then 'total ' || coalesce(total_price_cents::text || ' cents', 'missing')
                || ' is not a valid order total'
            else 'customer ' || coalesce(customer_external_id, '?') || ' has no valid email'
        end
        || ' (' || coalesce(status, 'unknown status') || ', '
        || coalesce(to_char(external_created_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI'), 'no date') || ' UTC)' as detail
    from orders
    where exclusion_reason is not null

),

final as (

    select * from excluded_customers
    union all
    select * from excluded_orders

)

select * from final
where {{ is_enabled_connection('connection_id') }}
