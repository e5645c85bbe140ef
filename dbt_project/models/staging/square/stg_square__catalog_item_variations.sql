with

source as (

    select * from ({{ square_location_rows('catalog_objects') }}) as landed
    where payload ->> 'type' = 'ITEM_VARIATION'

),

renamed as (

    select
        connection_id,
        pk as variation_id,
        payload #>> '{item_variation_data,item_id}' as item_id,
        payload #>> '{item_variation_data,name}' as name,
        nullif(payload #>> '{item_variation_data,sku}', '') as sku,
        {{ parse_rfc3339("payload ->> 'updated_at'") }} as updated_at

    from source

)

select * from renamed
