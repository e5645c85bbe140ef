{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='email',
        indexes=[{'columns': ['email']}, {'columns': ['last_landed_at']}],
        on_schema_change='append_new_columns',
        pre_hook="{{ prepare_revenue_rebuild() }}"
    )
}}
{#- The analysts' long form of contact_ecommerce_profile.revenue_cents_by_currency: one row per contact,
    connection (or 'all') and currency, so "spent at least 100 USD" is a plain where. Sums the same
    rows as the profile's map (contact_order_history), so the two always agree.
    Incremental (macros/segments.sql, prepare_revenue_rebuild): a scheduled run rebuilds every row of the
    emails contact_order_history rebuilt since the cutoff. -#}
with

order_history as (

    select * from {{ ref('contact_order_history') }}
    {%- if is_incremental() %}
    where email in (select rebuild.email from {{ revenue_rebuild_relation() }} as rebuild)
    {%- endif %}

),

final as (

    select
        email,
        connection_id,
        currency,
        sum(total_price_cents) as revenue_cents,
        count(*) as order_count,
        min(ordered_at) as first_order_at,
        max(ordered_at) as last_order_at,
        max(landed_at) as last_landed_at
    from order_history
    group by email, connection_id, currency

)

select * from final
