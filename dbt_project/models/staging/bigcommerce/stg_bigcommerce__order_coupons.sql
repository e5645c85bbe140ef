with

source as (

    select * from {{ source('bigcommerce', 'order_coupons') }}

),

renamed as (

    select
        connection_id,
        payload ->> 'id' as order_coupon_id,
        payload ->> 'order_id' as order_id,
        payload ->> 'code' as coupon_code,
        -- 0 per item, 1 percentage, 2 per total, 3 shipping, 4 free shipping, 5 promotion
        (payload ->> 'type')::integer as coupon_type,
        -- `discount` is the money taken off the order; `amount` is the coupon's face value (5 = 5 %).
        -- A coupon row carries no currency: int_orders_enriched turns it into the order's minor units.
        coalesce(payload ->> 'discount', payload ->> 'amount')::numeric as discount_amount

    from source

)

select * from renamed
