{#- The catalog is merchant-wide: landed once per account, one row per location connection here
    (macro square_location_rows). -#}
with

source as (

    select * from ({{ square_location_rows('catalog_objects') }}) as landed
    where payload ->> 'type' = 'ITEM'

),

renamed as (

    select
        connection_id,
        pk as item_id,
        payload #>> '{item_data,name}' as name,
        coalesce(
            nullif(payload #>> '{item_data,description_plaintext}', ''),
            nullif(payload #>> '{item_data,description}', '')
        ) as description,
        coalesce(
            payload #>> '{item_data,reporting_category,id}',
            payload #>> '{item_data,categories,0,id}',
            payload #>> '{item_data,category_id}'
        ) as category_id,
        payload #>> '{item_data,image_ids,0}' as image_id,
        nullif(payload #>> '{item_data,ecom_uri}', '') as product_url,
        coalesce({{ safe_boolean("payload ->> 'is_deleted'") }}, false) as is_deleted,
        {{ parse_rfc3339("payload ->> 'updated_at'") }} as updated_at

    from source

)

select * from renamed
