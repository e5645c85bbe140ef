with

source as (

    {{ raw_rows(source('square', 'orders')) }}

),

-- a uid repeated within one order is one discount (its first occurrence), dropped within each order
-- (macros/square_order_elements.sql) so that a filter on (connection_id, order_id) or loaded_at reaches the raw table
discounts as (

    select
        source.connection_id,
        source.pk as order_id,
        source.loaded_at,
        order_discounts.discount,
        order_discounts.discount_number
    from source
    cross join lateral (  -- noqa: ST05
        {{ square_order_elements('source.payload', 'discounts') }}
    ) as order_discounts (discount, discount_number)

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
