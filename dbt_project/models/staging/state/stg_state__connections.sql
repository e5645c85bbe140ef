with

source as (

    select * from {{ source('state', 'connections') }}

),

renamed as (

    select
        connection_id,
        source as service,
        external_id,
        name,
        link_url,
        coalesce(enabled, true) as is_enabled,
        first_seen_at,
        last_success_at

    from source

)

select * from renamed
