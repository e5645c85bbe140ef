{#- Square's merchant-wide records — customers, catalog objects, locations (api.json: SearchCustomers,
    SearchCatalogObjects and ListLocations take no location) — are landed ONCE per account, under the
    account's merchant connection `square-merchant:<merchant_id>` (ecomsync.sources.square.merchant_streams).
    This macro is the one place they are spread to the account's location connections (`square:<location_id>`),
    so the Square staging models keep their grain (connection_id, record id) and every model downstream keeps
    its rows:
    - a location connection of an account: a location its merchant `locations` stream landed and that is a
      registered connection (state.connections: its own streams were extracted at least once), as when each
      location landed its own copy;
    - rows an earlier version landed under a location connection itself stay valid (a warehouse upgrades
      without a re-sync); where both exist, the newer copy wins (replication time, then landing time).
    `to_every_location`: true spreads each record to every location connection of its account (customers,
    catalog objects); false gives a record only to the connection of the location it is (locations).
    Returns the raw columns: connection_id, pk, payload, source_updated_at, loaded_at, run_id, sync_mode, flag. -#}
{% macro square_location_rows(table, to_every_location=true) %}
    with

    merchant_locations as (

        select
            locations.connection_id as merchant_connection_id,
            'square:' || locations.pk as connection_id
        from {{ source('square', 'locations') }} as locations
        inner join {{ source('state', 'connections') }} as connections
            on connections.connection_id = 'square:' || locations.pk
        where locations.connection_id like 'square-merchant:%'

    ),

    spread as (

        select
            merchant_locations.connection_id,
            records.pk,
            records.payload,
            records.source_updated_at,
            records.loaded_at,
            records.run_id,
            records.sync_mode,
            records.flag
        from {{ source('square', table) }} as records
        inner join merchant_locations
            on merchant_locations.merchant_connection_id = records.connection_id
            {%- if not to_every_location %}
            and merchant_locations.connection_id = 'square:' || records.pk
            {%- endif %}
        where records.connection_id like 'square-merchant:%'

    ),

    landed_per_location as (

        select connection_id, pk, payload, source_updated_at, loaded_at, run_id, sync_mode, flag
        from {{ source('square', table) }}
        where connection_id not like 'square-merchant:%'

    ),

    unioned as (

        select * from spread
        union all
        select * from landed_per_location

    )

    {#- the newest copy of each record, its payload then read once (raw_rows: after the sort, which so moves
        the stored values, not decompressed copies) #}
    {%- set newest_copies -%}
    (
        select distinct on (connection_id, pk) *
        from unioned
        order by connection_id, pk, source_updated_at desc nulls last, loaded_at desc
    )
    {%- endset %}
    {{ raw_rows(newest_copies) }}
{% endmacro %}
