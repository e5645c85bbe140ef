{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='order_key',
        indexes=[
            {'columns': ['order_key']},
            {'columns': ['connection_id', 'external_id']},
            {'columns': ['email', 'connection_id']},
            {'columns': ['landed_at']}
        ],
        pre_hook=[
            "{{ record_contact_changes() }}",
            "{{ delete_rows_not_in(
                keys=['connection_id', 'external_id'], upstream=ref('int_orders_enriched'),
                upstream_keys=['connection_id', 'order_external_id'],
                where='upstream.exclusion_reason is null and not upstream.is_incomplete and '
                      ~ is_enabled_connection('upstream.connection_id'),
                candidates=deleted_raw_keys(['bigcommerce_orders', 'square_payments'])
                           ~ ' union all select connection_id, order_external_id from ' ~ ref('int_orders_enriched')
                           ~ ' where landed_at >= ' ~ incremental_cutoff(),
                upstreams=['int_orders_enriched'], record_contacts=true) }}"
        ]
    )
}}
{#- Incremental (macros/incremental.sql): a scheduled run rewrites the orders landed since the cutoff
    and, when whole_table_checks_due() (a connection enabled again, macros/change_events.sql), the syncing
    orders missing from the table; the pre-hooks record the contacts the rewritten orders belonged to
    (record_contact_changes) and remove the orders that no longer sync (excluded, now an incomplete checkout,
    connection disabled, raw record erased), recording their contacts too. -#}
with

orders as (

    select * from {{ ref('int_orders_enriched') }}
    {%- if is_incremental() %}
    where (connection_id, order_external_id) in (
        select connection_id, order_external_id
        from {{ ref('int_orders_enriched') }}
        where landed_at >= {{ incremental_cutoff() }}
        {%- if whole_table_checks_due(['int_orders_enriched']) %}
        union
        -- syncing orders missing from the table (a connection enabled again): a hashed set difference,
        -- not a NOT EXISTS under OR (a correlated scan of this table per order)
        (
            select connection_id, order_external_id
            from {{ ref('int_orders_enriched') }}
            where exclusion_reason is null and not is_incomplete
            except
            select connection_id, external_id from {{ this }}
        )
        {%- endif %}
    )
    {%- endif %}

),

final as (

    select
        connection_id || '|' || order_external_id as order_key,
        connection_id,
        order_external_id as external_id,
        customer_external_id,
        email,
        order_number,
        order_url,
        status,
        -- AC totalPrice is the order's revenue under the revenue rule (macros/revenue.sql): the CRM sums
        -- it for its totals, so the CRM and the segments agree
        net_revenue_cents as total_price_cents,
        shipping_amount_cents,
        tax_amount_cents,
        discount_amount_cents,
        currency,
        shipping_method,
        external_created_at,
        external_updated_at,
        order_products,
        order_discounts,
        sync_mode,
        landed_at,
        -- not sent: a live order whose money was taken or is being taken; only a purchase may fire
        -- "makes a purchase" (source 1)
        is_purchase
    from orders
    -- B4: every status syncs except incomplete checkouts (those are abandoned carts); archived orders,
    -- failed or cancelled Square payments, guests, customers without a valid email and unreadable
    -- records are in excluded_records instead
    where exclusion_reason is null
      and not is_incomplete
      and {{ is_enabled_connection('connection_id') }}

)

select * from final
