with

source as (

    select * from ({{ square_location_rows('catalog_objects') }}) as landed
    where payload ->> 'type' = 'IMAGE'

),

renamed as (

    select
        connection_id,
        pk as image_id,
        payload #>> '{image_data,url}' as url,
        {{ parse_rfc3339("payload ->> 'updated_at'") }} as updated_at

    from source

)

select * from renamed
