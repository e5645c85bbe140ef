{#- One row per product line of every order, described from the catalog (category, image, description). -#}
with

orders as (

    select * from {{ ref('int_orders_unioned') }}

),

bigcommerce_line_items as (

    select * from {{ ref('stg_bigcommerce__order_line_items') }}

),

square_line_items as (

    select * from {{ ref('stg_square__order_line_items') }}

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
            partition by orders.connection_id, orders.order_external_id order by line_items.line_item_id::bigint
        ) as line_number,
        -- product_id 0 is a custom product typed in at checkout
        coalesce(nullif(line_items.product_id, '0'), 'custom:' || line_items.line_item_id) as product_external_id,
        line_items.name,
        coalesce(line_items.sku, products.sku) as sku,
        line_items.unit_price_inc_tax_cents as price_cents,
        line_items.quantity,
        products.category_name,
        products.description,
        products.image_url,
        products.product_url
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
        coalesce(line_items.name, products.name) as name,
        variations.sku,
        line_items.base_price_cents as price_cents,
        -- the CRM counts whole units; a weighed 0.5 kg line is one product
        ceil(line_items.quantity)::integer as quantity,
        products.category_name,
        products.description,
        products.image_url,
        products.product_url
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
