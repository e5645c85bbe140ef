with

source as (

    {{ raw_rows(source('square', 'orders')) }}

),

-- a uid repeated within one order is one discount (its first occurrence), dropped within each order (a lateral
-- DISTINCT ON) so that a filter on (connection_id, order_id) or loaded_at still reaches the raw table
discounts as (

    select
        source.connection_id,
        source.pk as order_id,
        source.loaded_at,
        order_discounts.discount,
        order_discounts.discount_number
    from source
    cross join lateral (  -- noqa: ST05
        select distinct on (coalesce(discount.value ->> 'uid', discount.ordinality::text))
            discount.value as discount,
            discount.ordinality as discount_number
        from jsonb_array_elements(
            case when jsonb_typeof(source.payload -> 'discounts') = 'array'
                 then source.payload -> 'discounts' else '[]'::jsonb end
        ) with ordinality as discount (value, ordinality)
        where jsonb_typeof(discount.value) = 'object'
        order by coalesce(discount.value ->> 'uid', discount.ordinality::text), discount.ordinality
    ) as order_discounts

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
        coalesce(
            {{ safe_bigint("discount #>> '{applied_money,amount}'") }},
            {{ safe_bigint("discount #>> '{amount_money,amount}'") }},
            0
        ) as applied_cents,
        loaded_at

    from discounts

)

select * from renamed
