{#- Pre-hook of int_order_lines_enriched: the orders whose lines a scheduled run rebuilds, into
    pg_temp.int_order_lines_enriched__rebuild (connection_id, order_external_id), then their lines are
    deleted, so an order landed again with fewer lines (or none) keeps exactly its new lines:
      - the orders int_orders_unioned rebuilt (landed_at since the cutoff);
      - the orders with a line of a product whose catalog landing moved since the cutoff
        (int_products_unioned.landed_at: a renamed product or category, a new image), read from the
        previous lines, so an old order shows the catalog as it is now, as a full refresh would. -#}
{% macro order_lines_rebuild_relation() -%}
    pg_temp.int_order_lines_enriched__rebuild
{%- endmacro %}

{% macro prepare_order_lines_rebuild() -%}
    {%- if not is_incremental() -%}
    select 1
    {%- else -%}
    drop table if exists {{ order_lines_rebuild_relation() }};

    create temporary table int_order_lines_enriched__rebuild as
    with

    cutoff as (

        select {{ incremental_cutoff() }} as landed_after

    ),

    changed_products as (

        select source, connection_id, product_external_id
        from {{ ref('int_products_unioned') }}
        where landed_at >= (select landed_after from cutoff)

    )

    select connection_id, order_external_id
    from {{ ref('int_orders_unioned') }}
    where landed_at >= (select landed_after from cutoff)

    union

    -- BigCommerce products belong to their store
    select lines.connection_id, lines.order_external_id
    from {{ this }} as lines
    inner join changed_products
        on changed_products.source = 'bigcommerce'
        and changed_products.connection_id = lines.connection_id
        and changed_products.product_external_id = lines.product_external_id

    union

    -- Square items belong to the merchant, whichever location sold them
    select lines.connection_id, lines.order_external_id
    from {{ this }} as lines
    inner join changed_products
        on changed_products.source = 'square'
        and changed_products.product_external_id = lines.product_external_id
    where lines.connection_id like 'square:%';

    analyze {{ order_lines_rebuild_relation() }};

    delete from {{ this }}
    where (connection_id, order_external_id) in (
        select connection_id, order_external_id from {{ order_lines_rebuild_relation() }}
    )
    {%- endif -%}
{%- endmacro %}
