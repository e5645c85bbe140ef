with

source as (

    select * from {{ source('square', 'orders') }}

),

line_items as (

    select
        source.connection_id,
        source.payload ->> 'id' as order_id,
        line_item.value as line_item,
        line_item.ordinality as line_number
    from source
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(source.payload -> 'line_items') = 'array'
             then source.payload -> 'line_items' else '[]'::jsonb end
    ) with ordinality as line_item (value, ordinality)

),

renamed as (

    select
        connection_id,
        order_id,
        coalesce(line_item ->> 'uid', line_number::text) as line_item_uid,
        line_number,
        line_item ->> 'catalog_object_id' as catalog_object_id,
        line_item ->> 'name' as name,
        line_item ->> 'variation_name' as variation_name,
        -- Square quantities are decimal strings ("1", "1.5" for weighed items)
        (line_item ->> 'quantity')::numeric as quantity,
        (line_item #>> '{base_price_money,amount}')::bigint as base_price_cents,
        (line_item #>> '{total_money,amount}')::bigint as total_cents

    from line_items

)

select * from renamed
