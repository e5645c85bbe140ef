with

source as (

    {{ raw_rows(source('square', 'orders')) }}

),

discounts as (

    select
        source.connection_id,
        source.pk as order_id,
        discount.value as discount,
        discount.ordinality as discount_number
    from source
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(source.payload -> 'discounts') = 'array'
             then source.payload -> 'discounts' else '[]'::jsonb end
    ) with ordinality as discount (value, ordinality)
    where jsonb_typeof(discount.value) = 'object'

),

renamed as (

    select distinct on (connection_id, order_id, coalesce(discount ->> 'uid', discount_number::text))
        connection_id,
        order_id,
        coalesce(discount ->> 'uid', discount_number::text) as discount_uid,
        discount_number,
        discount ->> 'name' as name,
        discount ->> 'type' as discount_type,
        discount ->> 'scope' as scope,
        coalesce(
            {{ safe_bigint("discount #>> '{applied_money,amount}'") }},
            {{ safe_bigint("discount #>> '{amount_money,amount}'") }},
            0
        ) as applied_cents

    from discounts
    order by connection_id, order_id, coalesce(discount ->> 'uid', discount_number::text), discount_number

)

select * from renamed
