{#- The discounts applied to each order product (orders.v2.oas2.yml orderProductAppliedDiscounts:
    id, amount, name, code — the coupon code, null for a manual discount — and target order|product).
    An order-level discount is spread over the lines in proportion to their price, so the order's
    discounts are the sums over its lines. The amount is in the order's transactional currency. -#}
with

-- Each order's payload is read once, not once per line (OFFSET 0, see stg_bigcommerce__order_line_items),
-- and a filter on (connection_id, order_id) still reaches the raw table's primary key.
line_items as (

    select
        source.connection_id,
        source.pk as order_id,
        order_fields.currency_code,
        line_item
    from {{ source('bigcommerce', 'orders') }} as source
    cross join lateral (  -- noqa: ST05
        select
            upper(trim(source.payload ->> 'default_currency_code')) as currency_code,
            source.payload -> 'consignments' as consignments
        offset 0
    ) as order_fields
    cross join lateral jsonb_each(
        case when jsonb_typeof(order_fields.consignments) = 'object' then order_fields.consignments else '{}'::jsonb end
    ) as kind (name, consignments)
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(kind.consignments) = 'array' then kind.consignments else '[]'::jsonb end
    ) as consignment
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(consignment -> 'line_items') = 'array'
             then consignment -> 'line_items' else '[]'::jsonb end
    ) as line_item

),

discounts as (

    select
        line_items.connection_id,
        line_items.order_id,
        line_items.currency_code,
        line_items.line_item ->> 'id' as line_item_id,
        discount.value as discount,
        discount.ordinality as discount_number
    from line_items
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(line_items.line_item -> 'applied_discounts') = 'array'
             then line_items.line_item -> 'applied_discounts' else '[]'::jsonb end
    ) with ordinality as discount (value, ordinality)
    where jsonb_typeof(discount.value) = 'object'

),

renamed as (

    -- a line repeated in two consignments is one line (as in stg_bigcommerce__order_line_items)
    select distinct on (connection_id, order_id, coalesce(line_item_id, '?'), discount_number)
        connection_id,
        order_id,
        coalesce(line_item_id, '?') as line_item_id,
        discount_number,
        discount ->> 'id' as discount_id,
        nullif(trim(discount ->> 'code'), '') as coupon_code,
        nullif(trim(discount ->> 'name'), '') as name,
        discount ->> 'target' as target,
        {{ to_minor_units("discount ->> 'amount'", "currency_code") }} as amount_cents,
        {{ is_unreadable("discount ->> 'amount'", safe_numeric("discount ->> 'amount'")) }} as has_unreadable_amount

    from discounts
    order by connection_id, order_id, coalesce(line_item_id, '?'), discount_number

)

select * from renamed
