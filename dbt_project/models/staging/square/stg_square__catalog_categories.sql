with

source as (

    select * from ({{ square_location_rows('catalog_objects') }}) as landed
    where payload ->> 'type' = 'CATEGORY'

),

renamed as (

    select
        connection_id,
        pk as category_id,
        payload #>> '{category_data,name}' as name,
        {{ parse_rfc3339("payload ->> 'updated_at'") }} as updated_at

    from source

)

select * from renamed
