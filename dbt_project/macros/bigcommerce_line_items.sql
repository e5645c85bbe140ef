{#- The order products of BigCommerce orders, one row per line (include=consignments.line_items,
    consignment_structure=object: consignments.{shipping|pickups|…}[].line_items[], every consignment kind), for
    the staging models that read lines: stg_bigcommerce__order_line_items and stg_bigcommerce__order_line_discounts.
    Columns: connection_id, order_id, loaded_at (when the order was landed), currency_code (the order's
    transactional currency), consignment_kind (`shipping`, `pickups`, …), consignment_number (within its kind),
    position_in_consignment, line_item_id (the line's `id`; a line without one keeps its place as
    `<kind>.<consignment>.<position>` — consignments are numbered within their kind, so the kind keeps two such
    lines apart — and both models name it alike), line_item (the object).
    A line repeated in two consignments is one line: its first appearance in (kind, consignment, position) order.

    Each order's payload is read once, not once per line: raw_rows() decompresses it once per order, and the
    OFFSET 0 keeps the lateral subquery from being inlined, so `payload -> 'consignments'` is evaluated once per
    order. Inlined, it ran once per line item: quadratic in the number of lines (10,000 lines took minutes).
    The repeated lines are dropped within each order (a lateral DISTINCT ON), not over the whole view: every
    condition on the order's columns — (connection_id, order_id), loaded_at — then reaches the raw table's primary
    key or scan, so the incremental models and the scheduled data tests read only the orders they ask for. (Over
    the whole view, a DISTINCT ON let through only conditions on its own columns, and no semi-join.) -#}
{% macro bigcommerce_order_lines(orders) -%}
    select
        orders.connection_id,
        orders.pk as order_id,
        orders.loaded_at,
        order_fields.currency_code,
        order_lines.consignment_kind,
        order_lines.consignment_number,
        order_lines.position_in_consignment,
        order_lines.line_item_id,
        order_lines.line_item
    from ({{ raw_rows(orders) }}) as orders
    cross join lateral (  -- noqa: ST05
        select
            upper(trim(orders.payload ->> 'default_currency_code')) as currency_code,
            orders.payload -> 'consignments' as consignments
        offset 0
    ) as order_fields
    cross join lateral (  -- noqa: ST05
        select distinct on (appearance.line_item_id)
            appearance.consignment_kind,
            appearance.consignment_number,
            appearance.position_in_consignment,
            appearance.line_item_id,
            appearance.line_item
        from (
            select
                kind.name as consignment_kind,
                consignment.ordinality as consignment_number,
                line_item.ordinality as position_in_consignment,
                coalesce(
                    line_item.value ->> 'id', kind.name || '.' || consignment.ordinality || '.' || line_item.ordinality
                ) as line_item_id,
                line_item.value as line_item
            from jsonb_each(
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
        ) as appearance
        order by
            appearance.line_item_id, appearance.consignment_kind, appearance.consignment_number,
            appearance.position_in_consignment
    ) as order_lines
{%- endmacro %}
