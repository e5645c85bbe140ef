{#- The discounts applied to each order product (orders.v2.oas2.yml orderProductAppliedDiscounts:
    id, amount, name, code — the coupon code, null for a manual discount — and target order|product).
    An order-level discount is spread over the lines in proportion to their price, so the order's
    discounts are the sums over its lines. The amount is in the order's transactional currency. -#}
with

-- one row per line as sent (macros/bigcommerce_line_items.sql), named as stg_bigcommerce__order_line_items names it
line_items as (

    {{ bigcommerce_order_lines(source('bigcommerce', 'orders')) }}

),

discounts as (

    select
        line_items.connection_id,
        line_items.order_id,
        line_items.currency_code,
        line_items.line_item_id,
        line_items.consignment_kind,
        line_items.consignment_number,
        line_items.position_in_consignment,
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

    -- a line repeated in two consignments is one line: its first appearance (as in stg_bigcommerce__order_line_items)
    select distinct on (connection_id, order_id, line_item_id, discount_number)
        connection_id,
        order_id,
        line_item_id,
        discount_number,
        discount ->> 'id' as discount_id,
        nullif(trim(discount ->> 'code'), '') as coupon_code,
        nullif(trim(discount ->> 'name'), '') as name,
        discount ->> 'target' as target,
        {{ to_minor_units("discount ->> 'amount'", "currency_code") }} as amount_cents,
        {{ is_unreadable("discount ->> 'amount'", safe_numeric("discount ->> 'amount'")) }} as has_unreadable_amount

    from discounts
    order by
        connection_id, order_id, line_item_id, discount_number, consignment_kind, consignment_number,
        position_in_consignment

)

select * from renamed
