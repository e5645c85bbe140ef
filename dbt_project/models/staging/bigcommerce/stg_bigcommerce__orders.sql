with

source as (

    select * from {{ source('bigcommerce', 'orders') }}

),

renamed as (

    select
        connection_id,
        payload ->> 'id' as order_id,
        -- customer_id 0 is a guest checkout: no customer account behind the order (B5)
        nullif(payload ->> 'customer_id', '0') as customer_id,
        coalesce(payload ->> 'customer_id', '0') = '0' as is_guest_checkout,
        (payload ->> 'status_id')::integer as status_id,
        {{ normalize_email("payload #>> '{billing_address,email}'") }} as billing_email,
        nullif(trim(payload #>> '{billing_address,first_name}'), '') as billing_first_name,
        nullif(trim(payload #>> '{billing_address,last_name}'), '') as billing_last_name,
        nullif(trim(payload #>> '{billing_address,phone}'), '') as billing_phone,
        coalesce((payload ->> 'is_email_opt_in')::boolean, false) as is_email_opt_in,
        upper(payload ->> 'currency_code') as currency_code,
        {{ to_minor_units("payload ->> 'total_inc_tax'", "payload ->> 'currency_code'") }} as total_inc_tax_cents,
        {{ to_minor_units("payload ->> 'shipping_cost_inc_tax'", "payload ->> 'currency_code'") }} as shipping_cost_inc_tax_cents,
        {{ to_minor_units("payload ->> 'total_tax'", "payload ->> 'currency_code'") }} as total_tax_cents,
        {{ to_minor_units("payload ->> 'discount_amount'", "payload ->> 'currency_code'") }} as manual_discount_cents,
        {{ to_minor_units("payload ->> 'coupon_discount'", "payload ->> 'currency_code'") }} as coupon_discount_cents,
        payload #>> '{consignments,shipping,0,shipping_method}' as shipping_method,
        {{ parse_rfc2822("payload ->> 'date_created'") }} as created_at,
        {{ parse_rfc2822("payload ->> 'date_modified'") }} as updated_at,
        loaded_at,
        sync_mode

    from source

)

select * from renamed
