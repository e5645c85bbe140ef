{#- Use custom schema names as they are (staging, intermediate, crm, segments) instead of
    dbt's default "<target schema>_<custom>", so the warehouse contract holds on every target. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
