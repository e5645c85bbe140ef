with

source as (

    select * from {{ source('square', 'payments') }}

),

renamed as (

    select
        connection_id,
        payload ->> 'id' as payment_id,
        payload ->> 'order_id' as order_id,
        payload ->> 'customer_id' as customer_id,
        payload ->> 'location_id' as location_id,
        payload ->> 'status' as status,
        (payload #>> '{amount_money,amount}')::bigint as amount_cents,
        upper(payload #>> '{amount_money,currency}') as currency,
        coalesce((payload #>> '{refunded_money,amount}')::bigint, 0) as refunded_cents,
        payload ->> 'receipt_number' as receipt_number,
        payload ->> 'receipt_url' as receipt_url,
        {{ normalize_email("payload ->> 'buyer_email_address'") }} as buyer_email,
        {{ parse_rfc3339("payload ->> 'created_at'") }} as created_at,
        {{ parse_rfc3339("payload ->> 'updated_at'") }} as updated_at,
        loaded_at,
        sync_mode

    from source

)

select * from renamed
