{#- segment(): one entry of the segment catalogue, as rows (email, connection_id, segment_key, since).

    key            the segment's name, e.g. 'vip_customer'
    from           a segments model with `email` and `connection_id` columns
    where          the condition on one row of `from`
    since          an aggregate over the matching rows: when the contact entered the segment
    key_suffix     an expression that splits the segment per value (key 'purchased_category:shoes')
    roll_up_to_all also emit connection_id = 'all' for contacts matching in any connection — only
                   right for "has any …" conditions; thresholds read models that carry 'all' rows.

    Example (add it to segment_members.sql):
        {{ segment('vip_customer', from='contact_ecommerce_profile',
                   where="order_count >= 3 and last_order_at >= now() - interval '180 days'",
                   since='min(last_order_at)') }}
-#}
{% macro segment(key, from, where, since, key_suffix=none, roll_up_to_all=false) -%}
    {%- set segment_key -%}
        '{{ key }}'{% if key_suffix %} || ':' || {{ key_suffix }}{% endif %}
    {%- endset -%}
    {%- set split_by = ", " ~ key_suffix if key_suffix else "" -%}
    select email, connection_id, {{ segment_key }} as segment_key, ({{ since }})::timestamptz as since
    from {{ ref(from) }}
    where {{ where }}
    group by email, connection_id{{ split_by }}
    {%- if roll_up_to_all %}
    union all
    select email, 'all', {{ segment_key }}, ({{ since }})::timestamptz
    from {{ ref(from) }}
    where {{ where }}
    group by email{{ split_by }}
    {%- endif %}
{%- endmacro %}

{#- Product lines of synced orders, for the incremental purchase bridges. Incrementally, only contacts
    with an order landed since the bridge's newest row (minus the look-back) are re-read — all of
    their orders, so delete+insert on (email, connection_id) rebuilds exactly their rows. Orders that
    stopped syncing count too (int_orders_enriched, not ecom_orders): an archived order changes its
    contact's rows. A contact left with no synced order (its email changed, its orders were excluded)
    has no row in the batch; purchased_bridge_cleanup() deletes it. The contacts crm.ecom_orders took
    an order from (intermediate.incremental_contact_changes) and those with synced orders but no row
    yet (a connection enabled again) are re-read too. -#}
{% macro purchased_order_lines() -%}
    select
        orders.email,
        orders.connection_id,
        orders.order_key,
        orders.external_created_at as ordered_at,
        orders.landed_at,
        product ->> 'externalid' as product_external_id,
        product ->> 'name' as product_name,
        product ->> 'category' as category_name,
        (product ->> 'quantity')::integer as quantity
    from {{ ref('ecom_orders') }} as orders
    cross join lateral jsonb_array_elements(orders.order_products) as product
    {%- if is_incremental() %}
    where (orders.email, orders.connection_id) in (
        select email, connection_id
        from {{ ref('int_orders_enriched') }}
        where landed_at >= {{ incremental_cutoff('last_landed_at') }}
          and email is not null
        union
        -- the contacts crm.ecom_orders took an order from (its email changed, another account keeps it)
        select email, connection_id
        from {{ contact_changes_relation() }}
        where changed_at >= {{ incremental_cutoff('last_landed_at') }}
        union
        -- contacts with synced orders but no rows yet (their connection was enabled again): a hashed
        -- set difference, not a NOT EXISTS under OR (a correlated scan of the bridge per order line)
        (
            select email, connection_id from {{ ref('ecom_orders') }}
            except
            select email, connection_id from {{ this }}
        )
    )
    {%- endif %}
{%- endmacro %}

{#- Post-hook of the purchase bridges: a contact with no synced order in its connection any more (its
    email changed, its orders were archived or excluded) loses its rows. -#}
{% macro purchased_bridge_cleanup() -%}
    {%- if is_incremental() -%}
    delete from {{ this }} as bridge
    where not exists (
        select 1 from {{ ref('ecom_orders') }} as orders
        where orders.email = bridge.email and orders.connection_id = bridge.connection_id
    )
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}
