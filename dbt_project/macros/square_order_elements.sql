{#- The objects of one Square order's array field (`line_items`, `discounts`; api.json Order), for a lateral join
    per order: columns element, position (1-based, as sent). A uid repeated within the order is one element (its
    first occurrence); an element without a uid keeps its position as its uid. The repeats are dropped within the
    order, not over the whole view, so a condition on the order's columns — (connection_id, order_id), loaded_at —
    still reaches the raw table's primary key or scan. -#}
{% macro square_order_elements(payload, field) -%}
    select distinct on (coalesce(element.value ->> 'uid', element.ordinality::text))
        element.value as element,
        element.ordinality as position
    from jsonb_array_elements(
        case when jsonb_typeof({{ payload }} -> '{{ field }}') = 'array'
             then {{ payload }} -> '{{ field }}' else '[]'::jsonb end
    ) with ordinality as element (value, ordinality)
    where jsonb_typeof(element.value) = 'object'
    order by coalesce(element.value ->> 'uid', element.ordinality::text), element.ordinality
{%- endmacro %}
