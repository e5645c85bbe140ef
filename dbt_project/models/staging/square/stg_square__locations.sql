with

source as (

    select * from ({{ square_location_rows('locations', to_every_location=false) }}) as landed

),

renamed as (

    select
        connection_id,
        pk as location_id,
        payload ->> 'name' as name,
        payload ->> 'status' as status,
        nullif(payload ->> 'website_url', '') as website_url,
        nullif(payload ->> 'logo_url', '') as logo_url

    from source

)

select * from renamed
