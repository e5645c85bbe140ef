{#- Decimal money (BigCommerce's "336.3200" strings, or JSON numbers) to integer cents.
    Goes through numeric, never float, so "0.1000" + "0.2000" is exactly 30. -#}
{% macro to_cents(expression) -%}
    (round(({{ expression }})::numeric * 100))::bigint
{%- endmacro %}
