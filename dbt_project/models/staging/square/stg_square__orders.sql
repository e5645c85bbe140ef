with

source as (

    select * from {{ source('square', 'orders') }}

),

renamed as (

    select
        connection_id,
        payload ->> 'id' as order_id,
        payload ->> 'location_id' as location_id,
        payload ->> 'customer_id' as customer_id,
        payload ->> 'state' as state,
        coalesce((payload #>> '{total_tax_money,amount}')::bigint, 0) as total_tax_cents,
        coalesce((payload #>> '{total_discount_money,amount}')::bigint, 0) as total_discount_cents,
        payload #>> '{fulfillments,0,type}' as fulfillment_type,
        {{ parse_rfc3339("payload ->> 'created_at'") }} as created_at,
        {{ parse_rfc3339("payload ->> 'updated_at'") }} as updated_at,
        loaded_at

    from source

)

select * from renamed
