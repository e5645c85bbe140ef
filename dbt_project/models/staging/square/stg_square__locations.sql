with

source as (

    select * from {{ source('square', 'locations') }}

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
