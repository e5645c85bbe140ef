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
    -- a Square account's merchant connection (customers, catalog, locations landed once per account) is no
    -- CRM connection: macro square_location_rows spreads its rows to the location connections
    where source is distinct from 'square_merchant'

)

select * from renamed
