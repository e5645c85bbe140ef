{#- Money is in the TRANSACTIONAL currency `default_currency_code`; `currency_code` is only the currency
    prices were displayed in (orders.v2.oas2.yml "Currency Fields"; guides/currencies-guide.mdx "Orders").
    Every cast is safe (macros/safe_casts.sql): a field that was sent but cannot be read is flagged, and
    int_orders_unioned turns the flag into the order's exclusion reason. -#}
with

source as (

    {{ raw_rows(source('bigcommerce', 'orders')) }}

),

fields as (

    select
        connection_id,
        pk,
        payload,
        nullif(trim(payload ->> 'customer_id'), '') as customer_id_text,
        upper(trim(payload ->> 'default_currency_code')) as transactional_currency,
        loaded_at,
        sync_mode
    from source

),

renamed as (

    select
        connection_id,
        -- raw.pk is the order id the extract keyed the row by: never null, unique per connection
        pk as order_id,
        -- customer_id 0 is a guest checkout: no customer account behind the order (B5)
        nullif(customer_id_text, '0') as customer_id,
        coalesce(customer_id_text, '0') = '0' as is_guest_checkout,
        {{ safe_integer("payload ->> 'status_id'") }} as status_id,
        payload ->> 'status_id' as status_id_text,
        -- an archived order (store/order/archived) is no live order
        coalesce({{ safe_boolean("payload ->> 'is_deleted'") }}, false) as is_archived,
        {{ normalize_email("payload #>> '{billing_address,email}'") }} as billing_email,
        nullif(trim(payload #>> '{billing_address,first_name}'), '') as billing_first_name,
        nullif(trim(payload #>> '{billing_address,last_name}'), '') as billing_last_name,
        nullif(trim(payload #>> '{billing_address,phone}'), '') as billing_phone,
        coalesce({{ safe_boolean("payload ->> 'is_email_opt_in'") }}, false) as is_email_opt_in,
        transactional_currency as currency_code,
        upper(trim(payload ->> 'currency_code')) as display_currency_code,
        {{ to_minor_units("payload ->> 'total_inc_tax'", "transactional_currency") }} as total_inc_tax_cents,
        {{ to_minor_units("payload ->> 'shipping_cost_inc_tax'", "transactional_currency") }} as shipping_cost_inc_tax_cents,
        {{ to_minor_units("payload ->> 'total_tax'", "transactional_currency") }} as total_tax_cents,
        {{ to_minor_units("payload ->> 'discount_amount'", "transactional_currency") }} as manual_discount_cents,
        {{ to_minor_units("payload ->> 'coupon_discount'", "transactional_currency") }} as coupon_discount_cents,
        (
            {%- for field in ['total_inc_tax', 'shipping_cost_inc_tax', 'total_tax', 'discount_amount', 'coupon_discount'] %}
            {{ is_unreadable("payload ->> '" ~ field ~ "'", safe_numeric("payload ->> '" ~ field ~ "'")) }}
            {%- if not loop.last %} or{% endif %}
            {%- endfor %}
        ) as has_unreadable_money,
        payload #>> '{consignments,shipping,0,shipping_method}' as shipping_method,
        {{ parse_rfc2822("payload ->> 'date_created'") }} as created_at,
        {{ parse_rfc2822("payload ->> 'date_modified'") }} as updated_at,
        (
            {{ is_unreadable("payload ->> 'date_created'", parse_rfc2822("payload ->> 'date_created'")) }}
            or {{ is_unreadable("payload ->> 'date_modified'", parse_rfc2822("payload ->> 'date_modified'")) }}
        ) as has_unreadable_date,
        loaded_at,
        sync_mode

    from fields

)

select * from renamed
