{#- Square payments (GET /v2/payments; api.json Payment). `status` is APPROVED, PENDING, COMPLETED,
    CANCELED or FAILED: only COMPLETED money was taken, APPROVED/PENDING is being taken, CANCELED/FAILED
    took nothing (a declined card is a FAILED payment). `refunded_money` is what was given back.
    Money is {amount: integer minor units, currency}; every cast is safe (macros/safe_casts.sql). -#}
with

source as (

    {{ raw_rows(source('square', 'payments')) }}

),

renamed as (

    select
        connection_id,
        pk as payment_id,
        nullif(trim(payload ->> 'order_id'), '') as order_id,
        nullif(trim(payload ->> 'customer_id'), '') as customer_id,
        payload ->> 'location_id' as location_id,
        upper(trim(payload ->> 'status')) as status,
        {{ safe_bigint("payload #>> '{amount_money,amount}'") }} as amount_cents,
        upper(trim(payload #>> '{amount_money,currency}')) as currency,
        coalesce({{ safe_bigint("payload #>> '{refunded_money,amount}'") }}, 0) as refunded_cents,
        (
            {{ is_unreadable("payload #>> '{amount_money,amount}'", safe_bigint("payload #>> '{amount_money,amount}'")) }}
            or {{ is_unreadable("payload #>> '{refunded_money,amount}'", safe_bigint("payload #>> '{refunded_money,amount}'")) }}
        ) as has_unreadable_money,
        payload ->> 'receipt_number' as receipt_number,
        payload ->> 'receipt_url' as receipt_url,
        {{ normalize_email("payload ->> 'buyer_email_address'") }} as buyer_email,
        {{ parse_rfc3339("payload ->> 'created_at'") }} as created_at,
        {{ parse_rfc3339("payload ->> 'updated_at'") }} as updated_at,
        (
            {{ is_unreadable("payload ->> 'created_at'", parse_rfc3339("payload ->> 'created_at'")) }}
            or {{ is_unreadable("payload ->> 'updated_at'", parse_rfc3339("payload ->> 'updated_at'")) }}
        ) as has_unreadable_date,
        loaded_at,
        sync_mode

    from source

)

select * from renamed
