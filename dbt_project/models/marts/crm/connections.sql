with

connections as (

    select * from {{ ref('stg_state__connections') }}

),

square_locations as (

    select distinct on (location_id) *
    from {{ ref('stg_square__locations') }}
    order by location_id, connection_id

),

final as (

    select
        connections.connection_id,
        connections.service,
        connections.external_id,
        -- S2: a Square connection is named after its location
        coalesce(square_locations.name, connections.name) as name,
        coalesce(connections.link_url, square_locations.website_url) as link_url,
        coalesce(
            square_locations.logo_url,
            case connections.service
                {%- for service, url in var('connection_logo_urls').items() %}
                when '{{ service }}' then '{{ url }}'
                {%- endfor %}
            end
        ) as logo_url
    from connections
    left join square_locations
        on connections.service = 'square'
        and square_locations.location_id = connections.external_id
    where connections.is_enabled

)

select * from final
