{#- Orders with their products and discounts in the CRM's orderProducts / orderDiscounts shape (cents). -#}
with

orders as (

    select * from {{ ref('int_orders_unioned') }}

),

order_lines as (

    select * from {{ ref('int_order_lines_enriched') }}

),

bigcommerce_coupons as (

    select * from {{ ref('stg_bigcommerce__order_coupons') }}

),

square_discounts as (

    select * from {{ ref('stg_square__order_discounts') }}

),

bigcommerce_orders as (

    select * from {{ ref('stg_bigcommerce__orders') }}

),

order_products as (

    select
        connection_id,
        order_external_id,
        jsonb_agg(
            jsonb_build_object(
                'externalid', product_external_id,
                'name', name,
                'price', price_cents,
                'quantity', quantity,
                'category', category_name,
                'sku', sku,
                'description', description,
                'imageUrl', image_url,
                'productUrl', product_url
            )
            order by line_number
        ) as order_products,
        sum(quantity)::integer as product_quantity
    from order_lines
    group by connection_id, order_external_id

),

discounts as (

    -- coupon types 3 (shipping discount) and 4 (free shipping) discount the shipping
    select
        orders.connection_id,
        orders.order_external_id,
        coupons.coupon_code as name,
        case when coupons.coupon_type in (3, 4) then 'shipping' else 'order' end as discount_type,
        {{ to_minor_units('coupons.discount_amount', 'orders.currency') }} as discount_cents,
        1 as kind_order,
        lpad(coupons.order_coupon_id, 12, '0') as sort_key
    from orders
    inner join bigcommerce_coupons as coupons
        on coupons.connection_id = orders.source_order_connection_id
        and coupons.order_id = orders.source_order_id
    where orders.source = 'bigcommerce'

    union all

    -- a discount the merchant typed in has no code
    select
        bigcommerce_orders.connection_id,
        bigcommerce_orders.order_id,
        'Manual discount',
        'order',
        bigcommerce_orders.manual_discount_cents,
        2,
        ''
    from bigcommerce_orders
    where bigcommerce_orders.manual_discount_cents > 0

    union all

    select
        orders.connection_id,
        orders.order_external_id,
        square_discounts.name,
        'order',
        square_discounts.applied_cents,
        1,
        lpad(square_discounts.discount_number::text, 6, '0')
    from orders
    inner join square_discounts
        on square_discounts.connection_id = orders.source_order_connection_id
        and square_discounts.order_id = orders.source_order_id
    where orders.source = 'square'

),

order_discounts as (

    select
        connection_id,
        order_external_id,
        jsonb_agg(
            jsonb_build_object('name', name, 'type', discount_type, 'discountAmount', discount_cents)
            order by kind_order, sort_key
        ) as order_discounts
    from discounts
    group by connection_id, order_external_id

),

final as (

    select
        orders.*,
        coalesce(order_products.order_products, '[]'::jsonb) as order_products,
        coalesce(order_products.product_quantity, 0) as product_quantity,
        coalesce(order_discounts.order_discounts, '[]'::jsonb) as order_discounts
    from orders
    left join order_products
        on order_products.connection_id = orders.connection_id
        and order_products.order_external_id = orders.order_external_id
    left join order_discounts
        on order_discounts.connection_id = orders.connection_id
        and order_discounts.order_external_id = orders.order_external_id

)

select * from final
