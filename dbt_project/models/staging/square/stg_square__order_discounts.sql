with

source as (

    select * from {{ source('square', 'orders') }}

),

discounts as (

    select
        source.connection_id,
        source.payload ->> 'id' as order_id,
        discount.value as discount,
        discount.ordinality as discount_number
    from source
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(source.payload -> 'discounts') = 'array'
             then source.payload -> 'discounts' else '[]'::jsonb end
    ) with ordinality as discount (value, ordinality)

),

renamed as (

    select
        connection_id,
        order_id,
        coalesce(discount ->> 'uid', discount_number::text) as discount_uid,
        discount_number,
        discount ->> 'name' as name,
        discount ->> 'type' as discount_type,
        discount ->> 'scope' as scope,
        coalesce((discount #>> '{applied_money,amount}')::bigint, (discount #>> '{amount_money,amount}')::bigint, 0)
            as applied_cents

    from discounts

)

select * from renamed
