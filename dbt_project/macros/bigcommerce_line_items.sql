{#- The order products of BigCommerce orders, one row per line as the API sent it (include=consignments.line_items,
    consignment_structure=object: consignments.{shipping|pickups|…}[].line_items[], every consignment kind), for
    the staging models that read lines: stg_bigcommerce__order_line_items and stg_bigcommerce__order_line_discounts.
    Columns: connection_id, order_id, currency_code (the order's transactional currency), consignment_kind
    (`shipping`, `pickups`, …), consignment_number (within its kind), position_in_consignment, line_item_id (the
    line's `id`; a line without one keeps its place as `<kind>.<consignment>.<position>` — consignments are
    numbered within their kind, so the kind keeps two such lines apart — and both models name it alike),
    line_item (the object).
    A line repeated in two consignments appears twice: the models keep its first appearance in
    (kind, consignment, position) order.

    Each order's payload is read once, not once per line: raw_rows() decompresses it once per order, and the
    OFFSET 0 keeps the lateral subquery from being inlined, so `payload -> 'consignments'` is evaluated once per
    order. Inlined, it ran once per line item: quadratic in the number of lines (10,000 lines took minutes). Unlike a
    MATERIALIZED CTE this lets a filter on (connection_id, order_id) reach the raw table's primary key, so the
    incremental models read only the orders that changed. -#}
{% macro bigcommerce_order_lines(orders) -%}
    select
        orders.connection_id,
        orders.pk as order_id,
        order_fields.currency_code,
        kind.name as consignment_kind,
        consignment.ordinality as consignment_number,
        line_item.ordinality as position_in_consignment,
        coalesce(
            line_item.value ->> 'id', kind.name || '.' || consignment.ordinality || '.' || line_item.ordinality
        ) as line_item_id,
        line_item.value as line_item
    from ({{ raw_rows(orders) }}) as orders
    cross join lateral (  -- noqa: ST05
        select
            upper(trim(orders.payload ->> 'default_currency_code')) as currency_code,
            orders.payload -> 'consignments' as consignments
        offset 0
    ) as order_fields
    cross join lateral jsonb_each(
        case when jsonb_typeof(order_fields.consignments) = 'object'
             then order_fields.consignments else '{}'::jsonb end
    ) as kind (name, consignments)
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(kind.consignments) = 'array' then kind.consignments else '[]'::jsonb end
    ) with ordinality as consignment (value, ordinality)
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(consignment.value -> 'line_items') = 'array'
             then consignment.value -> 'line_items' else '[]'::jsonb end
    ) with ordinality as line_item (value, ordinality)
    where jsonb_typeof(line_item.value) = 'object'
{%- endmacro %}
