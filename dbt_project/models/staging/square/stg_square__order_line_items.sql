{#- Square order line items (api.json OrderLineItem). Only `quantity` is required; an ad-hoc
    CUSTOM_AMOUNT line may have no `name` and no `catalog_object_id` (`item_type` says which kind it is).
    Missing fields get their documented defaults in int_order_lines_enriched; a value sent but
    unreadable is flagged. -#}
with

source as (

    {{ raw_rows(source('square', 'orders')) }}

),

line_items as (

    select
        source.connection_id,
        source.pk as order_id,
        line_item.value as line_item,
        line_item.ordinality as line_number
    from source
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(source.payload -> 'line_items') = 'array'
             then source.payload -> 'line_items' else '[]'::jsonb end
    ) with ordinality as line_item (value, ordinality)
    where jsonb_typeof(line_item.value) = 'object'

),

renamed as (

    -- a uid repeated within one order is one line (its first occurrence)
    select distinct on (connection_id, order_id, coalesce(line_item ->> 'uid', line_number::text))
        connection_id,
        order_id,
        coalesce(line_item ->> 'uid', line_number::text) as line_item_uid,
        line_number,
        nullif(trim(line_item ->> 'catalog_object_id'), '') as catalog_object_id,
        upper(trim(line_item ->> 'item_type')) as item_type,
        nullif(trim(line_item ->> 'name'), '') as name,
        nullif(trim(line_item ->> 'variation_name'), '') as variation_name,
        -- Square quantities are decimal strings ("1", "1.5" for weighed items)
        case when {{ safe_numeric("line_item ->> 'quantity'") }} between 0 and 999999999
             then {{ safe_numeric("line_item ->> 'quantity'") }} end as quantity,
        {{ safe_bigint("line_item #>> '{base_price_money,amount}'") }} as base_price_cents,
        {{ safe_bigint("line_item #>> '{total_money,amount}'") }} as total_cents,
        (
            {{ is_unreadable("line_item ->> 'quantity'", safe_numeric("line_item ->> 'quantity'")) }}
            or coalesce({{ safe_numeric("line_item ->> 'quantity'") }} not between 0 and 999999999, false)
            or {{ is_unreadable("line_item #>> '{base_price_money,amount}'", safe_bigint("line_item #>> '{base_price_money,amount}'")) }}
            or {{ is_unreadable("line_item #>> '{total_money,amount}'", safe_bigint("line_item #>> '{total_money,amount}'")) }}
        ) as has_unreadable_value

    from line_items
    order by connection_id, order_id, coalesce(line_item ->> 'uid', line_number::text), line_number

)

select * from renamed
