{#- Catalog products of both sources with their category, image and URL resolved.
    BigCommerce products belong to a store; Square catalog objects to the merchant, so each Square
    item appears once (from its latest landing) whichever location it was landed under. -#}
with

bigcommerce_products as (

    select * from {{ ref('stg_bigcommerce__products') }}

),

bigcommerce_categories as (

    select * from {{ ref('stg_bigcommerce__categories') }}

),

connections as (

    select * from {{ ref('stg_state__connections') }}

),

square_items as (

    select distinct on (item_id) *
    from {{ ref('stg_square__catalog_items') }}
    order by item_id, updated_at desc nulls last, connection_id

),

-- Square's catalog staging carries no landing time: each catalog object's latest landing, from raw
square_landings as (

    select pk as object_id, max(loaded_at) as loaded_at
    from {{ source('square', 'catalog_objects') }}
    group by pk

),

square_item_skus as (

    select variations.item_id, min(variations.sku) as sku, max(landings.loaded_at) as loaded_at
    from {{ ref('stg_square__catalog_item_variations') }} as variations
    left join square_landings as landings on landings.object_id = variations.variation_id
    group by variations.item_id

),

square_categories as (

    select distinct on (category_id) *
    from {{ ref('stg_square__catalog_categories') }}
    order by category_id, updated_at desc nulls last, connection_id

),

square_images as (

    select distinct on (image_id) *
    from {{ ref('stg_square__catalog_images') }}
    order by image_id, updated_at desc nulls last, connection_id

),

bigcommerce as (

    select
        'bigcommerce' as source,
        products.connection_id,
        products.product_id as product_external_id,
        products.name,
        products.sku,
        products.description,
        categories.name as category_name,
        products.image_url,
        rtrim(connections.link_url, '/') || products.url_path as product_url,
        greatest(products.loaded_at, categories.loaded_at) as landed_at
    from bigcommerce_products as products
    left join bigcommerce_categories as categories
        on categories.connection_id = products.connection_id
        and categories.category_id = products.primary_category_id
    left join connections
        on connections.connection_id = products.connection_id

),

square as (

    select
        'square' as source,
        items.connection_id,
        items.item_id as product_external_id,
        items.name,
        item_skus.sku,
        items.description,
        categories.name as category_name,
        images.url as image_url,
        items.product_url,
        greatest(item_landings.loaded_at, item_skus.loaded_at, category_landings.loaded_at, image_landings.loaded_at)
            as landed_at
    from square_items as items
    left join square_item_skus as item_skus on item_skus.item_id = items.item_id
    left join square_categories as categories on categories.category_id = items.category_id
    left join square_images as images on images.image_id = items.image_id
    left join square_landings as item_landings on item_landings.object_id = items.item_id
    left join square_landings as category_landings on category_landings.object_id = items.category_id
    left join square_landings as image_landings on image_landings.object_id = items.image_id

),

final as (

    select * from bigcommerce
    union all
    select * from square

)

select * from final
