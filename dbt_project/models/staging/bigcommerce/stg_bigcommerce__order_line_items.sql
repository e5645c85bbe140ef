{#- Order products come inside the order (include=consignments.line_items, consignment_structure=object):
    consignments.{shipping|pickups|…}[].line_items[]. Every consignment kind is read, so digital and
    pickup orders keep their lines too. Money is in the order's transactional currency
    (`default_currency_code`, see stg_bigcommerce__orders). A field the API documents as required but did
    not send gets a documented default in int_order_lines_enriched; a value sent but unreadable is flagged. -#}
with

-- one row per line as sent (macros/bigcommerce_line_items.sql: the consignments unnested, each order's payload
-- read once, a filter on (connection_id, order_id) still reaching the raw table's primary key)
line_items as (

    {{ bigcommerce_order_lines(source('bigcommerce', 'orders')) }}

),

renamed as (

    select distinct on (connection_id, order_id, line_item_id)
        connection_id,
        order_id,
        -- a line without an id keeps its place as `<kind>.<consignment>.<position>`
        line_item_id,
        {{ safe_bigint("line_item ->> 'id'") }} as line_item_number,
        nullif(trim(line_item ->> 'product_id'), '') as product_id,
        line_item ->> 'variant_id' as variant_id,
        nullif(trim(line_item ->> 'name'), '') as name,
        nullif(line_item ->> 'sku', '') as sku,
        {{ to_minor_units("line_item ->> 'price_inc_tax'", "currency_code") }} as unit_price_inc_tax_cents,
        {{ safe_integer("line_item ->> 'quantity'") }} as quantity,
        {{ to_minor_units("line_item ->> 'total_inc_tax'", "currency_code") }} as total_inc_tax_cents,
        (
            {{ is_unreadable("line_item ->> 'price_inc_tax'", safe_numeric("line_item ->> 'price_inc_tax'")) }}
            or {{ is_unreadable("line_item ->> 'total_inc_tax'", safe_numeric("line_item ->> 'total_inc_tax'")) }}
            or {{ is_unreadable("line_item ->> 'quantity'", safe_integer("line_item ->> 'quantity'")) }}
        ) as has_unreadable_value

    from line_items
    order by connection_id, order_id, line_item_id, consignment_kind, consignment_number, position_in_consignment

)

select * from renamed
