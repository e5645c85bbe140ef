{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['connection_id', 'order_external_id'],
        indexes=[{'columns': ['connection_id', 'order_external_id']}, {'columns': ['landed_at']}],
        on_schema_change='append_new_columns',
        pre_hook=["{{ delete_orders_gone_upstream() }}", "{{ prepare_order_lines_rebuild() }}"]
    )
}}
{#- One row per product line of every order, described from the catalog (category, image, description).
    Fields a source may omit but the CRM requires get documented defaults, so one missing optional field
    never costs the order (docs/analysts.md "Line items"):
      name      the line's name, else the catalog product's, else 'Custom amount' (Square CUSTOM_AMOUNT
                lines may have none, api.json OrderLineItem) / 'Gift card' / 'Custom product' (BigCommerce)
      quantity  1 when not sent (Square documents it as required; BigCommerce always sends it)
      price     the unit price, else (Square) the line total / quantity, else 0
    Linear in the number of lines: each source's lines are joined to their orders and the catalog by
    hash joins on materialised keys, never re-reading an order's JSON per line.
    landed_at: the latest of the order's landed_at and its product's (int_products_unioned.landed_at).
    Incremental: a scheduled run deletes and rebuilds all lines of the orders int_orders_unioned rebuilt
    and of the orders with a product whose catalog landing moved (macros/order_lines_rebuild.sql). -#}
with

orders as (

    select connection_id, order_external_id, source, source_order_connection_id, source_order_id, landed_at
    from {{ ref('int_orders_unioned') }}
    {%- if is_incremental() %}
    where (connection_id, order_external_id) in (
        select connection_id, order_external_id from {{ order_lines_rebuild_relation() }}
    )
    {%- endif %}

),
{%- if is_incremental() %}

{{ source_order_keys('orders') }}
{%- endif %}

bigcommerce_line_items as (

    {%- if is_incremental() %}
    {{ lookup_rows(ref('stg_bigcommerce__order_line_items'), 'bigcommerce_order_keys',
                   {'connection_id': 'connection_id', 'order_id': 'order_id'}) }}
    {%- else %}
    select * from {{ ref('stg_bigcommerce__order_line_items') }}
    {%- endif %}

),

square_line_items as (

    {%- if is_incremental() %}
    {{ lookup_rows(ref('stg_square__order_line_items'), 'square_order_keys',
                   {'connection_id': 'connection_id', 'order_id': 'order_id'}) }}
    {%- else %}
    select * from {{ ref('stg_square__order_line_items') }}
    {%- endif %}

),

square_variations as (

    select distinct on (variation_id) *
    from {{ ref('stg_square__catalog_item_variations') }}
    order by variation_id, updated_at desc nulls last, connection_id

),

products as (

    select * from {{ ref('int_products_unioned') }}

),

bigcommerce as (

    select
        orders.connection_id,
        orders.order_external_id,
        row_number() over (
            partition by orders.connection_id, orders.order_external_id
            order by line_items.line_item_number nulls last, line_items.line_item_id
        ) as line_number,
        -- product_id 0 is a custom product typed in at checkout
        coalesce(nullif(line_items.product_id, '0'), 'custom:' || line_items.line_item_id) as product_external_id,
        coalesce(line_items.name, products.name, 'Custom product') as name,
        coalesce(line_items.sku, products.sku) as sku,
        coalesce(line_items.unit_price_inc_tax_cents, 0) as price_cents,
        coalesce(line_items.quantity, 1) as quantity,
        products.category_name,
        products.description,
        products.image_url,
        products.product_url,
        greatest(orders.landed_at, products.landed_at) as landed_at
    from orders
    inner join bigcommerce_line_items as line_items
        on line_items.connection_id = orders.source_order_connection_id
        and line_items.order_id = orders.source_order_id
    left join products
        on products.source = 'bigcommerce'
        and products.connection_id = line_items.connection_id
        and products.product_external_id = line_items.product_id
    where orders.source = 'bigcommerce'

),

square as (

    select
        orders.connection_id,
        orders.order_external_id,
        line_items.line_number,
        -- S12: the catalog item (not the variation) is the product
        coalesce(variations.item_id, line_items.catalog_object_id, 'custom:' || line_items.line_item_uid)
            as product_external_id,
        coalesce(
            line_items.name,
            products.name,
            case line_items.item_type when 'GIFT_CARD' then 'Gift card' else 'Custom amount' end
        ) as name,
        variations.sku,
        coalesce(
            line_items.base_price_cents,
            round(line_items.total_cents / nullif(coalesce(line_items.quantity, 1), 0))::bigint,
            0
        ) as price_cents,
        -- the CRM counts whole units; a weighed 0.5 kg line is one product
        coalesce(ceil(line_items.quantity)::integer, 1) as quantity,
        products.category_name,
        products.description,
        products.image_url,
        products.product_url,
        greatest(orders.landed_at, products.landed_at) as landed_at
    from orders
    inner join square_line_items as line_items
        on line_items.connection_id = orders.source_order_connection_id
        and line_items.order_id = orders.source_order_id
    left join square_variations as variations
        on variations.variation_id = line_items.catalog_object_id
    left join products
        on products.source = 'square'
        and products.product_external_id = coalesce(variations.item_id, line_items.catalog_object_id)
    where orders.source = 'square'

),

final as (

    select * from bigcommerce
    union all
    select * from square

)

select * from final
