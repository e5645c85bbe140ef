{#- Every record that will not reach the CRM and why (B5, S1, issues 13 and 15): counted and reported,
    never silently dropped. -#}
with

customers as (

    select * from {{ ref('int_customers_unioned') }}

),

orders as (

    select * from {{ ref('int_orders_unioned') }}

),

rejected_records as (

    select * from {{ ref('stg_state__rejected_records') }}

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
            when 'archived_order' then 'the order was archived (is_deleted): no live order'
            when 'payment_failed' then 'the payment failed: no money was taken'
            when 'payment_canceled' then 'the payment was canceled: no money was taken'
            when 'unknown_status' then 'status ' || coalesce(quote_literal(source_status), 'missing')
                || ' is not a status of the source'
            when 'guest_checkout' then 'checkout without a customer account'
            when 'unknown_currency' then 'currency ' || coalesce(quote_literal(currency), 'missing')
                || ' is not an ISO 4217 code'
            when 'invalid_amount' then 'a money field (total, shipping, tax, discount or refund) is not a readable amount'
            when 'invalid_total' then 'total ' || coalesce(gross_price_cents::text || ' cents', 'missing')
                || ' is not a valid order total'
            when 'invalid_date' then 'the order date is missing or not a readable date'
            when 'invalid_line_item' then 'a line item''s price, quantity or discount is not a number'
            else 'customer ' || coalesce(customer_external_id, '?') || ' has no valid email'
        end
        || ' (' || coalesce(status, 'unknown status') || ', '
        || coalesce(to_char(external_created_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI'), 'no date') || ' UTC)' as detail
    from orders
    where exclusion_reason is not null

),

-- Records the extract could not land at all (issue 15). Their own record type: an order rejected at
-- landing may still be in the CRM in its last landed version, which must stay there (the load removes only
-- `order` rows from the CRM).
excluded_at_landing as (

    select
        connection_id,
        'landing_rejection' as record_type,
        raw_table || ':' || record_key as external_id,
        'rejected_at_landing' as reason,
        'the extract could not land this ' || raw_table || ' record: ' || reason
        || ' (its last landed version, if any, is what the CRM has)' as detail
    from rejected_records

),

final as (

    select * from excluded_customers
    union all
    select * from excluded_orders
    union all
    select * from excluded_at_landing

)

select * from final
where {{ is_enabled_connection('connection_id') }}
