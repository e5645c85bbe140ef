{#- Order products come inside the order (include=consignments.line_items, consignment_structure=object):
    consignments.{shipping|pickups|…}[].line_items[]. Every consignment kind is read, so digital and
    pickup orders keep their lines too. -#}
with

source as (

    select * from {{ source('bigcommerce', 'orders') }}

),

consignment_kinds as (

    select
        source.connection_id,
        source.payload ->> 'id' as order_id,
        source.payload ->> 'currency_code' as currency_code,
        kind.consignments
    from source
    cross join lateral jsonb_each(
        case when jsonb_typeof(source.payload -> 'consignments') = 'object'
             then source.payload -> 'consignments' else '{}'::jsonb end
    ) as kind (name, consignments)
    where jsonb_typeof(kind.consignments) = 'array'

),

line_items as (

    select
        consignment_kinds.connection_id,
        consignment_kinds.order_id,
        consignment_kinds.currency_code,
        line_item
    from consignment_kinds
    cross join lateral jsonb_array_elements(consignment_kinds.consignments) as consignment
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(consignment -> 'line_items') = 'array'
             then consignment -> 'line_items' else '[]'::jsonb end
    ) as line_item

),

renamed as (

    select distinct on (connection_id, order_id, line_item ->> 'id')
        connection_id,
        order_id,
        line_item ->> 'id' as line_item_id,
        line_item ->> 'product_id' as product_id,
        line_item ->> 'variant_id' as variant_id,
        line_item ->> 'name' as name,
        nullif(line_item ->> 'sku', '') as sku,
        {{ to_minor_units("line_item ->> 'price_inc_tax'", "currency_code") }} as unit_price_inc_tax_cents,
        (line_item ->> 'quantity')::integer as quantity,
        {{ to_minor_units("line_item ->> 'total_inc_tax'", "currency_code") }} as total_inc_tax_cents

    from line_items
    order by connection_id, order_id, line_item ->> 'id'

)

select * from renamed
