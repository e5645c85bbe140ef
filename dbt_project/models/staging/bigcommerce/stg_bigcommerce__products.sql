with

source as (

    {{ raw_rows(source('bigcommerce', 'products')) }}

),

renamed as (

    select
        connection_id,
        pk as product_id,
        payload ->> 'name' as name,
        nullif(payload ->> 'sku', '') as sku,
        nullif(payload ->> 'description', '') as description,
        -- the first listed category is the product's category in the CRM (B12)
        payload #>> '{categories,0}' as primary_category_id,
        (
            select image ->> 'url_standard'
            from jsonb_array_elements(
                case when jsonb_typeof(payload -> 'images') = 'array' then payload -> 'images' else '[]'::jsonb end
            ) as image
            order by {{ safe_boolean("image ->> 'is_thumbnail'") }} desc nulls last,
                     {{ safe_integer("image ->> 'sort_order'") }} nulls last
            limit 1
        ) as image_url,
        payload #>> '{custom_url,url}' as url_path,
        {{ parse_rfc3339("payload ->> 'date_modified'") }} as updated_at,
        loaded_at

    from source

)

select * from renamed
