{#- Square orders (POST /v2/orders/search; api.json Order): the basket behind a payment. `state` is
    OPEN, COMPLETED, CANCELED or DRAFT. Money casts are safe; an unreadable tax or discount is flagged. -#}
with

source as (

    {{ raw_rows(source('square', 'orders')) }}

),

renamed as (

    select
        connection_id,
        pk as order_id,
        payload ->> 'location_id' as location_id,
        nullif(trim(payload ->> 'customer_id'), '') as customer_id,
        upper(trim(payload ->> 'state')) as state,
        coalesce({{ safe_bigint("payload #>> '{total_tax_money,amount}'") }}, 0) as total_tax_cents,
        coalesce({{ safe_bigint("payload #>> '{total_discount_money,amount}'") }}, 0) as total_discount_cents,
        (
            {{ is_unreadable("payload #>> '{total_tax_money,amount}'", safe_bigint("payload #>> '{total_tax_money,amount}'")) }}
            or {{ is_unreadable("payload #>> '{total_discount_money,amount}'", safe_bigint("payload #>> '{total_discount_money,amount}'")) }}
        ) as has_unreadable_money,
        payload #>> '{fulfillments,0,type}' as fulfillment_type,
        {{ parse_rfc3339("payload ->> 'created_at'") }} as created_at,
        {{ parse_rfc3339("payload ->> 'updated_at'") }} as updated_at,
        loaded_at

    from source

)

select * from renamed
